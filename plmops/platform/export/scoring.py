"""Score an ONNX graph on a task split exactly as the PyTorch evaluation scores the model.

`score_onnx` is `runner.evaluate_folder` with ONNX Runtime in place of PyTorch: the same task kind
encodes the split (truncation, NER chunking, MRC windows), batches and pads it (`engine.predict_rows`),
decodes the outputs (argmax, word tags, `mrc.decode_spans`) and scores them (metrics.py). Only the
forward pass differs, through `OnnxTaskModel`. So an fp32 graph must reproduce the PyTorch predictions,
and the gap between an fp32 and an int8 graph (`score_delta`) is the quantisation's alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer

import plmops.platform.tokenization  # noqa: F401  (registers PlmopsTokenizer with AutoTokenizer)
from plmops.platform.export.metadata import ExportMetadata, read_metadata
from plmops.platform.export.runtime import session
from plmops.platform.finetune.datasets import DEFAULT_DATA_ROOT, read_split, resolve_labels
from plmops.platform.finetune.runner import task_kind
from plmops.platform.finetune.taskspec import TaskSpec

HEAD_OF_TASK = {
    "classification": "sequence_classification",
    "pair_classification": "sequence_classification",
    "ner": "token_classification",
    "mrc": "question_answering",
}


class OnnxTaskModel(nn.Module):
    """An ONNX Runtime session with the calling convention the task kinds use on a PyTorch model:
    keyword tensors in, an object with `logits` (or `start_logits` / `end_logits`) out."""

    def __init__(self, onnx_path: str | Path, threads: int = 0) -> None:
        super().__init__()
        self.session = session(onnx_path, threads=threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # engine.predict_rows finds the device from the first parameter: an empty one says "cpu".
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, **inputs: torch.Tensor) -> SimpleNamespace:
        feeds = {name: inputs[name].cpu().numpy() for name in self.input_names}
        outputs = self.session.run(self.output_names, feeds)
        return SimpleNamespace(**{n: torch.from_numpy(v) for n, v in zip(self.output_names, outputs)})


def score_onnx(
    spec: TaskSpec,
    onnx_path: str | Path,
    folder: str | Path,
    data_root: str | Path = DEFAULT_DATA_ROOT,
    split: str = "dev",
    *,
    threads: int = 0,
) -> tuple[dict[str, float], list[Any]]:
    """Scores (metrics.py scale) and predictions of the graph on `split` of `spec`; `folder` is the
    fine-tuned folder the graph came from, for its tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    kind = task_kind(spec, tokenizer, resolve_labels(spec, data_root))
    _check_task(spec, read_metadata(onnx_path), kind.head_config().get("id2label"), onnx_path)
    examples, report = read_split(spec, split, data_root)
    if not examples:
        raise ValueError(f"{spec.name}: the {split} split has no usable examples ({report.summary()})")
    model = OnnxTaskModel(onnx_path, threads)
    predictions = kind.predict(model, kind.encode(examples, train=False), examples)
    return kind.score(predictions, examples), predictions


def _check_task(
    spec: TaskSpec, metadata: ExportMetadata, id2label: dict[int, str] | None, onnx_path: str | Path
) -> None:
    """A graph of another head or other labels would score silently wrong: refuse it."""
    if metadata.head != HEAD_OF_TASK[spec.type]:
        raise ValueError(f"{onnx_path}: a {metadata.head} graph cannot score {spec.type} task {spec.name}")
    if id2label is not None and metadata.labels != {str(i): label for i, label in id2label.items()}:
        raise ValueError(
            f"{onnx_path}: the graph's labels {metadata.labels} are not task {spec.name}'s {id2label}"
        )


@dataclass(frozen=True)
class ScoreDelta:
    """Task scores of a reference graph (fp32) and a candidate (int8) on the same examples."""

    task: str
    split: str
    examples: int
    reference: dict[str, float]
    candidate: dict[str, float]
    changed_predictions: int

    @property
    def delta(self) -> dict[str, float]:
        """candidate - reference per metric (negative: the candidate lost)."""
        return {name: self.candidate[name] - value for name, value in self.reference.items()}


def score_delta(
    spec: TaskSpec,
    reference_onnx: str | Path,
    candidate_onnx: str | Path,
    folder: str | Path,
    data_root: str | Path = DEFAULT_DATA_ROOT,
    split: str = "dev",
    *,
    threads: int = 0,
) -> ScoreDelta:
    """Score both graphs on `split` and count the examples whose prediction changed."""
    reference, reference_predictions = score_onnx(
        spec, reference_onnx, folder, data_root, split, threads=threads
    )
    candidate, candidate_predictions = score_onnx(
        spec, candidate_onnx, folder, data_root, split, threads=threads
    )
    changed = sum(a != b for a, b in zip(reference_predictions, candidate_predictions))
    return ScoreDelta(spec.name, split, len(reference_predictions), reference, candidate, changed)
