"""Evaluation tasks: find the model a reference names, fine-tune and score it on one benchmark, log it.

A model reference is a local folder, an MLflow run (`runs:/<id>/model`) or a registry version
(`models:/<name>/<version>` or `models:/<name>@<alias>`). Registry versions get the scores as tags.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import mlflow
from prefect import task
from prefect.cache_policies import NONE

from plmops.infra import tracking
from plmops.infra.settings import get_settings
from plmops.platform.finetune.runner import TaskResult, run_task
from plmops.platform.finetune.taskspec import TaskSpec

_REGISTRY = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


@dataclass(frozen=True)
class ModelRef:
    """A model to evaluate: its folder here, a display name, and its registry version if it has one."""

    ref: str
    folder: Path
    name: str
    registered_name: str | None = None
    version: str | None = None


def _work_dir(*parts: str) -> Path:
    path = get_settings().home.joinpath("evaluate", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@task(cache_policy=NONE)
def resolve_model(ref: str) -> ModelRef:
    """The folder behind `ref` (downloaded from MLflow when it is a run or a registry version)."""
    match = _REGISTRY.match(ref)
    if match:
        name, version = match["name"], match["version"]
        if match["alias"]:
            version = mlflow.MlflowClient().get_model_version_by_alias(name, match["alias"]).version
        folder = tracking.model_folder(f"models:/{name}/{version}", _work_dir("models", name, str(version)))
        return ModelRef(ref, folder, f"{name}/{version}", name, str(version))
    if ref.startswith("runs:/"):
        run = ref.split("/")[1]
        return ModelRef(ref, tracking.model_folder(ref, _work_dir("runs", run)), f"run-{run[:8]}")
    folder = Path(ref)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"model {ref!r}: not a Hugging Face folder (no config.json), a runs:/ URI or a models:/ URI"
        )
    generic = folder.name in ("model", "hf")  # <run>/model, as pretraining saves it: the run names it
    return ModelRef(ref, folder, folder.parent.name if generic else folder.name)


@task(cache_policy=NONE, task_run_name="finetune-{spec.name}")
def finetune(spec: TaskSpec, model: ModelRef, data_root: str, config_dir: str) -> TaskResult:
    """Fine-tune and score `model` on one task (every seed); the best seed's model is kept."""
    output = _work_dir("finetuned", model.name.replace("/", "-"), spec.name)
    return run_task(spec, model.folder, output, data_root, config_dir=config_dir, model_name=model.name)


def log_task(result: TaskResult, model: ModelRef) -> str | None:
    """Metrics `eval/<task>/<metric>` (max and mean over seeds, in points), the result as JSON, and the
    best seed's fine-tuned model, registered as `<registered name>-<task>` when the model has a name."""
    metrics = {}
    for metric in result.metric_names():
        points = result.points(metric)
        metrics[f"eval/{result.task}/{metric}"] = max(points)
        metrics[f"eval/{result.task}/{metric}_mean"] = sum(points) / len(points)
    metrics[f"eval/{result.task}/train_examples_per_s"] = result.train_examples_per_s
    metrics[f"eval/{result.task}/infer_examples_per_s"] = result.infer_examples_per_s
    if result.majority is not None:
        metrics[f"eval/{result.task}/majority_{result.main_metric}"] = (
            result.majority.scores[result.main_metric] * 100
        )
    tracking.log_metrics(metrics)
    data = result.to_dict()
    data.pop("predictions", None)
    tracking.log_json_artifact(json.loads(json.dumps(data, default=str)), f"{result.task}.json", "results")
    tags = {"task": result.task, "parent": model.ref, "seed": result.best_seed,
            **{f"eval.{result.task}.{k}": v for k, v in result.summary().items()}}
    return tracking.log_encoder(result.model_dir, task_model_name(model, result.task), tags,
                                artifact_name=f"task-{result.task}")


def task_model_name(model: ModelRef, task: str) -> str:
    """The registered model of `model` fine-tuned on `task`: `<registered name>-<task>`."""
    return f"{model.registered_name or re.sub(r'[^0-9A-Za-z_.-]+', '-', model.name)}-{task}"


def tag_version(model: ModelRef, results: list[TaskResult]) -> None:
    """`eval.<task>.<metric>` tags on the evaluated registry version: the mean over seeds, in points."""
    if model.registered_name is None:
        return
    client = mlflow.MlflowClient()
    for result in results:
        for metric in result.metric_names():
            points = result.points(metric)
            client.set_model_version_tag(model.registered_name, model.version, f"eval.{result.task}.{metric}",
                                         f"{sum(points) / len(points):.2f}")
