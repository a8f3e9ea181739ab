"""Fine-tuned task folder → ONNX graph that provably computes what the PyTorch model computes.

    report = export_onnx("runs/ft/tnews", "export/tnews/model.onnx", texts=dev_titles[:16])

The folder's config.json names the head (`architectures`, as save_pretrained writes it); the matching
Auto class loads it, so plmops and BERT folders both export, pruned shapes included (the config
records every layer's heads and feed-forward width). The graph takes `input_ids`, `attention_mask`
and `token_type_ids` (int64, [batch, sequence]) and returns `logits` (classification heads) or
`start_logits` and `end_logits` (QA), with batch and sequence dynamic.

Why the dynamo exporter (`torch.onnx.export(..., dynamo=True)`): the TorchScript one traces this
encoder into a graph that is off by ~1e-2 even at the traced shape (measured; see docs/export.md),
and a wrong graph that loads fine is the worst outcome. Nothing is trusted without checks: the
graph passes `onnx.checker` (full check), then runs in ONNX Runtime on the given real texts at shapes
other than the one exported (the whole padded batch, and each text alone at its own length) and is
compared with PyTorch output by output. A difference over `tolerance` raises `ParityError` and
leaves no file behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

import plmops.platform.models  # registers the plmops model with the Auto classes
import plmops.platform.tokenization  # noqa: F401  (registers PlmopsTokenizer with AutoTokenizer)
from plmops.platform.export.metadata import export_metadata

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_OPSET = 20  # GELU as one node: 2-9% faster on CPU than opset 18's Erf arithmetic (docs/export.md)
DEFAULT_TOLERANCE = 1e-4
TextInput = str | tuple[str, str]  # a text, or a pair (premise/hypothesis, question/context)


class ExportError(ValueError):
    """The folder or the inputs cannot be exported; the message names the file and the problem."""


class ParityError(ExportError):
    """The ONNX graph's outputs differ from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class TaskHead:
    """An exportable head: the architecture suffix that names it, its Auto class and graph outputs."""

    name: str
    suffix: str
    auto_model: Any
    outputs: tuple[str, ...]


HEADS = (
    TaskHead(
        "sequence_classification",
        "ForSequenceClassification",
        AutoModelForSequenceClassification,
        ("logits",),
    ),
    TaskHead("token_classification", "ForTokenClassification", AutoModelForTokenClassification, ("logits",)),
    TaskHead(
        "question_answering",
        "ForQuestionAnswering",
        AutoModelForQuestionAnswering,
        ("start_logits", "end_logits"),
    ),
)


@dataclass(frozen=True)
class ParityResult:
    """Largest |ONNX - PyTorch| per output over every checked batch, and those batches' shapes."""

    max_abs_diff: dict[str, float]
    shapes: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ExportReport:
    """What was written and the evidence that it is right; `export_seconds` covers export, checker and
    parity."""

    onnx_path: Path
    metadata_path: Path
    head: str
    architecture: str
    opset: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    max_length: int
    export_shape: tuple[int, int]  # (batch, sequence) of the example the graph was exported with
    parity: ParityResult
    tolerance: float
    size_bytes: int
    export_seconds: float

    @property
    def max_abs_diff(self) -> float:
        return max(self.parity.max_abs_diff.values())


def task_head(folder: str | Path) -> tuple[TaskHead, str]:
    """The head `folder` holds, from config.json's `architectures`, and that architecture's name."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ExportError(f"{path}: not found; export needs a folder written by save_pretrained")
    architectures = AutoConfig.from_pretrained(folder).architectures
    if not architectures:
        raise ExportError(
            f"{path}: no `architectures`, so the task head is unknown; save the fine-tuned model with "
            "save_pretrained (run_task does)"
        )
    if len(architectures) != 1:
        raise ExportError(f"{path}: architectures lists {architectures}; a task folder holds one model")
    for head in HEADS:
        if architectures[0].endswith(head.suffix):
            return head, architectures[0]
    supported = ", ".join(f"*{h.suffix}" for h in HEADS)
    raise ExportError(f"{path}: architecture {architectures[0]} is not an exportable task head ({supported})")


def load_task_model(folder: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, TaskHead]:
    """The folder's model (eval mode, fp32, CPU), its tokenizer and its head."""
    head, _ = task_head(folder)
    model = head.auto_model.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder), head


def encode_inputs(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[TextInput], max_length: int
) -> dict[str, np.ndarray]:
    """The graph's three int64 inputs for `texts`, padded to the longest and cut at `max_length`."""
    if not texts:
        raise ExportError("no input texts: parity is checked on real inputs, give at least one")
    pairs = [isinstance(t, tuple) for t in texts]
    if any(pairs) and not all(pairs):
        raise ExportError("texts mix single texts and pairs; give one kind (pairs for pair tasks and QA)")
    firsts = [t[0] if isinstance(t, tuple) else t for t in texts]
    seconds = [t[1] for t in texts] if all(pairs) else None
    encoded = tokenizer(
        firsts,
        seconds,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_token_type_ids=True,
        return_tensors="np",
    )
    return {name: encoded[name].astype(np.int64) for name in INPUT_NAMES}


class ServingSignature(nn.Module):
    """The model as a server calls it: the three input tensors in, the head's outputs as a tuple out."""

    def __init__(self, model: PreTrainedModel, outputs: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.outputs = tuple(outputs)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        result = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return tuple(result[name] for name in self.outputs)


def export_onnx(
    folder: str | Path,
    output_path: str | Path,
    texts: Sequence[TextInput],
    *,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    max_length: int | None = None,
) -> ExportReport:
    """Export the task model of `folder` to `output_path` (+ its metadata JSON) and prove parity.

    `texts` are real inputs (pairs for pair tasks and QA): the first two rows are the export example,
    and every text is checked at other shapes too. `max_length` defaults to the model's position table
    (or the tokenizer's limit if shorter).
    """
    output_path = Path(output_path)
    model, tokenizer, head = load_task_model(folder)
    max_length = _max_length(model, tokenizer, max_length, folder)
    inputs = encode_inputs(tokenizer, texts, max_length)
    signature = ServingSignature(model, head.outputs).eval()
    example = _export_example(inputs)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(output_path.name + ".partial")
    start = time.perf_counter()
    try:
        _export(signature, example, head, opset, max_length, partial)
        onnx.checker.check_model(str(partial), full_check=True)
        parity = check_parity(signature, partial, parity_batches(inputs), tolerance)
    except Exception:
        partial.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    os.replace(partial, output_path)
    meta = export_metadata(
        output_path,
        model.config,
        head.name,
        max_length=max_length,
        pad_token_id=tokenizer.pad_token_id,
        source=folder,
    )
    return ExportReport(
        onnx_path=output_path,
        metadata_path=meta,
        head=head.name,
        architecture=type(model).__name__,
        opset=opset,
        input_names=INPUT_NAMES,
        output_names=head.outputs,
        max_length=max_length,
        export_shape=tuple(example["input_ids"].shape),
        parity=parity,
        tolerance=tolerance,
        size_bytes=output_path.stat().st_size,
        export_seconds=seconds,
    )


def _max_length(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, requested: int | None, folder: str | Path
) -> int:
    limit = model.config.max_position_embeddings
    if tokenizer.model_max_length and tokenizer.model_max_length < limit:
        limit = tokenizer.model_max_length
    if requested is None:
        return limit
    if not 2 <= requested <= limit:
        raise ExportError(
            f"{folder}: max_length {requested} must lie in [2, {limit}] (positions/tokenizer limit)"
        )
    return requested


def _export_example(inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Two rows to export with: torch.export fixes an axis whose example size is 1, so a single text is
    repeated."""
    rows = np.arange(2) % len(inputs["input_ids"])
    return {name: torch.from_numpy(values[rows]) for name, values in inputs.items()}


def _export(
    signature: ServingSignature,
    example: dict[str, torch.Tensor],
    head: TaskHead,
    opset: int,
    max_length: int,
    path: Path,
) -> None:
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=max_length)
    try:
        program = torch.onnx.export(
            signature,
            tuple(example[name] for name in INPUT_NAMES),
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=list(head.outputs),
            dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUT_NAMES},
            opset_version=opset,
            verbose=False,
        )
    except Exception as error:  # the exporter raises many types; the cause stays chained
        raise ExportError(
            f"torch.onnx.export failed for {type(signature.model).__name__}: {error}"
        ) from error
    proto = program.model_proto
    _strip_debug_info(proto)
    proto.metadata_props.add(key="plmops.head", value=head.name)
    onnx.save_model(proto, str(path))


def _strip_debug_info(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node stack traces and fx names: a third of a small model's file, and they
    carry this machine's source paths into a served artifact."""
    for node in model.graph.node:
        del node.metadata_props[:]
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info, *model.graph.initializer):
        del value.metadata_props[:]


def parity_batches(inputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The padded batch as given, then each row alone at its own length: batch and sequence sizes the
    export example did not have, and rows without padding next to rows with it."""
    batches = [inputs]
    for row, mask in enumerate(inputs["attention_mask"]):
        keep = mask.astype(bool)
        batches.append({name: values[row : row + 1, keep] for name, values in inputs.items()})
    return batches


def check_parity(
    module: nn.Module,
    onnx_path: str | Path,
    batches: Sequence[dict[str, np.ndarray]],
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityResult:
    """Run `module` (PyTorch, outputs as a tuple) and the ONNX graph on every batch; raise ParityError
    naming the output, batch shape and difference when any |difference| exceeds `tolerance` (NaN
    included). The graph runs with ONNX Runtime's default (every optimisation on), as most servers
    will run it."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    worst = dict.fromkeys(names, 0.0)
    for batch in batches:
        with torch.no_grad():
            expected = module(*(torch.from_numpy(batch[name]) for name in INPUT_NAMES))
        got = session.run(names, {i.name: batch[i.name] for i in session.get_inputs()})
        for name, want, have in zip(names, expected, got):
            diff = float(np.max(np.abs(want.numpy() - have))) if have.size else 0.0
            if not diff <= tolerance:
                shape = tuple(batch["input_ids"].shape)
                raise ParityError(
                    f"{onnx_path}: output {name} differs from PyTorch by {diff:.3g} (> {tolerance:g}) on a "
                    f"batch of shape {shape}; the graph does not compute what the model computes"
                )
            worst[name] = max(worst[name], diff)
    return ParityResult(worst, tuple(tuple(b["input_ids"].shape) for b in batches))
