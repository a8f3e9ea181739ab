"""`plmops pretrain` end to end for the objectives with their own batch streams: whole-word masking and
MacBERT correction with sentence-order prediction, and CINO's fast MLM (one language per batch, the MLM
head restricted to that language's ids). The real CLI in a subprocess, a tiny model, a few steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from plmops.flows.ingest import ingest_flow
from plmops.platform.text.config import IngestConfig
from tests.flows import pretrain_cli as cli

STEPS = 30
RECIPE = {
    "corpus": {"name": "mixed"},
    "tokenizer": {"vocab_size": 2000, "min_frequency": 2},
    "model": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
              "max_position_embeddings": 64},
    "data": {"max_len": 64, "batch_size": 8, "shuffle_buffer": 300, "chunk_rows": 64},
    "train": {"steps": STEPS, "lr": 2.0e-3, "warmup_steps": 3, "checkpoint_every": 100, "log_every": 1},
    "eval": {"rows": 120},
    "registry": {"model_name": "test-objective"},
}


@pytest.fixture(scope="module")
def corpus(prefect_server, shared_data, tmp_path_factory) -> Path:
    """Chinese news titles and Wikipedia paragraphs (several sentences each), and Uyghur sentences."""
    raw = tmp_path_factory.mktemp("raw")
    folder = shared_data("raw_zh_corpus")
    titles = (folder / "tnews_unlabeled_titles.txt").read_text(encoding="utf-8").splitlines()[:1500]
    paragraphs = (folder / "cmrc2018_dev_trial_contexts.txt").read_text(encoding="utf-8").splitlines()[:150]
    uyghur = shared_data("minority/ud_uyghur/ug_udt-ud-train.sentences.txt").read_text(encoding="utf-8")
    (raw / "zh.txt").write_text("\n".join(titles + paragraphs) + "\n", encoding="utf-8")
    (raw / "ug.txt").write_text("\n".join(uyghur.splitlines()[:600]) + "\n", encoding="utf-8")
    root = tmp_path_factory.mktemp("corpora")
    ingest_flow([str(raw / "zh.txt"), str(raw / "ug.txt")], "mixed", output=str(root),
                config=IngestConfig(workers=1))
    return root


def _losses(home: Path) -> tuple[dict[int, float], dict[str, float]]:
    """The run's training loss per step, and its final metrics."""
    client = cli.client(home)
    (run,) = client.search_runs([client.get_experiment_by_name("pretrain").experiment_id])
    history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.timestamp)
    return {m.step: m.value for m in history}, run.data.metrics


def _trains_and_registers(recipe: Path, prefect_server: str, home: Path, objective: str) -> tuple[dict, dict]:
    """Runs the CLI; (training loss per step, final metrics) of the registered run."""
    output = cli.run(recipe, cli.cli_env(prefect_server, home))
    assert "registered: models:/test-objective/1" in output
    losses, metrics = _losses(home)
    assert sorted(losses) == list(range(1, STEPS + 1))
    version = cli.client(home).get_model_version("test-objective", "1")
    assert version.tags["objective"] == objective and version.tags["steps"] == str(STEPS)
    return losses, metrics


@pytest.mark.parametrize("masking", ["wwm", "mac"], ids=["wwm+sop", "mac+sop"])
def test_masking_with_sentence_order_trains_both_heads(prefect_server, corpus, shared_data, tmp_path, masking):
    sections = {"objective": {masking: 1.0, "sop": 1.0}, "data": {"packing": False}}
    if masking == "mac":
        sections["similar_words"] = {"source": "cilin", "path": str(shared_data("cilin/cilin_ex.txt"))}
    recipe = cli.write_recipe(RECIPE, tmp_path, corpus, **sections)
    losses, metrics = _trains_and_registers(recipe, prefect_server, tmp_path / "home", f"{masking}+sop")
    assert sum(list(losses.values())[-5:]) / 5 < losses[1] - 1.0, losses  # well below where it began
    assert metrics["eval/sop_predictions"] > 50 and 0 <= metrics["eval/sop_accuracy"] <= 1
    assert 0 < metrics["eval/sop_loss"] < 2 and metrics["eval/mlm_predictions"] > 100


def test_fast_mlm_trains_one_language_per_batch_on_its_own_ids(prefect_server, corpus, tmp_path):
    from transformers import AutoTokenizer

    from plmops.platform.training import load_recipe
    from plmops.platform.training.data import LanguageDraws
    from plmops.tasks.pretrain import language_mix, resolve_corpus

    home = tmp_path / "home"
    mix = {"languages": ["zh", "ug"], "sampling_alpha": 0.5}
    # each language trains on only part of the steps: a higher rate shows its fall within STEPS
    recipe = cli.write_recipe(RECIPE, tmp_path, corpus, objective="fast_mlm", data=mix, train={"lr": 3.0e-3})
    losses, metrics = _trains_and_registers(recipe, prefect_server, home, "fast_mlm")
    assert metrics["eval/mlm_predictions"] > 100  # held out: scored over the whole vocabulary
    (run,) = (home / "store" / "pretrain").glob("test-objective-*")
    (cached,) = run.glob("vocab_subsets/*.json")
    subsets = json.loads(cached.read_text())
    vocab = len(AutoTokenizer.from_pretrained(run / "model"))
    assert set(subsets) == {"zh", "ug"} and len(subsets["ug"]) < len(subsets["zh"]) < vocab
    assert all(ids == sorted(set(ids)) for ids in subsets.values())
    # Step s trained on the language of draw s: its loss starts near ln(size of that language's subset),
    # the uniform guess over the ids the head scores (Uyghur's are far fewer), and falls per language.
    probs = language_mix(load_recipe(recipe), resolve_corpus.fn("mixed", root=str(corpus)))
    steps = dict(zip(range(1, STEPS + 1), LanguageDraws(probs, seed=0)))
    for lang in ("zh", "ug"):
        curve = [losses[s] for s in sorted(losses) if steps[s] == lang]
        assert len(curve) >= 5 and abs(curve[0] - math.log(len(subsets[lang]))) < 1.0, (lang, curve)
        assert sum(curve[-3:]) / 3 < curve[0] - 0.5, (lang, curve)
