"""Pretraining recipes: one validated YAML file says everything a pretraining run needs.

    recipe = load_recipe("configs/pretrain/tiny-wwm.yaml", ["train.steps=100", "objective=pert"])
    model = PlmopsForPreTraining(recipe.model_config(len(tokenizer)))
    stream = TrainingStream.from_shards(shards, tokenizer, recipe.batch_config(), recipe.stream_config())
    Trainer(model, stream, recipe.train_config(), storage=...).fit()

A recipe is data, not code: sections of plain fields, checked when loaded so a typo or an impossible
combination fails before a GPU is booked, with the dotted path of the field and, for a misspelt key, the
closest valid one. See docs/recipes.md for every field.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from plmops.platform.models.configuration_plmops import PlmopsConfig
from plmops.platform.pretraining.batching import BatchConfig
from plmops.platform.configfile import ConfigError, read_yaml_mapping
from plmops.platform.training.data import StreamConfig
from plmops.platform.training.trainer import TrainConfig

# What a batch is corrupted with. fast_mlm is CINO's: MLM masking, with the head scoring only the ids
# each language group's corpus uses (needs data.languages).
MASKINGS = ("mlm", "wwm", "ngram", "mac", "pert", "fast_mlm")
# Maskings that a sentence-order loss may join (PERT and CINO were trained without one).
SOP_PARTNERS = ("mlm", "wwm", "ngram", "mac")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusSection(Section):
    """Which corpus version to train on: `version` is an id, or "latest" to resolve at run time."""

    name: str = Field(min_length=1)
    version: str = Field("latest", min_length=1)
    root: str | None = Field(None, description="storage URI of the corpus store; None: the platform default")


class TokenizerSection(Section):
    """Train a WordPiece vocabulary on the corpus, reuse the one trained for it, or load a folder."""

    vocab_size: int = Field(21128, ge=16)
    min_frequency: int = Field(2, ge=1)
    reuse: bool = Field(True, description="reuse a tokenizer already trained on this corpus version")
    path: str | None = Field(
        None, min_length=1, description="an existing tokenizer folder; then nothing is trained"
    )

    @model_validator(mode="after")
    def _path_excludes_training(self) -> TokenizerSection:
        trained = {"vocab_size", "min_frequency"} & self.model_fields_set
        if self.path is not None and trained:
            raise ValueError(f"path loads a finished tokenizer, so {', '.join(sorted(trained))} cannot apply")
        return self


class ModelSection(Section):
    """Encoder shape (PlmopsConfig fields). The head flags default to what the objective needs."""

    hidden_size: int = Field(768, gt=0)
    num_hidden_layers: int = Field(12, gt=0)
    num_attention_heads: int = Field(12, gt=0)
    intermediate_size: int = Field(3072, gt=0)
    max_position_embeddings: int = Field(512, gt=0)
    hidden_dropout_prob: float = Field(0.1, ge=0.0, lt=1.0)
    attention_probs_dropout_prob: float = Field(0.1, ge=0.0, lt=1.0)
    use_sop_head: bool | None = Field(None, description="None: exactly when the objective has sop")
    use_pointer_head: bool | None = Field(None, description="None: exactly when the objective is pert")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelSection:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        return self


class DataSection(Section):
    """How corpus rows become batches (BatchConfig and StreamConfig fields, plus CINO's language mix)."""

    max_len: int = Field(512, ge=3)
    packing: bool = True
    mask_rate: float = Field(0.15, gt=0.0, lt=1.0)
    batch_size: int = Field(32, ge=1)
    shuffle_buffer: int = Field(10_000, ge=1)
    chunk_rows: int = Field(2048, ge=1)
    epochs: int | None = Field(None, ge=1, description="None: cycle forever, train.steps decides")
    seed: int = 0
    languages: list[str] | None = Field(None, min_length=1, description="None: all languages, in proportion")
    sampling_alpha: float = Field(0.7, ge=0.0, le=1.0, description="CINO: p_i ~ n_i^alpha over languages")


class SimilarWordsSection(Section):
    """Where MacBERT's similar words come from: a thesaurus, a table, or vectors trained on the corpus."""

    source: Literal["cilin", "tsv", "vectors"]
    path: str | None = Field(None, min_length=1)
    cilin_flags: str = Field("=", pattern=r"^(=|#|=#|#=)$")
    top_k: int = Field(10, ge=1, description="vectors: neighbours per word")
    dim: int = Field(100, ge=2, description="vectors: PPMI-SVD dimension")

    @model_validator(mode="after")
    def _path_matches_source(self) -> SimilarWordsSection:
        if self.source != "vectors" and self.path is None:
            raise ValueError(f"source {self.source!r} needs path (the {self.source} file)")
        if self.source == "vectors" and self.path is not None:
            raise ValueError("source 'vectors' trains on the corpus and takes no path")
        return self


class EvalSection(Section):
    """The held-out split: a fraction of the corpus rows or a fixed number of them, not both."""

    fraction: float | None = Field(None, gt=0.0, lt=1.0)
    rows: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_size(self) -> EvalSection:
        if (self.fraction is None) == (self.rows is None):
            raise ValueError(
                f"give exactly one of fraction or rows, got fraction={self.fraction}, rows={self.rows}"
            )
        return self


class RegistrySection(Section):
    model_name: str = Field(
        min_length=1, description="registered model the final checkpoint becomes a version of"
    )


class Toleration(Section):
    """A Kubernetes toleration, with Kubernetes' field names."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = Field(None, ge=0)


class KubernetesSection(Section):
    gpus: int = Field(1, ge=0, le=16, description="GPUs per node")
    nodes: int = Field(1, ge=1)
    image: str = Field("plmops:latest", min_length=1)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class PretrainRecipe:
    """Everything one pretraining run needs; the conversions give the library's own config objects.

    A dataclass rather than a BaseModel because `model_config` is its conversion, a name pydantic
    models reserve.
    """

    corpus: CorpusSection
    objective: dict[str, float]  # a masking name, or {masking: weight, sop: weight}
    train: TrainConfig
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    similar_words: SimilarWordsSection | None = None
    eval: EvalSection = Field(default_factory=lambda: EvalSection(fraction=0.01))
    registry: RegistrySection | None = None
    kubernetes: KubernetesSection | None = None

    @field_validator("objective", mode="before")
    @classmethod
    def _objective_mix(cls, value: Any) -> dict[str, float]:
        """A name becomes {name: 1.0}; a mix is one masking plus, for SOP_PARTNERS, an sop weight."""
        mix = {value: 1.0} if isinstance(value, str) else value
        if not isinstance(mix, Mapping) or not mix:
            raise ValueError(
                f"must be one of {', '.join(MASKINGS)} or a mapping of them to weights, got {value!r}"
            )
        unknown = [k for k in mix if k not in (*MASKINGS, "sop")]
        if unknown:
            raise ValueError(f"unknown objective {unknown[0]!r}; allowed: {', '.join(MASKINGS)}, sop")
        maskings = [k for k in mix if k in MASKINGS]
        if len(maskings) != 1:
            raise ValueError(f"needs exactly one of {', '.join(MASKINGS)}, got {maskings or 'none'}")
        if "sop" in mix and maskings[0] not in SOP_PARTNERS:
            raise ValueError(f"sop mixes only with {', '.join(SOP_PARTNERS)}, not {maskings[0]}")
        bad = {
            k: w for k, w in mix.items() if isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0
        }
        if bad:
            raise ValueError(f"weights must be positive numbers, got {bad}")
        return {k: float(w) for k, w in mix.items()}

    @property
    def masking(self) -> str:
        return next(k for k in self.objective if k in MASKINGS)

    @property
    def uses_sop(self) -> bool:
        return "sop" in self.objective

    @model_validator(mode="after")
    def _sections_agree(self) -> PretrainRecipe:
        problems = []
        if self.data.max_len > self.model.max_position_embeddings:
            problems.append(
                f"data.max_len ({self.data.max_len}) exceeds model.max_position_embeddings "
                f"({self.model.max_position_embeddings})"
            )
        if self.model.use_sop_head is False and self.uses_sop:
            problems.append("model.use_sop_head is false but the objective has sop")
        if self.model.use_pointer_head is False and self.masking == "pert":
            problems.append("model.use_pointer_head is false but objective pert needs the pointer head")
        if self.uses_sop and self.data.packing:
            problems.append("sop predicts one segment pair per row: set data.packing to false")
        if self.masking == "mac" and self.similar_words is None:
            problems.append("objective mac needs a similar_words section")
        if self.masking == "fast_mlm" and not self.data.languages:
            problems.append("objective fast_mlm needs data.languages (one vocabulary subset per language)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def model_config(self, vocab_size: int) -> PlmopsConfig:
        """The encoder for a tokenizer of `vocab_size`; loss weights come from the objective mix."""
        model = self.model.model_dump(exclude={"use_sop_head", "use_pointer_head"})
        weight = self.objective[self.masking]
        return PlmopsConfig(
            vocab_size=vocab_size,
            **model,
            use_sop_head=self.uses_sop if self.model.use_sop_head is None else self.model.use_sop_head,
            use_pointer_head=self.masking == "pert"
            if self.model.use_pointer_head is None
            else self.model.use_pointer_head,
            mlm_loss_weight=weight,
            pointer_loss_weight=weight,
            sop_loss_weight=self.objective.get("sop", 1.0),
        )

    def train_config(self) -> TrainConfig:
        return dataclasses.replace(self.train)  # a copy: TrainConfig is mutable, the recipe is not

    def batch_config(self) -> BatchConfig:
        masking = "mlm" if self.masking == "fast_mlm" else self.masking
        d = self.data
        return BatchConfig(
            objective=masking, max_len=d.max_len, packing=d.packing, rate=d.mask_rate, seed=d.seed
        )

    def stream_config(self) -> StreamConfig:
        d = self.data
        return StreamConfig(
            batch_size=d.batch_size,
            shuffle_buffer=d.shuffle_buffer,
            chunk_rows=d.chunk_rows,
            epochs=d.epochs,
            seed=d.seed,
        )


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> PretrainRecipe:
    """Read a recipe and apply `key.path=value` overrides (values read as YAML: 3, 1e-4, false, [a, b])."""
    path = Path(path)
    data = read_yaml_mapping(path, "recipe")
    for item in overrides:
        _apply_override(data, item)
    _check_keys(data, PretrainRecipe, (), str(path))  # after the overrides: a --set value may be a mapping
    try:
        return TypeAdapter(PretrainRecipe).validate_python(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(_describe(e) for e in exc.errors())) from exc


def _apply_override(data: dict, item: str) -> None:
    key, eq, raw = item.partition("=")
    parts = key.strip().split(".")
    if not eq or not all(parts):
        raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. train.steps=100")
    _check_path(parts, f"--set {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
    node = data
    for depth, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {item!r}: {where} is {node!r}, not a section; set {where} as a whole")
    node[parts[-1]] = value


def _section_type(annotation: Any) -> type | None:
    """The section class (a pydantic model or a dataclass) a field holds, looking through `X | None`."""
    if get_origin(annotation) in (Union, types.UnionType):
        found = [t for t in map(_section_type, get_args(annotation)) if t is not None]
        return found[0] if found else None
    if isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)
    ):
        return annotation
    return None


def _field_names(section: type) -> list[str]:
    if issubclass(section, BaseModel):
        return list(section.model_fields)
    return [f.name for f in dataclasses.fields(section)]


def _unknown(name: str, section: type, prefix: tuple[str, ...]) -> str | None:
    """None if `name` is a field of `section`, else the message naming it and the closest valid key."""
    fields = _field_names(section)
    if name in fields:
        return None
    dotted = ".".join((*prefix, name))
    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.5)
    hint = f"did you mean {'.'.join((*prefix, close[0]))}?" if close else f"valid keys: {', '.join(fields)}"
    return f"unknown key {dotted}; {hint}"


def _check_keys(data: Mapping, section: type, prefix: tuple[str, ...], origin: str) -> None:
    for name, value in data.items():
        problem = _unknown(str(name), section, prefix)
        if problem:
            raise ConfigError(f"{origin}: {problem}")
        inner = _section_type(_resolved(section, name))
        if inner is not None and isinstance(value, Mapping):
            _check_keys(value, inner, (*prefix, name), origin)


def _check_path(parts: list[str], origin: str) -> None:
    section: type | None = PretrainRecipe
    for depth, name in enumerate(parts):
        if section is None:  # inside a free-form mapping (objective, node_selector): any key
            return
        problem = _unknown(name, section, tuple(parts[:depth]))
        if problem:
            raise ConfigError(f"{origin}: {problem}")
        section = _section_type(_resolved(section, name))


def _resolved(section: type, name: str) -> Any:
    """A field's annotation as a type (dataclass annotations may be strings under postponed evaluation)."""
    if issubclass(section, BaseModel):
        return section.model_fields[name].annotation
    return typing.get_type_hints(section)[name]


def _describe(error: Mapping[str, Any]) -> str:
    """One pydantic error as `dotted.path: message`; a library dataclass' own check names its field."""
    loc = [str(part) for part in error["loc"]]
    message = error["msg"].removeprefix("Value error, ")
    own = re.match(r"(TrainConfig)\.(\w+) (.*)", message)
    if own:
        loc, message = [*loc, own.group(2)], own.group(3)
    return f"{'.'.join(loc) or 'recipe'}: {message}"
