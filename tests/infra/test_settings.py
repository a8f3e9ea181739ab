"""Settings: embedded defaults, environment over YAML, clear errors, no secrets shown."""

from __future__ import annotations

import pytest

from plmops.infra.settings import Settings, SettingsError, get_settings


@pytest.fixture()
def clean_env(monkeypatch, tmp_path):
    for var in ("PLMOPS_STORAGE_URI", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "PLMOPS_SETTINGS_FILE", "PLMOPS_WORKERS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PLMOPS_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_embedded_defaults_live_under_home(clean_env):
    s = get_settings()
    home = clean_env / "home"
    assert s.home == home
    assert s.effective_storage_uri == str(home / "store")
    assert s.effective_mlflow_uri == f"sqlite:///{home / 'mlflow.db'}"
    assert s.describe()["prefect api"].startswith("ephemeral")


def test_environment_beats_yaml_file(clean_env, monkeypatch):
    (clean_env / "plmops.yaml").write_text("storage_uri: s3://from-yaml/x\nworkers: 3\n")
    monkeypatch.setenv("PLMOPS_STORAGE_URI", "s3://from-env/y")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    s = get_settings()
    assert s.storage_uri == "s3://from-env/y"
    assert s.workers == 3
    assert s.effective_mlflow_uri == "http://mlflow:5000"


def test_invalid_settings_name_the_field(clean_env, monkeypatch):
    monkeypatch.setenv("PLMOPS_WORKERS", "zero")
    with pytest.raises(SettingsError, match="workers"):
        get_settings()


def test_unknown_yaml_key_is_an_error(clean_env, monkeypatch):
    path = clean_env / "custom.yaml"
    path.write_text("storag_uri: /tmp/typo\n")
    monkeypatch.setenv("PLMOPS_SETTINGS_FILE", str(path))
    with pytest.raises(SettingsError, match="storag_uri"):
        get_settings()


def test_describe_hides_secrets(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-key")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:hunter2@mlflow.example")
    text = repr(Settings().describe())
    assert "very-secret-key" not in text and "hunter2" not in text
    assert "alice:***@mlflow.example" in text
