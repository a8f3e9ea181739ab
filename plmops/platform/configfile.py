"""Config files: one way to read a YAML mapping and to report what is wrong with it."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the file and the field."""


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """The mapping a YAML file holds (empty file: {}); unreadable or non-mapping files name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of names to values")
    return data


def describe_errors(exc: ValidationError) -> str:
    """Pydantic errors as `dotted.field: message; …`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
