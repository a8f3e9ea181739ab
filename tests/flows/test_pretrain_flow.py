"""`plmops pretrain` end to end: a real corpus version, the CLI in subprocesses, MLflow on SQLite,
checkpoints on the loopback S3 server, SIGTERM and SIGKILL mid-run, two torchrun processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from plmops.flows.ingest import ingest_flow
from plmops.infra import kubernetes as k8s
from plmops.infra.storage import open_storage
from plmops.platform.text.config import IngestConfig
from tests.flows import pretrain_cli as cli

RECIPE = {
    "corpus": {"name": "small"},
    "tokenizer": {"vocab_size": 2000, "min_frequency": 2},
    "model": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
              "max_position_embeddings": 64},
    "objective": "wwm",
    "data": {"max_len": 64, "batch_size": 8, "shuffle_buffer": 300, "chunk_rows": 128},
    "train": {"steps": 40, "lr": 2.0e-3, "warmup_steps": 4, "checkpoint_every": 10, "keep_last": 2,
              "log_every": 1},
    "eval": {"rows": 120},
    "registry": {"model_name": "test-tiny"},
}


@pytest.fixture(scope="module")
def corpus(prefect_server, shared_data, tmp_path_factory) -> Path:
    """A two-language corpus version (Chinese titles, Uyghur sentences) in a local corpora root."""
    raw = tmp_path_factory.mktemp("raw")
    titles = shared_data("raw_zh_corpus/tnews_unlabeled_titles.txt").read_text(encoding="utf-8").splitlines()
    uyghur = shared_data("minority/ud_uyghur/ug_udt-ud-train.sentences.txt").read_text(encoding="utf-8")
    (raw / "titles.txt").write_text("\n".join(titles[:3000]) + "\n", encoding="utf-8")
    (raw / "ug.txt").write_text("\n".join(uyghur.splitlines()[:800]) + "\n", encoding="utf-8")
    root = tmp_path_factory.mktemp("corpora")
    ingest_flow([str(raw / "titles.txt"), str(raw / "ug.txt")], "small", output=str(root),
                config=IngestConfig(workers=1))
    return root


def _losses(home: Path, experiment: str = "pretrain") -> dict[int, float]:
    """The run's training loss per step; a step logged twice (before a SIGKILL and after) keeps the last."""
    client = cli.client(home)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.timestamp)
    return {m.step: m.value for m in history}


def test_pretrain_trains_evaluates_saves_logs_and_registers(prefect_server, corpus, tmp_path, mlflow_registry):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    import plmops.platform.models  # noqa: F401  (registers the plmops Auto classes)

    home = tmp_path / "home"
    recipe = cli.write_recipe(RECIPE, tmp_path, corpus, train={"steps": 60})
    output = cli.run(recipe, cli.cli_env(prefect_server, home))
    assert "registered: models:/test-tiny/1" in output

    losses = _losses(home)
    assert sorted(losses) == list(range(1, 61))
    # Batches alternate languages, so single steps are noisy: compare the mean of the last ten.
    assert sum(list(losses.values())[-10:]) / 10 < losses[1] - 1.0, losses

    folder = next((home / "store" / "pretrain").glob("test-tiny-*/model"))
    model, tokenizer = AutoModelForMaskedLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert model.config.num_hidden_layers == 2 and len(tokenizer) == model.config.vocab_size

    client = cli.client(home)
    version = client.get_model_version("test-tiny", "1")
    assert version.tags["objective"] == "wwm" and version.tags["steps"] == "60"
    assert version.tags["corpus"].startswith("small@") and int(version.tags["tokens"]) > 60 * 8 * 20
    assert 0 < float(version.tags["eval.mlm_accuracy"]) < 1
    run = client.get_run(version.run_id)
    assert run.data.metrics["eval/mlm_loss"] < losses[1]
    assert {"tokens_per_s", "lr", "grad_norm", "tokens"} <= {k.split("/")[1] for k in run.data.metrics}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"loss_curve.png", "recipe.json", "hf"} <= artifacts
    mlflow_registry(f"sqlite:///{home / 'mlflow.db'}")
    predictions = mlflow.pyfunc.load_model("models:/test-tiny/1").predict(["今天[MASK]气很好"])
    assert len(predictions[0]["predictions"][0]) == 5

    # Same corpus, another recipe: the tokenizer trained for this corpus version is reused.
    again = cli.write_recipe(RECIPE, tmp_path, corpus, train={"steps": 5, "warmup_steps": 1})
    cli.run(again, cli.cli_env(prefect_server, home))
    assert len(list((home / "store" / "tokenizers").rglob("tokenizer_config.json"))) == 1
    assert client.get_model_version("test-tiny", "2").tags["steps"] == "5"


def _wait_for_checkpoint(store, proc: subprocess.Popen, step: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists("latest") and int(store.read_bytes("latest").decode().split("-")[1]) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step {step} before the run ended: {proc.communicate()[0]}")


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_killed_run_resumes_from_s3_and_repeats_the_uninterrupted_losses(
    kill, prefect_server, corpus, s3_bucket, tmp_path
):
    tokenizer_dir = tmp_path / "tokenizer"  # one fixed tokenizer: training one is not bit-reproducible
    from plmops.platform.tokenization import train_wordpiece
    from plmops.tasks.pretrain import CorpusVersion, corpus_texts, resolve_corpus

    version: CorpusVersion = resolve_corpus.fn("small", root=str(corpus))
    train_wordpiece(corpus_texts(version), vocab_size=2000).save_pretrained(tokenizer_dir)
    recipe = cli.write_recipe(RECIPE, tmp_path, corpus, tokenizer={"path": str(tokenizer_dir)})
    recipe.write_text(recipe.read_text().replace("  min_frequency: 2\n", "").replace("  vocab_size: 2000\n", ""))

    reference_home = tmp_path / "reference"
    cli.run(recipe, cli.cli_env(prefect_server, reference_home, PLMOPS_STORAGE_URI=f"{s3_bucket}/reference"))
    expected = _losses(reference_home)

    home = tmp_path / "killed"
    env = cli.cli_env(prefect_server, home, PLMOPS_STORAGE_URI=f"{s3_bucket}/killed")
    proc = cli.start(recipe, env)
    runs = open_storage(f"{s3_bucket}/killed/pretrain")
    while not runs.list():
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    run = runs.list()[0].split("/")[0]
    _wait_for_checkpoint(open_storage(f"{s3_bucket}/killed/pretrain/{run}/checkpoints"), proc, 10)
    proc.send_signal(kill)
    output, _ = proc.communicate(timeout=300)
    if kill == signal.SIGTERM:
        assert proc.returncode == 143, output
        assert "preempted at step" in output
    else:
        assert proc.returncode == -signal.SIGKILL
    stopped = open_storage(f"{s3_bucket}/killed/pretrain/{run}/checkpoints").read_bytes("latest").decode()
    assert stopped != "step-000040"

    output = cli.run(recipe, env)
    assert "registered: models:/test-tiny/1" in output  # the resumed run finishes the same MLflow run
    assert _losses(home) == expected


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_torchrun_processes_train_and_register(parallel, prefect_server, corpus, tmp_path):
    home = tmp_path / "home"
    recipe = cli.write_recipe(RECIPE, tmp_path, corpus, train={"steps": 20, "parallel": parallel})
    output = cli.run(recipe, cli.cli_env(prefect_server, home), "--processes", "2")
    assert "registered: models:/test-tiny/1" in output
    losses = _losses(home)
    assert sorted(losses) == list(range(1, 21)) and losses[20] < losses[1]
    client = cli.client(home)
    (run,) = client.search_runs([client.get_experiment_by_name("pretrain").experiment_id])
    ranks = open_storage(str(next((home / "store" / "pretrain").glob("test-tiny-*")) / "checkpoints"))
    assert ranks.exists("step-000020/ranks.pt")
    # Both ranks' rows were trained on: about two batches of tokens per step.
    assert run.data.metrics["train/tokens"] > 20 * 2 * 8 * 20


def test_dry_run_prints_manifests_that_validate_strictly(tmp_path, corpus):
    recipe = cli.write_recipe(RECIPE, tmp_path, corpus, kubernetes={"gpus": 4, "nodes": 2, "node_selector": {"gpu": "h100"}})
    result = subprocess.run([sys.executable, "-m", "plmops.cli", "pretrain", "--config", str(recipe),
                             "--set", "train.steps=1000", "--dry-run"],
                            capture_output=True, text=True, env={**os.environ, "PLMOPS_HOME": str(tmp_path / "h")})
    assert result.returncode == 0, result.stderr
    job, trainjob = yaml.safe_load_all(result.stdout)
    k8s.validate_job(job)
    k8s.validate_trainjob(trainjob)
    assert trainjob["spec"]["trainer"]["numNodes"] == 2
    assert trainjob["spec"]["trainer"]["command"][-2:] == ["--set", "train.steps=1000"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"][k8s.GPU_RESOURCE] in (4, "4")
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "h100"}


@pytest.mark.parametrize(
    ("sets", "code", "message"),
    [
        (["train.lr=-1"], 2, "train.lr"),
        (["data.languages=[xx]"], 1, "data.languages: ['xx'] not in corpus small@"),
        (["corpus.name=nothing-here"], 1, "run `plmops ingest --name nothing-here"),
    ],
    ids=["invalid-field", "unknown-language", "no-corpus"],
)
def test_errors_exit_with_a_message_naming_the_problem(prefect_server, corpus, tmp_path, sets, code, message):
    recipe = cli.write_recipe(RECIPE, tmp_path, corpus)
    args = [arg for item in sets for arg in ("--set", item)]
    output = cli.run(recipe, cli.cli_env(prefect_server, tmp_path / "home"), *args, expect=code)
    assert message in " ".join(output.split())
