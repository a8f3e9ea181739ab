"""One typed settings object for every plmops command.

Sources, strongest first: environment variables (`PLMOPS_…`, plus the standard `MLFLOW_TRACKING_URI`,
`PREFECT_API_URL` and AWS variables), an optional YAML file (`PLMOPS_SETTINGS_FILE`, else `./plmops.yaml`
when present), then embedded defaults that need no server at all: a local store under `.plmops/store`,
MLflow on SQLite under `.plmops/`, and Prefect's ephemeral API with its home under `.plmops/prefect`.
The same code runs in production by pointing the URIs at S3, an MLflow server and a Prefect server.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from plmops.platform.configfile import ConfigError, describe_errors, read_yaml_mapping

SETTINGS_FILE_ENV = "PLMOPS_SETTINGS_FILE"
DEFAULT_SETTINGS_FILE = Path("plmops.yaml")


class SettingsError(ValueError):
    """Raised when settings cannot be read; the message names the file and field."""


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the optional YAML settings file; a missing default file is simply absent."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None):
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        raise NotImplementedError("values are returned whole by __call__")

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            return read_yaml_mapping(self.path, "settings")
        except ConfigError as exc:
            raise SettingsError(str(exc)) from exc


def _settings_file() -> Path | None:
    explicit = os.environ.get(SETTINGS_FILE_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SettingsError(f"{SETTINGS_FILE_ENV}={explicit}: no such file")
        return path
    return DEFAULT_SETTINGS_FILE if DEFAULT_SETTINGS_FILE.is_file() else None


class Settings(BaseSettings):
    """Effective configuration; empty strings mean "use the embedded default derived from `home`"."""

    model_config = SettingsConfigDict(env_prefix="PLMOPS_", extra="forbid", validate_default=True)

    home: Path = Field(Path(".plmops"), description="working folder for embedded defaults")
    storage_uri: str = Field("", description="root of corpora, checkpoints and models (path or s3://)")
    mlflow_tracking_uri: str = Field(
        "", validation_alias=AliasChoices("PLMOPS_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI", "mlflow_tracking_uri")
    )
    prefect_api_url: str = Field(
        "", validation_alias=AliasChoices("PLMOPS_PREFECT_API_URL", "PREFECT_API_URL", "prefect_api_url")
    )
    s3_endpoint_url: str = Field(
        "",
        validation_alias=AliasChoices(
            "PLMOPS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "s3_endpoint_url"
        ),
    )
    aws_region: str = Field(
        "us-east-1", validation_alias=AliasChoices("PLMOPS_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "aws_region")
    )
    workers: int = Field(2, ge=1, description="worker processes for CPU-bound stages")

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _YamlSource(settings_cls, _settings_file()))

    # Derived locations: one place computes every default so `plmops info` and the code agree.
    @property
    def effective_storage_uri(self) -> str:
        return self.storage_uri or str(self.home / "store")

    @property
    def effective_mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str:
        """Where new experiments keep artifacts when MLflow runs embedded (a server decides its own)."""
        return (self.home / "mlartifacts").as_uri()

    @property
    def prefect_home(self) -> Path:
        return Path(os.environ.get("PREFECT_HOME") or self.home / "prefect")

    def describe(self) -> dict[str, str]:
        """What `plmops info` prints: locations and modes, never credentials."""
        return {
            "home": str(self.home),
            "storage": self.effective_storage_uri,
            "s3 endpoint": self.s3_endpoint_url or "(AWS default)",
            "aws region": self.aws_region,
            "aws credentials": "set" if os.environ.get("AWS_ACCESS_KEY_ID") else "(default chain)",
            "mlflow tracking": _redact(self.effective_mlflow_uri),
            "prefect api": self.prefect_api_url or f"ephemeral (PREFECT_HOME={self.prefect_home})",
            "workers": str(self.workers),
        }


def _redact(uri: str) -> str:
    """Hide a password embedded in a URI (`http://user:secret@host`)."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return uri


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process; call `get_settings.cache_clear()` after changing the environment."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(f"invalid plmops settings: {describe_errors(exc)}") from exc


def apply_environment(settings: Settings) -> None:
    """Export what Prefect and MLflow read from the environment, before either is used.

    Prefect reads `PREFECT_HOME` when it first loads its settings, so this runs before any flow starts.
    Values already present in the environment win: an operator's explicit choice is never overridden.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The embedded API starts in 10–20 s on an idle 2-core laptop; Prefect gives up after 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if settings.prefect_api_url:
        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.effective_mlflow_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per tiny artifact folder
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers: a bar per checkpoint write
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # a weights report per new task head
