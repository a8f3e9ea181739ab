"""Fine-tune one pretrained encoder on one benchmark, once per seed, and score it on the test split.

    result = run_task(load_task("configs/eval/ocnli.yaml"), "runs/encoder", "runs/ft/ocnli")
    print(result.summary())   # {"accuracy": "71.4 (70.9)", "macro_f1": "70.8 (70.2)"}

For every seed in `hparams.seeds`, a fresh task head is put on the encoder folder (any checkpoint
saved with save_pretrained: an MLM or pretraining one, a BERT one), initialised under that seed, and
trained on the train split (`engine.fit`). Model selection follows the task file:

- with a dev split, the model is scored on dev after every epoch; the best epoch's weights are kept and
  `early_stopping_patience` epochs without a gain stop training; the best seed is the one with the
  best dev score;
- without one, the last epoch's weights are kept and the best seed is the one with the best test
  score (the "max" of the reported "max (mean)" is also a best-of-seeds on test, as in the
  Chinese-PLM papers).

Only the best seed's model is saved (save_pretrained + tokenizer + `finetune.json`), to `output_dir`:
it is the teacher for distillation and what gets exported. A zero-shot task (`zero_shot_from`) trains
on its source task's train/dev splits and is tested on its own test split; the labels are the same by
construction (taskspec.training_task checks it).

Scores are as metrics.py returns them: MRC EM/F1 in points (0-100), classification and entity scores as
fractions; `TaskResult.summary()` and the tables give every metric in points.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

import plmops.platform.models  # registers the plmops model with the Auto classes)
import plmops.platform.tokenization  # noqa: F401  (registers PlmopsTokenizer with AutoTokenizer)
from plmops.platform.finetune.classification import ClassificationTask
from plmops.platform.finetune.datasets import (
    DEFAULT_DATA_ROOT,
    ClassificationExample,
    Example,
    SkipReport,
    read_split,
    resolve_labels,
)
from plmops.platform.finetune.engine import Encoded, fit
from plmops.platform.finetune.metrics import accuracy, format_max_mean, macro_f1, max_mean
from plmops.platform.finetune.ner import NERTask
from plmops.platform.finetune.qa import MRCTask, max_query_length
from plmops.platform.finetune.taskspec import DEFAULT_CONFIG_DIR, TaskSpec, training_task

logger = logging.getLogger(__name__)

MAIN_METRIC = {"em_f1": "f1", "accuracy_macro_f1": "accuracy", "entity_f1": "f1"}
TO_POINTS = {"em_f1": 1.0, "accuracy_macro_f1": 100.0, "entity_f1": 100.0}  # score x factor = points
RUN_FILE = "finetune.json"


class TaskKind(Protocol):
    """What differs between task types: the head, tokenisation, decoding and scoring."""

    auto_model: Any

    def head_config(self) -> dict[str, Any]: ...
    def encode(self, examples: Sequence[Any], train: bool) -> Encoded: ...
    def predict(self, model: torch.nn.Module, encoded: Encoded, examples: Sequence[Any]) -> list[Any]: ...
    def score(self, predictions: Sequence[Any], examples: Sequence[Any]) -> dict[str, float]: ...


KINDS: dict[str, type] = {
    "classification": ClassificationTask,
    "pair_classification": ClassificationTask,
    "ner": NERTask,
    "mrc": MRCTask,
}


def task_kind(spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, labels: list[str]) -> TaskKind:
    return KINDS[spec.type](tokenizer, spec.hparams, labels)


@dataclass(frozen=True)
class Majority:
    """The most frequent training label (ties: the first declared) and its scores on the test split."""

    label: str
    scores: dict[str, float]


@dataclass
class TaskResult:
    """One task x one model over all seeds. `scores[seed]` maps metric -> test score (metrics.py scale)."""

    task: str
    model: str
    task_type: str
    metric: str  # the task's metric family: em_f1 | accuracy_macro_f1 | entity_f1
    trained_on: str  # the task whose train split was used (the zero-shot source, or the task itself)
    seeds: list[int]
    scores: dict[int, dict[str, float]]
    dev_scores: dict[int, list[float]]  # main metric on dev after each epoch (empty: no dev split)
    epochs_run: dict[int, int]
    best_epoch: dict[int, int]
    best_seed: int
    best_seed_by: Literal["dev", "test"]
    model_dir: Path  # the best seed's fine-tuned model
    predictions: list[Any]  # the best seed's test predictions, in test-example order
    reports: dict[str, SkipReport]  # what reading each split skipped or noted
    encoding: dict[str, dict[str, int]]  # per split: examples and what tokenisation cut or split
    train_examples_per_s: float  # mean over seeds; optimisation steps only
    infer_examples_per_s: float  # mean over seeds; forward pass and decoding of the test split
    majority: Majority | None = None  # classification tasks only
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def main_metric(self) -> str:
        return MAIN_METRIC[self.metric]

    def metric_names(self) -> list[str]:
        return list(self.scores[self.seeds[0]])

    def points(self, metric: str) -> list[float]:
        """The metric over seeds (seed order), in points."""
        return [self.scores[seed][metric] * TO_POINTS[self.metric] for seed in self.seeds]

    def summary(self, digits: int = 1) -> dict[str, str]:
        """metric -> "max (mean)" in points, the cell of the Chinese-PLM results tables."""
        return {name: format_max_mean(self.points(name), digits) for name in self.metric_names()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as text, seeds as keys), for run logs and experiment trackers."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["reports"] = {name: _report_dict(report) for name, report in self.reports.items()}
        data["majority"] = None if self.majority is None else asdict(self.majority)
        data["model_dir"] = str(self.model_dir)
        data["main_metric"] = self.main_metric
        data["summary"] = self.summary()
        return data


def _report_dict(report: SkipReport) -> dict[str, Any]:
    return {
        "where": report.where,
        "available": report.available,
        "kept": report.kept,
        "skipped": dict(report.skipped),
        "noted": dict(report.noted),
        "places": {reason: list(places) for reason, places in report.places.items()},
    }


@dataclass
class _Split:
    examples: list[Example]
    report: SkipReport
    encoded: Encoded


@dataclass
class _SeedRun:
    scores: dict[str, float]
    dev_scores: list[float]
    epochs_run: int
    best_epoch: int
    predictions: list[Any]
    train_per_s: float
    infer_per_s: float


def run_task(
    spec: TaskSpec,
    model_dir: str | Path,
    output_dir: str | Path,
    data_root: str | Path = DEFAULT_DATA_ROOT,
    *,
    config_dir: str | Path = DEFAULT_CONFIG_DIR,
    model_name: str | None = None,
    device: str | torch.device | None = None,
) -> TaskResult:
    """Fine-tune `model_dir` on `spec` once per seed; the best seed's model is saved to `output_dir`
    (replaced if present). `model_name` labels the result (default: the folder's name)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    output_dir = Path(output_dir)
    if output_dir.resolve() in (Path(model_dir).resolve(), *Path(model_dir).resolve().parents):
        raise ValueError(f"{spec.name}: output_dir {output_dir} would replace the encoder folder {model_dir}")
    spec = fit_to_model(spec, model_dir)
    source = training_task(spec, config_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    labels = resolve_labels(source, data_root)
    kind = task_kind(spec, tokenizer, labels)
    splits = _read_splits(spec, source, data_root, kind)
    runs: dict[int, _SeedRun] = {}
    best_seed, best_key = spec.hparams.seeds[0], None
    for seed in spec.hparams.seeds:
        model = _new_model(kind, model_dir, seed, device)
        runs[seed] = _run_seed(spec, kind, model, splits, seed, tokenizer.pad_token_id)
        key = max(runs[seed].dev_scores) if "dev" in splits else runs[seed].scores[MAIN_METRIC[spec.metric]]
        if best_key is None or key > best_key:
            best_seed, best_key = seed, key
            save_finetuned(
                model, tokenizer, output_dir, _run_record(spec, source, model_dir, seed, runs[seed])
            )
        logger.info("%s seed %d: test %s", spec.name, seed, runs[seed].scores)
        del model
    return _result(spec, source, model_dir, model_name, splits, runs, best_seed, output_dir, labels)


def fit_to_model(spec: TaskSpec, model_dir: str | Path) -> TaskSpec:
    """The task with `max_length` cut to the encoder's position table (a tiny model has 128 positions
    where a task file asks 512): windows, truncation and chunking then follow the model's limit."""
    positions = getattr(AutoConfig.from_pretrained(model_dir), "max_position_embeddings", None)
    if positions is None or spec.hparams.max_length <= positions:
        return spec
    logger.warning("%s: max_length %d cut to the model's %d positions", spec.name, spec.hparams.max_length, positions)
    update: dict[str, Any] = {"max_length": positions}
    if spec.type == "mrc":  # windows must still overlap by less than their context room
        room = positions - max_query_length(positions) - 3
        update["doc_stride"] = min(spec.hparams.doc_stride, room // 2)
    return spec.model_copy(update={"hparams": spec.hparams.model_copy(update=update)})


def _read_splits(
    spec: TaskSpec, source: TaskSpec, data_root: str | Path, kind: TaskKind
) -> dict[str, _Split]:
    """train and dev from the training task, test from the task itself, each encoded once for all seeds."""
    wanted = [
        ("train", source),
        *([("dev", source)] if source.splits.dev is not None else []),
        ("test", spec),
    ]
    splits = {}
    for name, owner in wanted:
        examples, report = read_split(owner, name, data_root)
        if not examples:
            raise ValueError(f"{owner.name}: the {name} split has no usable examples ({report.summary()})")
        logger.info("%s", report.summary())
        splits[name] = _Split(examples, report, kind.encode(examples, train=name == "train"))
    return splits


def _new_model(kind: TaskKind, model_dir: str | Path, seed: int, device: torch.device) -> PreTrainedModel:
    """The encoder with a task head initialised under `seed` (a head of the same shape already in the
    folder is kept; one of another shape is replaced)."""
    torch.manual_seed(seed)
    model = kind.auto_model.from_pretrained(model_dir, ignore_mismatched_sizes=True, **kind.head_config())
    return model.to(device)


def _run_seed(
    spec: TaskSpec, kind: TaskKind, model: PreTrainedModel, splits: dict[str, _Split], seed: int, pad_id: int
) -> _SeedRun:
    main = MAIN_METRIC[spec.metric]
    dev = splits.get("dev")

    def evaluate() -> float:
        return kind.score(kind.predict(model, dev.encoded, dev.examples), dev.examples)[main]

    train = splits["train"]
    fitted = fit(
        model,
        train.encoded.rows,
        spec.hparams,
        seed,
        pad_id,
        evaluate if dev else None,
        f"{spec.name} seed {seed}",
    )
    test = splits["test"]
    start = time.perf_counter()
    predictions = kind.predict(model, test.encoded, test.examples)
    infer_seconds = time.perf_counter() - start
    return _SeedRun(
        scores=kind.score(predictions, test.examples),
        dev_scores=fitted.dev_scores,
        epochs_run=fitted.epochs_run,
        best_epoch=fitted.best_epoch,
        predictions=predictions,
        train_per_s=len(train.examples) * fitted.epochs_run / max(fitted.train_seconds, 1e-9),
        infer_per_s=len(test.examples) / max(infer_seconds, 1e-9),
    )


def _run_record(
    spec: TaskSpec, source: TaskSpec, model_dir: str | Path, seed: int, run: _SeedRun
) -> dict[str, Any]:
    return {
        "task": spec.name,
        "trained_on": source.name,
        "encoder": str(model_dir),
        "seed": seed,
        "test_scores": run.scores,
        "dev_scores": run.dev_scores,
        "best_epoch": run.best_epoch,
        "hparams": spec.hparams.model_dump(),
    }


def save_finetuned(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path, record: dict[str, Any]
) -> None:
    """Replace `folder` with the model, its tokenizer and `finetune.json` (how it was trained)."""
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / RUN_FILE).write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")


def _result(
    spec: TaskSpec,
    source: TaskSpec,
    model_dir: str | Path,
    model_name: str | None,
    splits: dict[str, _Split],
    runs: dict[int, _SeedRun],
    best_seed: int,
    output_dir: Path,
    labels: list[str],
) -> TaskResult:
    seeds = list(spec.hparams.seeds)
    majority = None
    if spec.type in ("classification", "pair_classification"):
        majority = _majority(splits["train"].examples, splits["test"].examples, labels)
    return TaskResult(
        task=spec.name,
        model=model_name or Path(model_dir).name,
        task_type=spec.type,
        metric=spec.metric,
        trained_on=source.name,
        seeds=seeds,
        scores={s: runs[s].scores for s in seeds},
        dev_scores={s: runs[s].dev_scores for s in seeds},
        epochs_run={s: runs[s].epochs_run for s in seeds},
        best_epoch={s: runs[s].best_epoch for s in seeds},
        best_seed=best_seed,
        best_seed_by="dev" if "dev" in splits else "test",
        model_dir=output_dir,
        predictions=runs[best_seed].predictions,
        reports={name: split.report for name, split in splits.items()},
        encoding={name: split.encoded.counts for name, split in splits.items()},
        train_examples_per_s=max_mean([runs[s].train_per_s for s in seeds])[1],
        infer_examples_per_s=max_mean([runs[s].infer_per_s for s in seeds])[1],
        majority=majority,
        hparams=spec.hparams.model_dump(),
    )


def majority_baseline(
    spec: TaskSpec, data_root: str | Path = DEFAULT_DATA_ROOT, config_dir: str | Path = DEFAULT_CONFIG_DIR
) -> Majority:
    """Scores of always predicting the most frequent training label: the floor a classifier must beat
    (a tiny or broken model often learns exactly this)."""
    if spec.type not in ("classification", "pair_classification"):
        raise ValueError(f"{spec.name}: a majority baseline applies to classification tasks, not {spec.type}")
    source = training_task(spec, config_dir)
    train, _ = read_split(source, "train", data_root)
    test, _ = read_split(spec, "test", data_root)
    return _majority(train, test, resolve_labels(source, data_root))


def _majority(train: Sequence[Example], test: Sequence[Example], labels: list[str]) -> Majority:
    counts = Counter(e.label for e in train if isinstance(e, ClassificationExample))
    if not counts:
        raise ValueError("no training labels to take a majority of")
    label = max(labels, key=lambda x: (counts[x], -labels.index(x)))
    gold = [e.label for e in test if isinstance(e, ClassificationExample)]
    predicted = [label] * len(gold)
    return Majority(
        label, {"accuracy": accuracy(predicted, gold), "macro_f1": macro_f1(predicted, gold, labels)}
    )


def evaluate_folder(
    spec: TaskSpec,
    folder: str | Path,
    data_root: str | Path = DEFAULT_DATA_ROOT,
    split: str = "test",
    device: str | torch.device | None = None,
) -> tuple[dict[str, float], list[Any]]:
    """Scores and predictions of an already fine-tuned folder (one `run_task` saved) on a split of
    `spec`: how an exported or distilled model is checked against the teacher's numbers."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    labels = resolve_labels(spec, data_root)
    kind = task_kind(spec, tokenizer, labels)
    model = kind.auto_model.from_pretrained(folder).to(device)
    _check_head(model, kind, folder)
    examples, report = read_split(spec, split, data_root)
    if not examples:
        raise ValueError(f"{spec.name}: the {split} split has no usable examples ({report.summary()})")
    predictions = kind.predict(model, kind.encode(examples, train=False), examples)
    return kind.score(predictions, examples), predictions


def _check_head(model: PreTrainedModel, kind: TaskKind, folder: str | Path) -> None:
    """A folder fine-tuned on other labels would score silently wrong: refuse it."""
    expected = kind.head_config().get("id2label")
    found = {int(k): v for k, v in (model.config.id2label or {}).items()}
    if expected is not None and found != expected:
        raise ValueError(f"{folder}: the model's labels {found} are not the task's {expected}")
