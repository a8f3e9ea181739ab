"""The JSON sidecar of an exported ONNX file: what a server or client needs without opening the graph.

`model.onnx` gets `model.json` beside it (`metadata_path`). The fields (format_version 1):

- `onnx_file`: the graph's file name, relative to the JSON.
- `head`: `sequence_classification`, `token_classification` or `question_answering`.
- `architecture`, `model_type`: from the fine-tuned folder's config.json.
- `precision`: `fp32` or `int8` (weights; dynamic quantisation keeps fp32 inputs and outputs).
- `graph_optimization`: ONNX Runtime level already applied offline: `none`, `basic`, `extended`, `all`.
- `opset`, `ir_version`: of the default ONNX domain; a runtime must support both.
- `inputs`, `outputs`: per tensor `name`, `dtype` (numpy name: `int64`, `float32`), `shape` (axis names
  for dynamic axes, numbers for fixed ones, batch first) and `dims` (the same with -1 for every dynamic
  axis, as Triton's config.pbtxt writes them; drop the first entry when the model batches).
- `max_length`: the longest sequence the model accepts (its position table, or the tokenizer's limit if
  shorter); longer inputs fail in the runtime.
- `vocab_size`, `pad_token_id`: ids a client may send; padding goes with attention_mask 0.
- `labels`: class id (as text) to label for the classification heads, null for QA.
- `problem_type`: the config's (`single_label_classification`, ...), null when unset.
- `source`: the folder the model was exported from (provenance only).
- `producer`: versions of torch, onnx and onnxruntime that wrote the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import helper
from transformers import PreTrainedConfig

METADATA_VERSION = 1
PRECISIONS = ("fp32", "int8")
OPTIMIZATION_LEVELS = ("none", "basic", "extended", "all")


class MetadataError(ValueError):
    """A sidecar that is missing, unreadable or does not describe its graph."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output; `shape` holds axis names where the axis is dynamic."""

    name: str
    dtype: str
    shape: list[str | int]
    dims: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", [-1 if isinstance(d, str) else d for d in self.shape])


@dataclass(frozen=True)
class ExportMetadata:
    """What `metadata_path(onnx_file)` holds; see the module docstring for each field."""

    onnx_file: str
    head: str
    architecture: str
    model_type: str
    precision: str
    graph_optimization: str
    opset: int
    ir_version: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_length: int
    vocab_size: int
    pad_token_id: int
    labels: dict[str, str] | None
    problem_type: str | None
    source: str
    producer: dict[str, str]
    format_version: int = METADATA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportMetadata:
        tensors = {
            key: [TensorSpec(t["name"], t["dtype"], list(t["shape"])) for t in data[key]]
            for key in ("inputs", "outputs")
        }
        return cls(**{**data, **tensors})


def metadata_path(onnx_path: str | Path) -> Path:
    """`model.onnx` → `model.json`: one sidecar per graph file."""
    return Path(onnx_path).with_suffix(".json")


def graph_tensors(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs as the graph declares them (initializers listed as inputs left out)."""
    initializers = {init.name for init in model.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        shape = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
        return TensorSpec(value.name, dtype, shape)

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in model.graph.output]


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the graph imports."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def export_metadata(
    onnx_path: str | Path,
    config: PreTrainedConfig,
    head: str,
    *,
    max_length: int,
    pad_token_id: int,
    source: str | Path,
    precision: str = "fp32",
    graph_optimization: str = "none",
) -> Path:
    """Write the sidecar of a graph exported from a model with `config`; returns its path.

    Names, dtypes and shapes are read from the graph itself, so the file describes what the runtime
    will see, not what the exporter was asked for.
    """
    if precision not in PRECISIONS or graph_optimization not in OPTIMIZATION_LEVELS:
        raise MetadataError(
            f"precision must be one of {PRECISIONS} and graph_optimization one of {OPTIMIZATION_LEVELS}, "
            f"got {precision!r} and {graph_optimization!r}"
        )
    model = onnx.load(str(onnx_path), load_external_data=False)
    inputs, outputs = graph_tensors(model)
    labels = None
    if head != "question_answering":
        labels = {str(i): str(label) for i, label in sorted(config.id2label.items())}
    metadata = ExportMetadata(
        onnx_file=Path(onnx_path).name,
        head=head,
        architecture=(config.architectures or ["?"])[0],
        model_type=config.model_type,
        precision=precision,
        graph_optimization=graph_optimization,
        opset=default_opset(model),
        ir_version=model.ir_version,
        inputs=inputs,
        outputs=outputs,
        max_length=max_length,
        vocab_size=config.vocab_size,
        pad_token_id=pad_token_id,
        labels=labels,
        problem_type=getattr(config, "problem_type", None),
        source=str(source),
        producer=_producer(),
    )
    return write_metadata(onnx_path, metadata)


def _producer() -> dict[str, str]:
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def write_metadata(onnx_path: str | Path, metadata: ExportMetadata) -> Path:
    path = metadata_path(onnx_path)
    path.write_text(metadata.to_json() + "\n", encoding="utf-8")
    return path


def read_metadata(onnx_path: str | Path) -> ExportMetadata:
    """The sidecar of `onnx_path`; a missing or malformed one is an error naming the file."""
    path = metadata_path(onnx_path)
    if not path.is_file():
        raise MetadataError(
            f"{path}: no export metadata beside {Path(onnx_path).name}; export with export_onnx"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        metadata = ExportMetadata.from_dict(data)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise MetadataError(f"{path}: not export metadata ({type(error).__name__}: {error})") from None
    if metadata.format_version != METADATA_VERSION:
        raise MetadataError(
            f"{path}: format_version {metadata.format_version}; this code reads {METADATA_VERSION}"
        )
    return metadata


def derive_metadata(
    source_onnx: str | Path,
    output_onnx: str | Path,
    *,
    precision: str | None = None,
    graph_optimization: str | None = None,
) -> Path:
    """The sidecar of a graph made from `source_onnx` (optimised, quantised): the source's fields, with
    the new file's own tensors, opset and what changed."""
    source = read_metadata(source_onnx)
    model = onnx.load(str(output_onnx), load_external_data=False)
    inputs, outputs = graph_tensors(model)
    derived = replace(
        source,
        onnx_file=Path(output_onnx).name,
        inputs=inputs,
        outputs=outputs,
        opset=default_opset(model),
        ir_version=model.ir_version,
        precision=precision or source.precision,
        graph_optimization=graph_optimization or source.graph_optimization,
        producer=_producer(),
    )
    return write_metadata(output_onnx, derived)
