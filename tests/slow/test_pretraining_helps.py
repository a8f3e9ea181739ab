"""Issue 5's longer CPU check: a longer-pretrained tiny encoder beats the majority class on TNEWS and
OCNLI and the same encoder without pretraining on CMRC 2018. About 45 minutes on 2 cores:
`make test-slow`. The numbers of the last run are in the closing note and docs/evaluation.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

STEPS = 6000


def _plmops(*args: str, env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "plmops.cli", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_pretraining_beats_majority_and_random_init(shared_data, tmp_path):
    from plmops.flows.pipeline import DEMO_RECIPE, DEMO_SOURCES
    from plmops.platform.models import PlmopsForMaskedLM
    from transformers import AutoConfig, AutoTokenizer

    root = shared_data("")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_API"))},
           "PLMOPS_HOME": str(tmp_path / "home")}
    _plmops("ingest", *[str(p) for pattern in DEMO_SOURCES for p in sorted(root.glob(pattern))],
            "--name", "demo", env=env)
    _plmops("pretrain", "--config", str(DEMO_RECIPE), "--set", f"train.steps={STEPS}",
            "--set", "train.checkpoint_every=2000", "--set", "train.warmup_steps=300", env=env)
    pretrained = next((tmp_path / "home" / "store" / "pretrain").glob("plmops-tiny-wwm-*/model"))
    random_init = tmp_path / "random-init"
    torch.manual_seed(0)
    PlmopsForMaskedLM(AutoConfig.from_pretrained(pretrained)).save_pretrained(random_init)
    AutoTokenizer.from_pretrained(pretrained).save_pretrained(random_init)

    from plmops.flows.evaluate import evaluate_flow

    outcome = evaluate_flow([str(pretrained), str(random_init)], ["cpu-quality"], str(root))
    scores = {m.model: {r.task: r for r in m.results} for m in outcome.models}
    ours, baseline = scores[pretrained.parent.name], scores["random-init"]
    summary = {model: {task: r.summary() for task, r in results.items()} for model, results in scores.items()}
    summary["majority"] = {t: ours[t].majority.scores for t in ("tnews", "ocnli")}
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    print(outcome.comparison)
    for task in ("tnews", "ocnli"):
        assert ours[task].points("accuracy")[0] > 100 * ours[task].majority.scores["accuracy"] + 5, task
    # Last run (6,000 steps, 2 x 128): CMRC F1 9.5 vs 8.1 without pretraining (EM 1.6 vs 1.8) - above, but
    # not by much; TNEWS 33.1 vs majority 10.1, OCNLI 45.9 vs 37.4. A larger encoder is the next step.
    assert ours["cmrc2018"].points("f1")[0] > baseline["cmrc2018"].points("f1")[0] + 1
