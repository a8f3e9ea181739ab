"""Helpers for tests that run the real `plmops pretrain` in a subprocess: a recipe file from a base
mapping, an environment whose MLflow database and storage live under one home, the run itself."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import mlflow
import yaml


def write_recipe(base: Mapping, folder: Path, corpus: Path, **sections) -> Path:
    """`base` with the corpus root set and `sections` merged over it (a mapping per section, or a value)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    data["corpus"] = {**data["corpus"], "root": str(corpus)}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def cli_env(prefect_server: str, home: Path, **extra: str) -> dict[str, str]:
    """No MLFLOW_* from the test process (mlflow.set_tracking_uri/set_registry_uri export them), so the
    run's MLflow database and storage live under `home` unless `extra` says otherwise."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PLMOPS_STORAGE_URI"}
    return {**inherited, "PREFECT_API_URL": prefect_server, "PLMOPS_HOME": str(home), "OMP_NUM_THREADS": "1",
            **extra}


def start(recipe: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "plmops.cli", "pretrain", "--config", str(recipe), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run(recipe: Path, env: dict, *args: str, expect: int = 0) -> str:
    proc = start(recipe, env, *args)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == expect, output
    return output


def client(home: Path) -> mlflow.MlflowClient:
    uri = f"sqlite:///{home / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
