"""Fixtures shared by the whole suite."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports Prefect or MLflow: this test run gets its own homes, so task caches,
# databases and artifacts never leak between runs or into a developer's .plmops/.
_RUN_HOME = Path(tempfile.mkdtemp(prefix="plmops-tests-"))
os.environ["PLMOPS_HOME"] = str(_RUN_HOME / "plmops")
os.environ["PREFECT_HOME"] = str(_RUN_HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PLMOPS_STORAGE_URI", None)

pytest_plugins = ["tests.fixtures_s3"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_root() -> Path:
    return Path(os.environ.get("PLMOPS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    """Return a function mapping a sub-path of ../shared/data to a Path.

    The one door to the shared benchmark data: a test skips (never fails) only when the
    folder it needs is absent from this machine.
    """

    root = _shared_data_root()

    def get(relative: str = "") -> Path:
        path = root / relative
        if not path.exists():
            pytest.skip(f"shared data not present: {path}")
        return path

    return get


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect API server for the whole session (starting one costs 10–20 s).

    Yields its API URL, which subprocesses receive as PREFECT_API_URL.
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture()
def plmops_home(tmp_path, monkeypatch):
    """A fresh PLMOPS_HOME (store, MLflow SQLite) for one test; settings are re-read."""
    from plmops.infra.settings import get_settings

    home = tmp_path / "plmops-home"
    monkeypatch.setenv("PLMOPS_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture()
def mlflow_registry(monkeypatch):
    """Point MLflow's model registry at a database for one test, restored afterwards.

    `mlflow.set_registry_uri` exports MLFLOW_REGISTRY_URI, which every later subprocess would inherit
    (and register its models in that database); this sets the same two things through monkeypatch.
    """
    from mlflow.tracking._model_registry import utils

    def use(uri: str) -> None:
        monkeypatch.setattr(utils, "_registry_uri", uri)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)

    return use
