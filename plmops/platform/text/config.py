"""Ingestion configuration: one validated object, loadable from YAML, part of the corpus version id."""

from __future__ import annotations

from pathlib import Path
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from plmops.platform.configfile import ConfigError, describe_errors, read_yaml_mapping
from plmops.platform.text.readers import FORMATS

# Fields that change how fast a version is built but never its content: left out of the version id.
EXECUTION_FIELDS = frozenset({"workers", "chunk_records"})


class IngestConfig(BaseModel):
    """How raw text becomes a corpus version. Every field that shapes the output enters the version id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = Field("auto", description=f"auto or one of {', '.join(FORMATS)}")
    text_field: str = Field(
        "auto", min_length=1, description="JSONL/Parquet/CLUE field(s) holding the text; auto picks per format"
    )
    paragraph_mode: bool = Field(False, description="plain text: blank-line separated documents")
    max_record_bytes: int = Field(1_000_000, gt=0, description="longer raw records are quarantined")
    to_simplified: bool = Field(False, description="convert traditional to simplified Chinese (OpenCC t2s)")
    min_chars: int = Field(2, ge=0, description="shorter documents are dropped (counted)")
    max_chars: int = Field(200_000, gt=0, description="longer documents are dropped (counted)")
    languages: list[str] | None = Field(None, description="keep only these languages; None keeps all")
    dedup_exact: bool = True
    dedup_near: bool = True
    near_threshold: float = Field(0.8, gt=0.0, le=1.0, description="MinHash Jaccard threshold")
    shingle_size: int = Field(5, ge=1, le=32)
    num_perm: int = Field(128, ge=16, le=1024)
    dedup_against_previous: bool = Field(True, description="also drop documents seen in earlier versions")
    shard_target_bytes: int = Field(64 * 2**20, ge=4096, description="in-memory Arrow bytes per output shard")
    workers: int = Field(2, ge=1, le=256, description="segmentation worker processes")
    chunk_records: int = Field(20_000, ge=100, description="records per resumable processing chunk")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value != "auto" and value not in FORMATS:
            raise ValueError(f"unknown format {value!r}; allowed: auto, {', '.join(FORMATS)}")
        return value

    @model_validator(mode="after")
    def _check_ranges(self) -> IngestConfig:
        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})")
        return self

    def identity(self) -> dict:
        """The fields that determine a version's content (hashed into its id)."""
        return self.model_dump(exclude=set(EXECUTION_FIELDS))

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: object) -> IngestConfig:
        """Load a YAML file; errors name the file and each offending field with the allowed values."""
        data = read_yaml_mapping(path)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.validated(data, origin=str(path))

    @classmethod
    def validated(cls, data: dict, origin: str = "config") -> IngestConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{origin}: {describe_errors(exc)}") from exc
