"""MLflow adapter: every pipeline run is an MLflow run in its stage's experiment.

Kept thin on purpose: flows call these few functions, so the choice of tracking backend (SQLite
embedded, or an MLflow server in production) lives in settings alone.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from plmops.infra.settings import Settings

_MAX_PARAM_CHARS = 6000  # MLflow rejects longer parameter values


def _experiment_id(name: str, settings: Settings) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # Embedded MLflow would put artifacts under ./mlruns of whatever folder a user stands in;
    # pin them beside the tracking database instead. A server chooses its own artifact root.
    artifact_location = settings.mlflow_artifact_root if not settings.mlflow_tracking_uri else None
    return mlflow.create_experiment(name, artifact_location=artifact_location)


@contextmanager
def tracked_run(
    experiment: str,
    run_name: str,
    settings: Settings,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
) -> Iterator[str]:
    """Open an MLflow run in `experiment` (or reopen `run_id`: a resumed job continues its own run);
    yields the run id. A failure marks the run FAILED."""
    mlflow.set_tracking_uri(settings.effective_mlflow_uri)
    if run_id is not None:
        with mlflow.start_run(run_id=run_id) as run:
            yield run.info.run_id
        return
    experiment_id = _experiment_id(experiment, settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {})) as run:
        yield run.info.run_id


def log_params(params: Mapping[str, Any]) -> None:
    """Log flat parameters; lists and dicts become JSON, long values are cut to MLflow's limit."""
    flat = {}
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        flat[key] = text[:_MAX_PARAM_CHARS]
    mlflow.log_params(flat)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics; MLflow metric names allow '/', '.', '_', '-' and alphanumerics."""
    mlflow.log_metrics({_metric_name(k): float(v) for k, v in metrics.items()}, step=step)


def _metric_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "/._- " else "_" for c in key)


def log_json_artifact(data: Any, file_name: str, artifact_path: str | None = None) -> None:
    """Store a JSON document as a run artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False), encoding="utf-8")
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_dataset_input(uri: str, name: str, digest: str, context: str) -> None:
    """Record a corpus version as an MLflow dataset input of the active run (lineage in the UI)."""
    with warnings.catch_warnings():  # a local path matches two equivalent local source types
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(uri)
    mlflow.log_input(MetaDataset(source=source, name=name, digest=digest[:36]), context=context)


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of a metric over the whole run, resumptions included, in step order."""
    history = mlflow.MlflowClient().get_metric_history(run_id, _metric_name(key))
    return sorted((m.step, m.value) for m in history)


def log_text(text: str, file_name: str) -> None:
    mlflow.log_text(text, file_name)


def log_folder(folder: str | Path, artifact_path: str) -> None:
    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


def log_figure(figure: Any, file_name: str) -> None:
    """A matplotlib figure as a PNG artifact (shown inline in the MLflow UI)."""
    mlflow.log_figure(figure, file_name)


def log_encoder(
    folder: str | Path, registered_name: str | None, tags: Mapping[str, Any], artifact_name: str = "model"
) -> str | None:
    """Log a Hugging Face folder as the run's model `artifact_name` (a pyfunc from code: nothing pickled)
    and, with a name, register it as a new version of that model with `tags`. Returns the version, or None."""
    code = Path(__file__).with_name("pyfunc_encoder.py")
    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp) / "hf"  # MLflow keeps the folder's own name inside the model's artifacts
        shutil.copytree(folder, hf)
        info = mlflow.pyfunc.log_model(
            name=artifact_name,
            python_model=str(code),
            artifacts={"hf": str(hf)},
            pip_requirements=_requirements(),
            registered_model_name=registered_name,
        )
    version = info.registered_model_version
    if registered_name is None or version is None:
        return None
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, str(version), key, str(value))
    return str(version)


def _requirements() -> list[str]:
    """What loading the pyfunc needs; given explicitly, since inferring them re-imports the model (slow)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "transformers", "tokenizers", "safetensors", "mlflow")]


def model_folder(model_uri: str, destination: str | Path) -> Path:
    """The Hugging Face folder of a logged or registered encoder (`runs:/…/model`, `models:/name/3`,
    `models:/name@champion`), downloaded under `destination`."""
    try:
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri.rstrip('/')}/artifacts/hf",
                                                       dst_path=str(destination)))
    except mlflow.exceptions.MlflowException as exc:
        raise FileNotFoundError(f"{model_uri}: no Hugging Face folder in its 'hf' artifact ({exc.message})") from exc
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{model_uri}: no Hugging Face folder (config.json) in its 'hf' artifact")
    return path
