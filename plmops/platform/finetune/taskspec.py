"""Evaluation tasks: one YAML file in configs/eval/ declares a benchmark, so adding one needs no code.

    spec = load_task("configs/eval/cmrc2018.yaml")
    suite = load_suite("zh-small")              # or load_suite(["ocnli", "afqmc"]), checked for leakage
    train_on = suite.training_task(spec)        # the task itself, or its zero_shot_from source
    examples, report = read_split(train_on, "train", data_root)   # plmops.platform.finetune.datasets

A task file says where each split comes from (files relative to the data root, with a declared,
deterministic `select` where a split is carved out of another one), how records map to text and labels,
the metric and the fine-tuning hyper-parameters. Loading checks it completely: wrong keys, a format that
does not fit the task type, a train and a test split drawing on the same records. A suite then refuses
two tasks whose test sets are the same records or are declared to overlap, so overlapping sets are never
reported as separate results. See docs/evaluation.md for every field.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from plmops.platform.configfile import ConfigError, describe_errors, read_yaml_mapping

DEFAULT_CONFIG_DIR = Path("configs/eval")
SUITES_FILE = "suites.yaml"

TaskType = Literal["mrc", "classification", "pair_classification", "ner"]
Format = Literal["squad", "jsonl", "json_array", "tsv", "bio_columns", "bio_pairs_files", "spans_jsonl"]
Metric = Literal["em_f1", "accuracy_macro_f1", "entity_f1"]
SplitName = Literal["train", "dev", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "dev", "test")

JSON_FORMATS = ("jsonl", "json_array")
FORMATS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "mrc": ("squad", "jsonl"),
    "classification": (*JSON_FORMATS, "tsv"),
    "pair_classification": (*JSON_FORMATS, "tsv"),
    "ner": ("bio_columns", "bio_pairs_files", "spans_jsonl"),
}
METRIC_BY_TYPE: dict[str, str] = {
    "mrc": "em_f1",
    "classification": "accuracy_macro_f1",
    "pair_classification": "accuracy_macro_f1",
    "ner": "entity_f1",
}
# Where each role's value lives in a record, per (type, format): JSON key or TSV column. A role missing
# from a table cannot be declared for that format; `id` is optional in records (the place stands in).
FIELD_DEFAULTS: dict[tuple[str, str], dict[str, str | int]] = {
    ("mrc", "squad"): {},  # SQuAD's structure is fixed
    ("mrc", "jsonl"): {
        "id": "id",
        "context": "context",
        "question": "question",
        "answer": "answer",
        "answer_start": "answer_start",
        "title": "title",
    },
    **{("classification", f): {"id": "id", "text_a": "sentence", "label": "label"} for f in JSON_FORMATS},
    **{
        ("pair_classification", f): {
            "id": "id",
            "text_a": "sentence1",
            "text_b": "sentence2",
            "label": "label",
        }
        for f in JSON_FORMATS
    },
    ("classification", "tsv"): {"text_a": 0, "label": 1},
    ("pair_classification", "tsv"): {"text_a": 0, "text_b": 1, "label": 2},
    ("ner", "bio_columns"): {},
    ("ner", "bio_pairs_files"): {},
    ("ner", "spans_jsonl"): {"text": "text", "spans": "labels"},
}
MRC_ONLY_HPARAMS = ("doc_stride", "max_answer_length", "n_best")
MRC_MAX_LENGTH = 512  # an MRC task's default window: passages are long (other tasks: 128)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Select(Section):
    """Which records of one file a split takes, so a re-split is declared and reproducible.

    `fraction` + `part` and `interval` rank the file's distinct inputs (MRC: passages) by a seeded hash
    and take that share of them: part first of fraction 0.5 is exactly half of the passages (rounded),
    identical inputs fall on one side, and parts with the same seed and disjoint bands partition the
    file. `indices` picks records by position in the file, [start, stop).
    """

    seed: int = 0
    fraction: float | None = Field(None, gt=0.0, lt=1.0)
    part: Literal["first", "rest"] | None = None
    interval: tuple[float, float] | None = None
    indices: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Select:
        ways = [name for name in ("fraction", "interval", "indices") if getattr(self, name) is not None]
        if len(ways) != 1:
            raise ValueError(
                f"give exactly one of fraction (with part), interval or indices, got {ways or 'none'}"
            )
        if (self.fraction is None) != (self.part is None):
            raise ValueError("fraction and part go together: part first takes the fraction, rest the others")
        if self.interval is not None and not 0.0 <= self.interval[0] < self.interval[1] <= 1.0:
            raise ValueError(f"interval must satisfy 0 <= low < high <= 1, got {list(self.interval)}")
        if self.indices is not None:
            if not 0 <= self.indices[0] < self.indices[1]:
                raise ValueError(f"indices must satisfy 0 <= start < stop, got {list(self.indices)}")
            if "seed" in self.model_fields_set:
                raise ValueError("indices take records in file order: a seed does not apply")
        return self

    def band(self) -> tuple[float, float] | None:
        """The [low, high) share of the ranked inputs taken, or None for an index range."""
        if self.fraction is not None:
            return (0.0, self.fraction) if self.part == "first" else (self.fraction, 1.0)
        return self.interval

    def overlaps(self, other: Select | None) -> bool:
        """Whether two selections from the same file can share a record (a different seed: assume so)."""
        if other is None:
            return True
        mine, theirs = self.band(), other.band()
        if mine is not None and theirs is not None:
            return self.seed != other.seed or (mine[0] < theirs[1] and theirs[0] < mine[1])
        if self.indices is not None and other.indices is not None:
            return self.indices[0] < other.indices[1] and other.indices[0] < self.indices[1]
        return True


class Source(Section):
    """One file (relative to the data root) or a declared part of it."""

    file: str = Field(min_length=1)
    tags_file: str | None = Field(None, min_length=1, description="bio_pairs_files: the tag lines")
    format: Format | None = Field(None, description="None: the task's format")
    select: Select | None = None

    def overlaps(self, other: Source) -> bool:
        if Path(self.file) != Path(other.file):
            return False
        return self.select is None or self.select.overlaps(other.select)

    def describe(self) -> str:
        if self.select is None:
            return self.file
        picked = self.select.model_dump(exclude_none=True, exclude={"seed"} if self.select.indices else set())
        return f"{self.file} {picked}"


def _with_format(value: Any, fmt: Any) -> Any:
    sources = _as_sources(value)
    if not isinstance(sources, list):
        return sources  # not a split: validation reports it
    return [{"format": fmt, **item} if isinstance(item, Mapping) else item for item in sources]


def _as_sources(value: Any) -> Any:
    """A split may be written as one path, one source mapping, or a list of either."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return [{"file": item} if isinstance(item, str) else item for item in items]


class Splits(Section):
    train: list[Source] | None = Field(None, min_length=1)
    dev: list[Source] | None = Field(None, min_length=1)
    test: list[Source] = Field(min_length=1)

    @field_validator("train", "dev", "test", mode="before")
    @classmethod
    def _sources(cls, value: Any) -> Any:
        return _as_sources(value)

    def declared(self) -> dict[str, list[Source]]:
        return {name: sources for name in SPLITS if (sources := getattr(self, name)) is not None}


class Fields(Section):
    """Where each role's value lives in a record: a JSON key, or a 0-based column for tsv."""

    id: str | int | None = None
    text_a: str | int | None = None
    text_b: str | int | None = None
    label: str | int | None = None
    context: str | None = None
    question: str | None = None
    answer: str | None = None
    answer_start: str | None = None
    title: str | None = None
    text: str | None = None
    spans: str | None = None


class LabelFile(Section):
    """Labels listed in a data file: one per line, or the `field` of each JSON line."""

    from_file: str = Field(min_length=1)
    field: str | None = Field(None, min_length=1)


class LabelRange(Section):
    """Integer labels first..last inclusive, as strings (IFLYTEK's 0..118)."""

    first: int
    last: int

    @model_validator(mode="after")
    def _ordered(self) -> LabelRange:
        if self.last < self.first:
            raise ValueError(f"last ({self.last}) is below first ({self.first})")
        return self


class ReaderOptions(Section):
    """Per-dataset quirks, each named after the data it exists for."""

    exclude_labels: list[str] = Field(
        default_factory=list, description="records with these labels are dropped and counted (OCNLI '-')"
    )
    label_index: bool = Field(False, description="the label value is a 0-based index into labels (THUCNews)")
    list_separator: str = Field("，", description="joins a list-valued text field (CSL keywords)")
    strip_segment_position: bool = Field(
        False, description="bio_columns tokens end with a word-position number to strip (Weibo NER)"
    )

    @field_validator("exclude_labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        return [str(x) for x in value] if isinstance(value, list) else value


class HyperParameters(Section):
    lr: float = Field(3e-5, gt=0.0, lt=1.0)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(128, ge=8, le=8192, description="tokens per input window")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1, description="one run per seed")
    early_stopping_patience: int | None = Field(None, ge=1, description="evaluations on dev without gain")
    doc_stride: int = Field(128, ge=1, description="MRC: overlap of successive windows over a passage")
    max_answer_length: int = Field(30, ge=1, description="MRC: longest predicted span, in tokens")
    n_best: int = Field(20, ge=1, description="MRC: start/end candidates kept per window")

    @model_validator(mode="after")
    def _consistent(self) -> HyperParameters:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        return self


class Limit(Section):
    """At most this many examples per split (a seeded sample), for demos and smoke runs."""

    train: int | None = Field(None, ge=1)
    dev: int | None = Field(None, ge=1)
    test: int | None = Field(None, ge=1)


def _label_kind(value: Any) -> str:
    """Which form of labels a value is, so an error speaks of that form only."""
    if isinstance(value, Mapping):
        return "range" if {"first", "last"} & set(value) else "file"
    return {LabelFile: "file", LabelRange: "range"}.get(type(value), "list")


Labels = Annotated[
    Annotated[list[str], Tag("list")]
    | Annotated[LabelFile, Tag("file")]
    | Annotated[LabelRange, Tag("range")],
    Discriminator(_label_kind),
]

TASK_NAME = r"^[a-z0-9][a-z0-9_\-]*$"


class TaskSpec(Section):
    """One benchmark: where its splits come from, how records read, how it is scored and tuned."""

    name: str = Field(pattern=TASK_NAME)
    description: str = Field(min_length=1, description="what the data is, and every re-split and why")
    type: TaskType
    language: str = Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]+)*$", description="BCP-47, e.g. zh, bo, mn-Cyrl")
    format: Format | None = Field(None, description="default format of every source")
    splits: Splits
    fields: Fields = Field(default_factory=Fields)
    labels: Labels | None = None
    reader: ReaderOptions = Field(default_factory=ReaderOptions)
    metric: Metric
    hparams: HyperParameters = Field(default_factory=HyperParameters)
    limit: Limit = Field(default_factory=Limit)
    zero_shot_from: str | None = Field(None, pattern=TASK_NAME, description="train on that task instead")
    overlaps_with: list[str] = Field(default_factory=list, description="tasks whose test data shares records")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """The metric and max_length follow from the type; a source without a format takes the task's."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if data.get("type") in METRIC_BY_TYPE:
            data.setdefault("metric", METRIC_BY_TYPE[data["type"]])
        hparams = data.get("hparams", {})
        if data.get("type") == "mrc" and isinstance(hparams, Mapping) and "max_length" not in hparams:
            data["hparams"] = {**hparams, "max_length": MRC_MAX_LENGTH}
        splits, fmt = data.get("splits"), data.get("format")
        if isinstance(splits, Mapping) and fmt is not None:
            data["splits"] = {name: _with_format(value, fmt) for name, value in splits.items()}
        return data

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        """YAML reads `[0, 1]` as numbers; labels are compared as text, as read from the data."""
        if isinstance(value, list):
            return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        problems = [
            *self._source_problems(),
            *self._field_problems(),
            *self._label_problems(),
            *self._option_problems(),
            *self._split_problems(),
            *leakage_problems(self.splits.declared()),
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def sources(self) -> list[tuple[str, int, Source]]:
        """Every (split, position, source) of the task."""
        return [
            (name, i, s) for name, sources in self.splits.declared().items() for i, s in enumerate(sources)
        ]

    def formats(self) -> set[str]:
        return {s.format for _, _, s in self.sources() if s.format is not None}

    def field_map(self, fmt: str) -> dict[str, str | int]:
        """Role -> key (or column) for records of `fmt`: the format's defaults, then the declared fields."""
        declared = self.fields.model_dump(exclude_none=True)
        return {**FIELD_DEFAULTS[(self.type, fmt)], **declared}

    def eval_sources(self) -> list[Source]:
        """The records results are reported on."""
        return list(self.splits.test)

    def _source_problems(self) -> list[str]:
        problems = []
        for split, i, source in self.sources():
            where = f"splits.{split}.{i}"
            fmt = source.format
            if fmt is None:
                problems.append(f"{where}.format: no format here and none for the task")
            elif fmt not in FORMATS_BY_TYPE[self.type]:
                allowed = ", ".join(FORMATS_BY_TYPE[self.type])
                problems.append(f"{where}.format: {fmt!r} cannot hold {self.type} data; allowed: {allowed}")
            if (fmt == "bio_pairs_files") != (source.tags_file is not None):
                need = "needs" if fmt == "bio_pairs_files" else "only bio_pairs_files takes"
                problems.append(f"{where}.tags_file: {fmt} {need} a tags_file")
        return problems

    def _field_problems(self) -> list[str]:
        declared = self.fields.model_dump(exclude_none=True)
        problems = []
        for fmt in sorted(self.formats()):
            roles = FIELD_DEFAULTS.get((self.type, fmt))
            if roles is None:
                continue  # the format itself is reported
            for role, key in declared.items():
                if role not in roles:
                    allowed = ", ".join(roles) or "none (the structure is fixed)"
                    problems.append(
                        f"fields.{role}: not a field of {self.type} {fmt} records; allowed: {allowed}"
                    )
                elif isinstance(key, int) != (fmt == "tsv"):
                    kind = "a 0-based column number" if fmt == "tsv" else "a JSON key (text)"
                    problems.append(f"fields.{role}: {fmt} records need {kind}, got {key!r}")
        return problems

    def _label_problems(self) -> list[str]:
        problems = []
        if self.metric != METRIC_BY_TYPE[self.type]:
            problems.append(
                f"metric: {self.type} tasks are scored with {METRIC_BY_TYPE[self.type]}, not {self.metric}"
            )
        labels = self.labels
        if self.type == "mrc":
            return problems + (["labels: mrc tasks have no labels"] if labels is not None else [])
        if labels is None:
            return problems + [f"labels: {self.type} tasks need labels (a list, from_file or first/last)"]
        if isinstance(labels, list):
            repeated = sorted({x for x in labels if labels.count(x) > 1})
            problems += ["labels: empty list"] if not labels else []
            problems += [f"labels: repeated {repeated}"] if repeated else []
        if self.type == "ner" and not isinstance(labels, list):
            problems.append("labels: ner tasks list their entity types inline, e.g. [PER, LOC, ORG]")
        elif self.type == "ner":
            tags = [x for x in labels if x == "O" or x[:2] in ("B-", "I-")]
            problems += [f"labels: list entity types (PER), not tags: {tags}"] if tags else []
        return problems

    def _option_problems(self) -> list[str]:
        set_options = self.reader.model_fields_set
        problems = []
        if self.type == "mrc" or self.type == "ner":
            for name in sorted({"exclude_labels", "label_index", "list_separator"} & set_options):
                problems.append(f"reader.{name}: applies to classification tasks only")
        if "strip_segment_position" in set_options and "bio_columns" not in self.formats():
            problems.append("reader.strip_segment_position: applies to bio_columns sources only")
        if self.reader.label_index and not isinstance(self.labels, (list, LabelFile)):
            problems.append("reader.label_index: needs labels as a list or from_file to index into")
        hparams = self.hparams
        if self.type != "mrc":
            for name in sorted(set(MRC_ONLY_HPARAMS) & hparams.model_fields_set):
                problems.append(f"hparams.{name}: applies to mrc tasks only")
        elif hparams.doc_stride >= hparams.max_length:
            problems.append(
                f"hparams.doc_stride: {hparams.doc_stride} must be below max_length ({hparams.max_length})"
            )
        if self.name in self.overlaps_with:
            problems.append("overlaps_with: a task cannot list itself")
        return problems

    def _split_problems(self) -> list[str]:
        if self.zero_shot_from is not None:
            problems = [
                f"splits.{name}: a zero-shot task trains on {self.zero_shot_from}'s {name} split; remove it"
                for name in ("train", "dev")
                if getattr(self.splits, name) is not None
            ]
            if self.zero_shot_from == self.name:
                problems.append("zero_shot_from: a task cannot be its own source")
            return problems
        problems = (
            [] if self.splits.train is not None else ["splits.train: required (or give zero_shot_from)"]
        )
        if self.hparams.early_stopping_patience is not None and self.splits.dev is None:
            problems.append("hparams.early_stopping_patience: needs a dev split to watch")
        return problems


def leakage_problems(splits: Mapping[str, Sequence[Source]]) -> list[str]:
    """Pairs of sources that can share records; within one task any such pair is leakage."""
    placed = [(name, i, s) for name, sources in splits.items() for i, s in enumerate(sources)]
    problems = []
    for (name_a, i, a), (name_b, j, b) in itertools.combinations(placed, 2):
        if a.overlaps(b):
            problems.append(
                f"splits.{name_b}.{j}: shares records with splits.{name_a}.{i} ({b.describe()} vs "
                f"{a.describe()}); give both a select with the same seed and disjoint parts"
            )
    return problems


def _describe(exc: ValidationError) -> str:
    """describe_errors, without pydantic's "Value error, " and without "(root)" for the whole-task checks,
    whose messages already start with the dotted field."""
    return describe_errors(exc).replace("(root): Value error, ", "").replace("Value error, ", "")


def validate_task(data: Mapping[str, Any], origin: str) -> TaskSpec:
    try:
        return TaskSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {_describe(exc)}") from exc


def load_task(path: str | Path) -> TaskSpec:
    """Read and check one task file; its `name` must be the file's stem, the name suites refer to."""
    path = Path(path)
    spec = validate_task(read_yaml_mapping(path, "task"), str(path))
    if spec.name != path.stem:
        raise ConfigError(f"{path}: name: {spec.name!r} must equal the file name {path.stem!r}")
    return spec


def task_path(name_or_path: str | Path, config_dir: str | Path = DEFAULT_CONFIG_DIR) -> Path:
    """A task name means `<config_dir>/<name>.yaml`; anything with a suffix or a folder is a path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        return Path(name_or_path)
    return Path(config_dir) / f"{text}.yaml"


def training_task(spec: TaskSpec, config_dir: str | Path = DEFAULT_CONFIG_DIR) -> TaskSpec:
    """The task whose train and dev splits `spec` is fine-tuned on: itself, or its zero-shot source.

    The source lends its data (splits, fields, format, labels) only: the hyper-parameters and the
    train/dev limits are the zero-shot task's, since they define that experiment.
    """
    if spec.zero_shot_from is None:
        return spec
    path = task_path(spec.zero_shot_from, config_dir)
    where = f"{spec.name}: zero_shot_from"
    if not path.is_file():
        raise ConfigError(f"{where}: no task file {path}")
    source = load_task(path)
    problems = []
    if source.zero_shot_from is not None:
        problems.append(f"{source.name} is itself zero-shot (from {source.zero_shot_from})")
    if source.type != spec.type:
        problems.append(f"{source.name} is a {source.type} task, {spec.name} a {spec.type} task")
    if source.labels != spec.labels:
        problems.append(
            f"labels differ ({source.name}: {_labels_text(source)}; {spec.name}: {_labels_text(spec)}): "
            "declare the same labels in the same order"
        )
    if spec.hparams.early_stopping_patience is not None and source.splits.dev is None:
        problems.append(f"hparams.early_stopping_patience needs a dev split, and {source.name} has none")
    source_splits = {k: v for k, v in source.splits.declared().items() if k != "test"}
    problems += leakage_problems({**source_splits, "test": spec.splits.test})
    if problems:
        raise ConfigError(f"{where} {source.name}: " + "; ".join(problems))
    limit = Limit(train=spec.limit.train, dev=spec.limit.dev)
    return source.model_copy(update={"hparams": spec.hparams, "limit": limit})


def _labels_text(spec: TaskSpec) -> str:
    labels = spec.labels
    return repr(labels) if isinstance(labels, list) else (labels.model_dump_json() if labels else "none")


# ---------------------------------------------------------------------------------------------
# Suites


class SuiteEntry(Section):
    """A task in a suite, with the suite's limits and hyper-parameter overrides for it."""

    task: str = Field(min_length=1)
    limit: Limit | None = None
    hparams: dict[str, Any] = Field(default_factory=dict)


class SuiteDefinition(Section):
    description: str = Field(min_length=1)
    tasks: list[SuiteEntry] = Field(min_length=1)

    @field_validator("tasks", mode="before")
    @classmethod
    def _entries(cls, value: Any) -> Any:
        """A bare task name is an entry without overrides."""
        return [{"task": x} if isinstance(x, str) else x for x in value] if isinstance(value, list) else value


@dataclass(frozen=True)
class Suite:
    """Tasks reported together: no two of them evaluate on shared records."""

    name: str
    tasks: tuple[TaskSpec, ...]
    training: Mapping[str, TaskSpec]  # task name -> the task whose train/dev splits it fine-tunes on

    def task(self, name: str) -> TaskSpec:
        for spec in self.tasks:
            if spec.name == name:
                return spec
        raise KeyError(f"suite {self.name} has no task {name!r}; it has {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [spec.name for spec in self.tasks]

    def training_task(self, spec: TaskSpec | str) -> TaskSpec:
        return self.training[spec if isinstance(spec, str) else spec.name]


def suite_definitions(config_dir: str | Path = DEFAULT_CONFIG_DIR) -> dict[str, SuiteDefinition]:
    """The named suites of `<config_dir>/suites.yaml` (none when the file is absent)."""
    path = Path(config_dir) / SUITES_FILE
    if not path.is_file():
        return {}
    try:
        return TypeAdapter(dict[str, SuiteDefinition]).validate_python(read_yaml_mapping(path, "suites"))
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc


def load_suite(
    names_or_paths: str | Path | Sequence[str | Path], config_dir: str | Path = DEFAULT_CONFIG_DIR
) -> Suite:
    """A named suite of suites.yaml, or an ad-hoc one from task names or paths; refused on leakage."""
    definitions = suite_definitions(config_dir)
    if isinstance(names_or_paths, str) and names_or_paths in definitions:
        name, entries = names_or_paths, definitions[names_or_paths].tasks
    elif isinstance(names_or_paths, str) and not task_path(names_or_paths, config_dir).is_file():
        known = ", ".join(definitions) or "none"
        raise ConfigError(f"{names_or_paths!r} is neither a suite ({known}) nor a task file in {config_dir}")
    else:
        items = [names_or_paths] if isinstance(names_or_paths, (str, Path)) else list(names_or_paths)
        name, entries = "+".join(Path(str(x)).stem for x in items), [SuiteEntry(task=str(x)) for x in items]
    tasks = tuple(_entry_task(entry, config_dir, f"suite {name}") for entry in entries)
    problems = suite_problems(tasks)
    if problems:
        raise ConfigError(f"suite {name}: " + "; ".join(problems))
    return Suite(name, tasks, {spec.name: training_task(spec, config_dir) for spec in tasks})


def _entry_task(entry: SuiteEntry, config_dir: str | Path, where: str) -> TaskSpec:
    path = task_path(entry.task, config_dir)
    if not path.is_file():
        raise ConfigError(f"{where}: no task file {path} for task {entry.task!r}")
    spec = load_task(path)
    if entry.limit is None and not entry.hparams:
        return spec
    data = spec.model_dump(exclude_unset=True)
    if entry.limit is not None:
        data["limit"] = {**data.get("limit", {}), **entry.limit.model_dump(exclude_unset=True)}
    data["hparams"] = {**data.get("hparams", {}), **entry.hparams}
    return validate_task(data, f"{where}, task {spec.name} with the suite's limit/hparams")


def suite_problems(tasks: Sequence[TaskSpec]) -> list[str]:
    """Why these tasks cannot be reported side by side: a repeated task, shared or declared-overlapping
    test records."""
    problems = []
    names = [spec.name for spec in tasks]
    problems += [f"task {n} appears twice" for n in sorted({n for n in names if names.count(n) > 1})]
    for a, b in itertools.combinations(tasks, 2):
        if a.name == b.name:
            continue
        if b.name in a.overlaps_with or a.name in b.overlaps_with:
            problems.append(f"{a.name} and {b.name} are declared to overlap (overlaps_with): report only one")
            continue
        shared = [(x, y) for x in a.eval_sources() for y in b.eval_sources() if x.overlaps(y)]
        if shared:
            x, y = shared[0]
            problems.append(
                f"{a.name} and {b.name} evaluate on shared records ({x.describe()} / {y.describe()}): "
                "report only one"
            )
    return problems
