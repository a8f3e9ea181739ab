"""Pretraining flow: a recipe and a corpus version in, a registered Hugging Face encoder out.

    recipe ─ corpus version (pinned) ─ tokenizer (trained once per version, reused) ─┐
                                                                                      ├ train (resumable)
    held-out slice of the same shards ───────────────────────────────────────────────┘   ↓
      evaluate MLM loss / accuracy ─ save HF folder ─ MLflow (params, curves, model) ─ register version

Where the training runs: in this process (CPU or one GPU), in `processes` local processes through
torchrun (several GPUs of one node), or as a Kubeflow `TrainJob` over `kubernetes.nodes` nodes. In the
last two the workers run `plmops pretrain` themselves (`run_pretraining`, rank 0 logs and registers),
and this flow pins the corpus version for them, waits, and reads back the result they stored.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from prefect import flow
from prefect.context import FlowRunContext
from prefect.events import emit_event
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from plmops.infra import kubernetes as k8s
from plmops.infra import tracking
from plmops.infra.settings import get_settings
from plmops.infra.storage import Storage, open_storage
from plmops.platform.models import PlmopsForPreTraining
from plmops.platform.training import Trainer, init_distributed, load_recipe
from plmops.platform.training.evaluate import evaluate_pretraining
from plmops.platform.training.recipe import PretrainRecipe
from plmops.tasks import pretrain as t

RESULT = "result.json"
RUN_ID = "mlflow_run_id"
EXPERIMENT = "pretrain"


@dataclass(frozen=True)
class PretrainResult:
    """What a finished (or preempted) run hands on; `model_uri` is the HF folder in storage."""

    run: str
    corpus: str  # name@version
    step: int
    tokens: int
    preempted: bool
    first_loss: float | None = None
    last_loss: float | None = None
    eval: dict[str, float] = field(default_factory=dict)
    model_uri: str | None = None
    tokenizer_uri: str | None = None
    mlflow_run_id: str | None = None
    registered: str | None = None  # models:/name/version

    @classmethod
    def read(cls, store: Storage) -> PretrainResult:
        return cls(**store.read_json(RESULT))


def _task(task: Any) -> Callable:
    """Inside a flow a task runs as a task (visible in the Prefect UI); in a torchrun worker, plainly."""
    return task if FlowRunContext.get() is not None else task.fn


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _tokenizer(recipe: PretrainRecipe, corpus: t.CorpusVersion, rank: int):
    """Rank 0 trains or fetches the tokenizer first; the others then find it stored."""
    if rank == 0:
        found = _task(t.prepare_tokenizer)(recipe, corpus)
        _barrier()
        return found
    _barrier()
    return t.prepare_tokenizer.fn(recipe, corpus)


class _Curve:
    """The metrics callback: MLflow per step, a progress bar, and the losses the result reports."""

    def __init__(self, progress: Progress, steps: int, log: bool) -> None:
        self.progress, self.log = progress, log
        self.bar = progress.add_task("pretrain", total=steps)
        self.first: float | None = None
        self.last: float | None = None

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        if self.first is None:
            self.first = metrics["loss"]
        self.last = metrics["loss"]
        if self.log:
            tracking.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=step)
        self.progress.update(self.bar, completed=step, description=f"pretrain loss {metrics['loss']:.3f}")


def run_pretraining(recipe: PretrainRecipe, show_progress: bool = False) -> PretrainResult:
    """Train, evaluate, save, log and register, on every rank of a torchrun job (or alone).

    Resumes from the run's `latest` checkpoint when there is one; stops early on SIGTERM after a
    checkpoint (the result says `preempted`, and starting again continues).
    """
    rank, world = init_distributed()
    corpus = _task(t.resolve_corpus)(recipe.corpus.name, recipe.corpus.version, recipe.corpus.root)
    tokenizer, tokenizer_uri, _ = _tokenizer(recipe, corpus, rank)
    name = t.run_name(recipe, corpus)
    store = t.run_storage(name)
    torch.manual_seed(recipe.train.seed)  # the same initial weights on every rank and every restart
    model = PlmopsForPreTraining(recipe.model_config(len(tokenizer)))
    train, held_out = t.streams(recipe, tokenizer, corpus, rank, world)
    settings = get_settings()
    earlier_run = store.read_bytes(RUN_ID).decode() if store.exists(RUN_ID) else None
    lead = rank == 0
    tracker = (
        tracking.tracked_run(EXPERIMENT, name, settings, tags=_tags(recipe, corpus), run_id=earlier_run)
        if lead
        else contextlib.nullcontext()  # only rank 0 talks to MLflow
    )
    with (
        tracker as run_id,
        Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 disable=not (show_progress and lead)) as progress,
    ):
        if lead:
            store.write_bytes(RUN_ID, run_id.encode())
            _log_setup(recipe, corpus, tokenizer_uri, model)
        curve = _Curve(progress, recipe.train.steps, log=lead)
        trainer = Trainer(model, train, recipe.train_config(), open_storage(store.uri_for("checkpoints")), curve)
        fit = trainer.fit(resume="auto")
        result = PretrainResult(name, f"{corpus.name}@{corpus.version}", fit.step, fit.tokens, fit.preempted,
                                curve.first, curve.last, tokenizer_uri=tokenizer_uri, mlflow_run_id=run_id)
        whole = None if fit.preempted else trainer.whole_model()  # every rank takes part under FSDP
        if lead and not fit.preempted:
            result = _finish(recipe, corpus, whole, tokenizer, held_out, store, result)
        if lead and fit.preempted:
            import mlflow

            mlflow.end_run("KILLED")  # reopened and finished by the run that resumes
    if lead:
        store.write_json(RESULT, asdict(result))
    _barrier()
    return result


def _tags(recipe: PretrainRecipe, corpus: t.CorpusVersion) -> dict[str, str]:
    return {"corpus": f"{corpus.name}@{corpus.version}", "objective": _objective(recipe)}


def _objective(recipe: PretrainRecipe) -> str:
    return "+".join(f"{k}" if w == 1.0 else f"{k}:{w:g}" for k, w in recipe.objective.items())


def _log_setup(recipe: PretrainRecipe, corpus: t.CorpusVersion, tokenizer_uri: str, model: torch.nn.Module) -> None:
    recipe_data = t.recipe_dict(recipe)
    flat = {f"{section}.{k}": v for section, values in recipe_data.items() if isinstance(values, dict)
            for k, v in values.items() if section != "objective"}
    tracking.log_params({**flat, "objective": _objective(recipe), "corpus.resolved_version": corpus.version,
                         "tokenizer.uri": tokenizer_uri,
                         "model.parameters": sum(p.numel() for p in model.parameters())})
    tracking.log_json_artifact(recipe_data, "recipe.json")
    tracking.log_dataset_input(corpus.uri, name=corpus.name, digest=corpus.version, context="pretrain")


def _finish(recipe, corpus, model, tokenizer, held_out, store: Storage, result: PretrainResult) -> PretrainResult:
    """Held-out scores, the HF folder (storage + MLflow), the loss curve, a new registry version."""
    scores = evaluate_pretraining(model, held_out)
    tracking.log_metrics({f"eval/{k}": v for k, v in scores.items()}, step=result.step)
    with tempfile.TemporaryDirectory() as tmp:
        model_uri = t.save_model(model, tokenizer, store, tmp)
        tracking.log_folder(tmp, "hf")  # plain folder too: browsable, and tokenizer files visible
        _log_curve(result.mlflow_run_id)
        tags = {"objective": _objective(recipe), "corpus": result.corpus, "steps": result.step,
                "tokens": result.tokens, **{f"eval.{k}": f"{v:.4f}" for k, v in scores.items()}}
        name = recipe.registry.model_name if recipe.registry else None
        version = tracking.log_encoder(tmp, name, tags)
    registered = f"models:/{name}/{version}" if version else None
    if version:
        announce_version(name, version, result)
    return PretrainResult(**{**asdict(result), "eval": scores, "model_uri": model_uri, "registered": registered})


MODEL_REGISTERED = "plmops.model.version.registered"


def announce_version(name: str, version: str, result: PretrainResult) -> None:
    """A Prefect event per new pretrained version: the evaluate deployment (prefect.yaml) scores it."""
    emit_event(
        event=MODEL_REGISTERED,
        resource={"prefect.resource.id": f"plmops.model.{name}", "prefect.resource.name": name},
        payload={"name": name, "version": version, "uri": f"models:/{name}/{version}", "corpus": result.corpus,
                 "steps": result.step, "mlflow_run_id": result.mlflow_run_id},
    )


def _log_curve(run_id: str) -> None:
    """Loss and learning rate against step, over every resumption of the run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss, lr = tracking.metric_history(run_id, "train/loss"), tracking.metric_history(run_id, "train/lr")
    figure, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for axis, points, label in zip(axes, (loss, lr), ("training loss", "learning rate")):
        axis.plot([step for step, _ in points], [value for _, value in points])
        axis.set_ylabel(label)
    bottom = axes[1]
    bottom.set_xlabel("step")
    tracking.log_figure(figure, "loss_curve.png")
    plt.close(figure)


def pretrain_job(recipe: PretrainRecipe, config: str, overrides: Sequence[str]) -> k8s.PretrainJob:
    """The Kubernetes placement of this recipe (its `kubernetes` section, defaults otherwise)."""
    section = recipe.kubernetes
    node = k8s.GpuJobVariables(
        image=section.image, gpus=section.gpus, node_selector=section.node_selector,
        tolerations=[k8s.Toleration(**tol.model_dump(exclude_none=True)) for tol in section.tolerations],
    ) if section else k8s.GpuJobVariables(gpus=1)
    base = recipe.registry.model_name if recipe.registry else "pretrain"
    name = "".join(c if c.isalnum() else "-" for c in base.lower()).strip("-")[:40] or "pretrain"
    return k8s.PretrainJob(name=f"{name}-{t._digest(t.recipe_dict(recipe), 8)}", config=config,
                           overrides=list(overrides), node=node, num_nodes=section.nodes if section else 1)


def dry_run(config: str, overrides: Sequence[str] = ()) -> str:
    """The manifests a cluster would get for this recipe: the work-pool Job and the TrainJob."""
    recipe = load_recipe(config, overrides)
    job = pretrain_job(recipe, config, overrides)
    return "---\n".join((k8s.render("job", job), k8s.render("trainjob", job)))


@flow(name="pretrain")
def pretrain_flow(
    config: str,
    overrides: list[str] | None = None,
    processes: int | None = None,
    show_progress: bool = False,
) -> PretrainResult:
    """Pretrain with the recipe at `config` (`--set` style `overrides`); see the module docstring.

    `processes`: local training processes (default: one per visible GPU, at least one). A recipe whose
    `kubernetes.nodes` > 1 runs as a TrainJob instead.
    """
    overrides = list(overrides or [])
    recipe = load_recipe(config, overrides)
    corpus = t.resolve_corpus(recipe.corpus.name, recipe.corpus.version, recipe.corpus.root)
    pinned = [*overrides, f"corpus.version={corpus.version}"]  # every worker trains on this version
    if recipe.kubernetes is not None and recipe.kubernetes.nodes > 1:
        return _on_trainjob(load_recipe(config, pinned), config, pinned, corpus)
    processes = processes or max(torch.cuda.device_count(), 1)
    if processes > 1:
        return _on_torchrun(load_recipe(config, pinned), config, pinned, corpus, processes)
    return run_pretraining(load_recipe(config, pinned), show_progress=show_progress)


def _on_torchrun(recipe, config: str, overrides: list[str], corpus, processes: int) -> PretrainResult:
    sets = [arg for item in overrides for arg in ("--set", item)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "plmops.cli", "pretrain", "--config", config, *sets]
    completed = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    store = t.run_storage(t.run_name(recipe, corpus))
    if completed.returncode != 0 and not store.exists(RESULT):
        raise RuntimeError(f"torchrun with {processes} processes exited {completed.returncode}")
    return PretrainResult.read(store)


def _on_trainjob(recipe, config: str, overrides: list[str], corpus, timeout: float = 7 * 24 * 3600) -> PretrainResult:
    job = pretrain_job(recipe, config, overrides)
    manifest = k8s.trainjob_manifest(job)
    k8s.validate_trainjob(manifest)
    k8s.submit_trainjob(manifest, job.namespace)
    k8s.wait_for_trainjob(job.name, job.namespace, timeout)
    return PretrainResult.read(t.run_storage(t.run_name(recipe, corpus)))
