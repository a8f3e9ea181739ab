"""`plmops evaluate`: registry and folder models on a tiny suite of real benchmarks, logged and tagged."""

from __future__ import annotations

import shutil
import subprocess
import sys

import mlflow
import pytest
import torch
import yaml

from plmops.flows.evaluate import EVAL_CONFIGS, evaluate_flow
from plmops.infra import tracking
from plmops.infra.settings import get_settings
from plmops.platform.models import PlmopsConfig, PlmopsForMaskedLM
from plmops.platform.tokenization import train_wordpiece

TINY = {"epochs": 1, "seeds": [1, 2], "max_length": 64, "batch_size": 16}
SUITE = {
    "tiny": {
        "description": "two real tasks on a few dozen examples each",
        "tasks": [
            {"task": "fewclue_tnews", "limit": {"train": 64, "dev": 32, "test": 48}, "hparams": TINY},
            {"task": "msra", "limit": {"train": 48, "dev": 24, "test": 32}, "hparams": TINY},
        ],
    }
}


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    """The shipped task files with a tiny suite beside them."""
    folder = tmp_path_factory.mktemp("eval-configs")
    for path in EVAL_CONFIGS.glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    (folder / "suites.yaml").write_text(yaml.safe_dump(SUITE), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def encoder(shared_data, tmp_path_factory):
    lines = shared_data("raw_zh_corpus/tnews_unlabeled_titles.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = train_wordpiece(lines[:3000], vocab_size=1500)
    torch.manual_seed(0)
    model = PlmopsForMaskedLM(PlmopsConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=64))
    folder = tmp_path_factory.mktemp("encoder") / "tiny-encoder"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_registered_model_and_a_folder_are_evaluated_logged_and_tagged(
    prefect_server, shared_data, config_dir, encoder
):
    settings = get_settings()
    with tracking.tracked_run("pretrain", "for-eval", settings):
        tracking.log_encoder(encoder, "eval-enc", {"objective": "wwm"})
    data_root = str(shared_data(""))
    outcome = evaluate_flow(["models:/eval-enc/1", str(encoder)], ["tiny"], data_root, str(config_dir))

    assert outcome.suite == "tiny" and [m.model for m in outcome.models] == ["eval-enc/1", "tiny-encoder"]
    registered = outcome.models[0]
    assert {r.task for r in registered.results} == {"fewclue_tnews", "msra"}
    for result in registered.results:
        assert result.seeds == [1, 2] and set(result.scores) == {1, 2}
    assert "fewclue_tnews" in registered.table and "(" in registered.table  # "max (mean)" cells
    assert "eval-enc/1" in outcome.comparison and "tiny-encoder" in outcome.comparison

    client = mlflow.MlflowClient()
    run = client.get_run(registered.mlflow_run_id)
    assert 0 <= run.data.metrics["eval/fewclue_tnews/accuracy"] <= 100
    assert "eval/msra/f1_mean" in run.data.metrics
    assert {"results.md", "results.csv", "results"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    tags = client.get_model_version("eval-enc", "1").tags
    assert "eval.fewclue_tnews.accuracy" in tags and "eval.msra.f1" in tags
    task_model = client.get_model_version("eval-enc-fewclue_tnews", "1")
    assert task_model.tags["task"] == "fewclue_tnews" and task_model.tags["parent"] == "models:/eval-enc/1"
    (prediction,) = mlflow.pyfunc.load_model("models:/eval-enc-fewclue_tnews/1").predict(["股市今天大涨"])
    assert prediction["label"] in {str(label) for label in registered.results[0].hparams.get("labels", [])} \
        or isinstance(prediction["label"], str)
    assert registered.registered["msra"] == "models:/eval-enc-msra/1"


def test_cli_errors_name_the_problem(tmp_path, config_dir, encoder):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "plmops.cli", "evaluate", *args], capture_output=True,
                              text=True, env={"PLMOPS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})

    missing = run("--model", str(tmp_path / "nothing"), "--suite", "zh-small")
    assert missing.returncode == 1 and "not a Hugging Face folder" in missing.stderr
    unknown = run("--model", str(encoder), "--suite", "no-such-suite")
    assert unknown.returncode == 2 and "neither a suite" in " ".join(unknown.stderr.split())
