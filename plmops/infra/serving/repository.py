"""Write a Triton model repository for exported plmops models, on local disk or S3.

Each served model `NAME` becomes four Triton models, chained by an ensemble so that a plain HTTP or
gRPC client sends raw text and gets labels, entities or answer spans back:

    NAME             ensemble: TEXT [, TEXT_PAIR] or QUESTION + CONTEXT  ->  task outputs + TRUNCATED
    NAME_preprocess  Python backend: tokenises with the model's own tokenizer.json (shipped alongside)
    NAME_onnx        the exported model.onnx: ONNX Runtime backend with dynamic batching (variant
                     "onnxruntime", production, optionally TensorRT on GPU), or a Python-backend model
                     that runs the same file with onnxruntime (variant "portable", for Triton builds
                     with only the Python backend, such as the one nvidia-pytriton ships)
    NAME_postprocess Python backend: logits to answers, through the tokens' character offsets

The ensemble and the pre/post steps take whole requests (max_batch_size 0: a request of n texts has
shape [n]); the ONNX step batches rows across concurrent requests. Input and output names, ranks and
fixed sizes of the ONNX step are read from the graph itself. Every config.pbtxt is rendered through
Triton's protobuf schema (see config.py). The source is an export folder: model.onnx (plus external
data files), config.json (architectures, id2label, max_position_embeddings) and tokenizer.json with
tokenizer_config.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import onnx
from onnx.external_data_helper import uses_external_data

from plmops.infra.serving.config import (
    DataType,
    DynamicBatching,
    EnsembleStep,
    InstanceGroup,
    ShapeProfile,
    TensorRTAccelerator,
    TensorSpec,
    TritonModelConfig,
    check_name,
)
from plmops.infra.storage import Storage, open_storage

logger = logging.getLogger(__name__)

Task = Literal["sequence-classification", "token-classification", "question-answering"]
Variant = Literal["onnxruntime", "portable"]
Truncation = Literal["truncate", "reject"]

BACKEND_SOURCES = Path(__file__).resolve().parent / "backend"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Per task: the graph outputs we serve, each with its rank including the batch axis.
MODEL_OUTPUTS: dict[str, dict[str, int]] = {
    "sequence-classification": {"logits": 2},
    "token-classification": {"logits": 3},
    "question-answering": {"start_logits": 2, "end_logits": 2},
}
_ARCHITECTURE_TASKS = {
    "ForSequenceClassification": "sequence-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
}
_ONNX_TYPES: dict[int, DataType] = {
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
}
MAX_QUERY_LENGTH = 64  # as plmops.platform.finetune.qa.max_query_length


class RepositoryError(ValueError):
    """An export folder or a serving option cannot make a working repository; the message says which."""


@dataclass(frozen=True)
class ServedModel:
    """One exported model to serve under `name` (the ensemble clients call).

    `max_length` defaults to the smaller of the tokenizer's model_max_length and the model's
    max_position_embeddings. `truncation` says what happens to a longer text: "truncate" cuts it and
    reports TRUNCATED=true for it, "reject" answers the request with an error naming the text. For
    question answering only the question is ever cut (to `max_query_length` tokens); passages are split
    into windows sharing `doc_stride` tokens. `text_pair` serves a sentence-pair classifier (inputs
    TEXT and TEXT_PAIR). `intra_op_threads` (0: ONNX Runtime's default) applies to both variants.
    """

    name: str
    source: str | Path
    task: Task | None = None
    version: int = 1
    max_batch_size: int = 32
    dynamic_batching: DynamicBatching = field(default_factory=DynamicBatching)
    instances: InstanceGroup = field(default_factory=InstanceGroup)
    tensorrt: TensorRTAccelerator | None = None
    max_length: int | None = None
    truncation: Truncation = "truncate"
    text_pair: bool = False
    doc_stride: int | None = None
    max_query_length: int | None = None
    max_answer_length: int = 30
    n_best: int = 20
    intra_op_threads: int = 0
    onnx_file: str = "model.onnx"

    def __post_init__(self) -> None:
        check_name(self.name, "served model name")
        if self.version < 1 or self.max_batch_size < 1:
            raise RepositoryError(f"{self.name}: need version >= 1 and max_batch_size >= 1")
        if self.truncation not in ("truncate", "reject"):
            raise RepositoryError(f"{self.name}: truncation must be 'truncate' or 'reject', got {self.truncation!r}")
        if self.max_answer_length < 1 or self.n_best < 1 or self.intra_op_threads < 0:
            raise RepositoryError(f"{self.name}: need max_answer_length >= 1, n_best >= 1, intra_op_threads >= 0")


@dataclass(frozen=True)
class ExportedModel:
    """What a repository needs to know about an export folder."""

    folder: Path
    task: Task
    inputs: tuple[TensorSpec, ...]  # graph inputs, batch axis excluded
    outputs: tuple[TensorSpec, ...]  # served graph outputs, batch axis excluded
    onnx_files: tuple[str, ...]  # the graph, then its external data files (relative names)
    tokenizer_files: tuple[str, ...]
    id2label: tuple[str, ...]
    max_length: int  # the most tokens the model and tokenizer accept
    pad_token: str


# ---------------------------------------------------------------------------------------------- reading


def inspect_export(folder: str | Path, task: Task | None = None, onnx_file: str = "model.onnx") -> ExportedModel:
    """Read an export folder and check it can be served; every problem names the file."""
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    task = task or _task_from_architectures(config, folder / "config.json")
    if task not in MODEL_OUTPUTS:
        raise RepositoryError(f"{folder}: unknown task {task!r}; expected one of {sorted(MODEL_OUTPUTS)}")
    graph_path = folder / onnx_file
    if not graph_path.is_file():
        raise RepositoryError(f"{graph_path}: no ONNX model here (export it first)")
    graph = onnx.load(str(graph_path), load_external_data=False)
    inputs = _graph_inputs(graph, graph_path)
    outputs = _graph_outputs(graph, graph_path, task)
    tokenizer_config = _read_json(folder / "tokenizer_config.json")
    if not (folder / "tokenizer.json").is_file():
        raise RepositoryError(f"{folder / 'tokenizer.json'}: missing; the server tokenises with it")
    return ExportedModel(
        folder=folder,
        task=task,
        inputs=inputs,
        outputs=outputs,
        onnx_files=(onnx_file, *_external_files(graph)),
        tokenizer_files=tuple(name for name in TOKENIZER_FILES if (folder / name).is_file()),
        id2label=_labels(config, task, folder / "config.json"),
        max_length=_max_length(config, tokenizer_config),
        pad_token=str(tokenizer_config.get("pad_token") or "[PAD]"),
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RepositoryError(f"{path}: missing from the export folder") from None
    except json.JSONDecodeError as err:
        raise RepositoryError(f"{path}: invalid JSON: {err}") from None


def _task_from_architectures(config: dict, where: Path) -> Task:
    for architecture in config.get("architectures") or []:
        for suffix, task in _ARCHITECTURE_TASKS.items():
            if architecture.endswith(suffix):
                return task  # type: ignore[return-value]
    raise RepositoryError(
        f"{where}: cannot tell the task from architectures {config.get('architectures')}; pass task explicitly"
    )


def _labels(config: dict, task: Task, where: Path) -> tuple[str, ...]:
    if task == "question-answering":
        return ()
    if config.get("problem_type") not in (None, "single_label_classification"):
        raise RepositoryError(f"{where}: problem_type {config['problem_type']!r} is not served (single-label only)")
    id2label = config.get("id2label") or {}
    try:
        ids = sorted(int(i) for i in id2label)
    except ValueError:
        raise RepositoryError(f"{where}: id2label keys must be integers, got {sorted(id2label)}") from None
    if not ids or ids != list(range(len(ids))):
        raise RepositoryError(f"{where}: id2label must map 0..n-1 to labels, got keys {ids}")
    return tuple(str(id2label[str(i)]) for i in ids)


def _max_length(config: dict, tokenizer_config: dict) -> int:
    limits = [config.get("max_position_embeddings"), tokenizer_config.get("model_max_length")]
    usable = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < 1e9]
    return min(usable) if usable else 512


def _dims(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    """Dims after the batch axis (-1 where symbolic), or None when the graph records no shape."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return tuple(dims[1:]) if dims else ()


def _data_type(value: onnx.ValueInfoProto, where: Path) -> DataType:
    elem = value.type.tensor_type.elem_type
    if elem not in _ONNX_TYPES:
        raise RepositoryError(f"{where}: tensor {value.name} has ONNX element type {elem}, which is not served")
    return _ONNX_TYPES[elem]


def _graph_inputs(graph: onnx.ModelProto, where: Path) -> tuple[TensorSpec, ...]:
    initializers = {t.name for t in graph.graph.initializer}
    specs = []
    for value in graph.graph.input:
        if value.name in initializers:
            continue
        if value.name not in MODEL_INPUTS:
            raise RepositoryError(f"{where}: unexpected graph input {value.name!r}; the server feeds {MODEL_INPUTS}")
        if _data_type(value, where) != "INT64":
            raise RepositoryError(f"{where}: graph input {value.name} must be int64")
        specs.append(TensorSpec(value.name, "INT64", (-1,)))
    if not any(s.name == "input_ids" for s in specs):
        raise RepositoryError(f"{where}: the graph has no input_ids input")
    return tuple(specs)


def _graph_outputs(graph: onnx.ModelProto, where: Path, task: Task) -> tuple[TensorSpec, ...]:
    found = {value.name: value for value in graph.graph.output}
    specs = []
    for name, rank in MODEL_OUTPUTS[task].items():
        if name not in found:
            raise RepositoryError(f"{where}: a {task} graph must have output {name!r}, found {sorted(found)}")
        dims = _dims(found[name])
        if dims is not None and len(dims) != rank - 1:
            raise RepositoryError(f"{where}: output {name} has rank {len(dims) + 1}, a {task} model gives {rank}")
        specs.append(TensorSpec(name, _data_type(found[name], where), dims or (-1,) * (rank - 1)))
    return tuple(specs)


def _external_files(graph: onnx.ModelProto) -> list[str]:
    names = {
        entry.value
        for tensor in graph.graph.initializer
        if uses_external_data(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return sorted(names)


# ---------------------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class _Io:
    """The tensors a task's ensemble exchanges with clients and between its steps."""

    client_inputs: tuple[str, ...]
    pre_outputs: dict[str, tuple[DataType, tuple[int, ...]]]  # besides the model inputs
    post_inputs: dict[str, tuple[DataType, tuple[int, ...]]]  # besides the model outputs
    post_outputs: dict[str, tuple[DataType, tuple[int, ...]]]


def _io(task: Task, text_pair: bool) -> _Io:
    truncated = {"TRUNCATED": ("BOOL", (-1,))}
    if task == "sequence-classification":
        return _Io(
            ("TEXT", "TEXT_PAIR") if text_pair else ("TEXT",),
            truncated,
            {},
            {"LABEL": ("STRING", (-1,)), "SCORE": ("FP32", (-1,)), "PROBABILITIES": ("FP32", (-1, -1))},
        )
    if task == "token-classification":
        spans = {"OFFSETS": ("INT64", (-1, -1, 2)), "WORD_IDS": ("INT64", (-1, -1))}
        return _Io(("TEXT",), {**spans, **truncated}, {**spans, "TEXT": ("STRING", (-1,))},
                   {"TAGS": ("STRING", (-1,)), "ENTITIES": ("STRING", (-1,))})
    spans = {"OFFSETS": ("INT64", (-1, -1, 2)), "ROW_OWNER": ("INT64", (-1,))}
    return _Io(("QUESTION", "CONTEXT"), {**spans, **truncated}, {**spans, "CONTEXT": ("STRING", (-1,))},
               {"ANSWER": ("STRING", (-1,)), "ANSWER_START": ("INT64", (-1,)), "ANSWER_END": ("INT64", (-1,)),
                "SCORE": ("FP32", (-1,))})


def _specs(tensors: Mapping[str, tuple[DataType, tuple[int, ...]]]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, dtype, dims) for name, (dtype, dims) in tensors.items())


def _unbatched(specs: Iterable[TensorSpec]) -> tuple[TensorSpec, ...]:
    """The same tensors as a max_batch_size-0 model sees them: the batch axis written out."""
    return tuple(TensorSpec(s.name, s.data_type, (-1, *s.dims)) for s in specs)


def _text_limits(served: ServedModel, exported: ExportedModel) -> tuple[int, int, int]:
    """(max_length, max_query_length, doc_stride). The question limit defaults as in the fine-tuning
    code (qa.max_query_length); the stride to its default 128, at most a quarter of the window."""
    max_length = served.max_length or exported.max_length
    if max_length > exported.max_length:
        raise RepositoryError(
            f"{served.name}: max_length {max_length} exceeds what {exported.folder} accepts ({exported.max_length})"
        )
    max_query = served.max_query_length or max(1, min(MAX_QUERY_LENGTH, max_length // 4))
    stride = served.doc_stride if served.doc_stride is not None else min(128, max_length // 4)
    return max_length, max_query, stride


def model_configs(served: ServedModel, exported: ExportedModel, variant: Variant) -> list[TritonModelConfig]:
    """The ensemble, preprocess, ONNX and postprocess configs of one served model, in that order."""
    if variant not in ("onnxruntime", "portable"):
        raise RepositoryError(f"unknown repository variant {variant!r}; expected 'onnxruntime' or 'portable'")
    if served.text_pair and exported.task != "sequence-classification":
        raise RepositoryError(f"{served.name}: text_pair applies to sequence classification only")
    io = _io(exported.task, served.text_pair)
    pre, onnx_step, post = (f"{served.name}_{step}" for step in ("preprocess", "onnx", "postprocess"))
    model_inputs = [s.name for s in exported.inputs]
    model_outputs = {s.name: s.name.upper() for s in exported.outputs}
    max_length, max_query, stride = _text_limits(served, exported)
    texts = _specs({name: ("STRING", (-1,)) for name in io.client_inputs})
    pre_outputs = (*_unbatched(TensorSpec(n, "INT64", (-1,)) for n in MODEL_INPUTS), *_specs(io.pre_outputs))
    preprocess = TritonModelConfig(
        name=pre, backend="python", inputs=texts, outputs=pre_outputs,
        instance_groups=(InstanceGroup("cpu", served.instances.count),),
        parameters={
            "task": exported.task, "inputs": ",".join(io.client_inputs), "max_length": str(max_length),
            "truncation": served.truncation, "doc_stride": str(stride), "max_query_length": str(max_query),
            "max_rows": str(served.max_batch_size), "pad_token": exported.pad_token,
        },
    )
    postprocess = TritonModelConfig(
        name=post, backend="python",
        inputs=(*_unbatched([TensorSpec(model_outputs[s.name], s.data_type, s.dims) for s in exported.outputs]),
                *_specs(io.post_inputs)),
        outputs=_specs(io.post_outputs),
        instance_groups=(InstanceGroup("cpu", served.instances.count),),
        parameters={"task": exported.task, "id2label": json.dumps(list(exported.id2label), ensure_ascii=False),
                    "n_best": str(served.n_best), "max_answer_length": str(served.max_answer_length)},
    )
    ensemble_outputs = {**io.post_outputs, **{k: v for k, v in io.pre_outputs.items() if k == "TRUNCATED"}}
    ensemble = TritonModelConfig(
        name=served.name, platform="ensemble", inputs=texts, outputs=_specs(ensemble_outputs),
        parameters={"task": exported.task, "max_length": str(max_length), "truncation": served.truncation,
                    "variant": variant},
        ensemble_steps=(
            EnsembleStep(pre, {n: n for n in io.client_inputs},
                         {n: n for n in (*model_inputs, *io.pre_outputs)}),
            EnsembleStep(onnx_step, {n: n for n in model_inputs}, {n: n for n in model_outputs}),
            EnsembleStep(post, {**{upper: name for name, upper in model_outputs.items()},
                                **{n: n for n in io.post_inputs}},
                         {n: n for n in io.post_outputs}),
        ),
    )
    return [ensemble, preprocess, _onnx_config(served, exported, onnx_step, variant), postprocess]


def _onnx_config(served: ServedModel, exported: ExportedModel, name: str, variant: Variant) -> TritonModelConfig:
    common = {
        "name": name, "inputs": exported.inputs, "outputs": exported.outputs,
        "max_batch_size": served.max_batch_size, "dynamic_batching": served.dynamic_batching,
        "instance_groups": (served.instances,),
    }
    threads = {"intra_op_thread_count": str(served.intra_op_threads)} if served.intra_op_threads else {}
    if variant == "onnxruntime":
        tensorrt = served.tensorrt
        if tensorrt is not None and tensorrt.shape_profile is None:
            max_length = _text_limits(served, exported)[0]
            profile = ShapeProfile(tuple(s.name for s in exported.inputs), (1, 1),
                                   (max(1, served.max_batch_size // 2), max_length // 2 or 1),
                                   (served.max_batch_size, max_length))
            tensorrt = replace(tensorrt, shape_profile=profile)
        return TritonModelConfig(platform="onnxruntime_onnx", tensorrt=tensorrt, parameters=threads, **common)
    per_token = [] if exported.task == "sequence-classification" else [s.name for s in exported.outputs]
    return TritonModelConfig(
        backend="python",
        parameters={"onnx_file": "model.onnx", "sequence_outputs": ",".join(per_token), **threads},
        **common,
    )


# ---------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class WrittenModel:
    name: str  # the ensemble clients call
    task: Task
    models: tuple[str, ...]  # every Triton model written for it
    keys: tuple[str, ...]  # every object written, relative to the repository root


def write_repository(models: Sequence[ServedModel], uri: str | Path, *, variant: Variant = "onnxruntime") -> list[WrittenModel]:
    """Write (or replace) the served models under `uri`: a local folder, file:// or s3:// URI.

    A model's old files are removed first and its config.pbtxt is written last, the ensemble after
    its steps, so a server polling the repository never loads a half-written model. The TensorRT accelerator applies to the
    "onnxruntime" variant only; "portable" runs the ONNX file with onnxruntime in a Python model.
    """
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise RepositoryError(f"served model names must be distinct, got {names}")
    plans = []
    for served in models:  # every export is checked before anything is written
        exported = inspect_export(served.source, served.task, served.onnx_file)
        plans.append((served, exported, model_configs(served, exported, variant)))
        if served.tensorrt is not None and variant == "portable":
            logger.warning("%s: the TensorRT accelerator is ignored in the portable variant", served.name)
    storage = open_storage(str(uri))
    return [_write_model(storage, *plan, variant) for plan in plans]


def _write_model(
    storage: Storage, served: ServedModel, exported: ExportedModel, configs: list[TritonModelConfig], variant: Variant
) -> WrittenModel:
    keys = []
    pairs = list(zip(configs, _version_files(exported, variant)))
    for config, files in [*pairs[1:], pairs[0]]:  # the ensemble last: its steps exist when it appears
        storage.delete_prefix(f"{config.name}/")
        for relative, data in files.items():
            key = f"{config.name}/{served.version}/{relative}"
            storage.write_bytes(key, data)
            keys.append(key)
        storage.write_bytes(f"{config.name}/config.pbtxt", config.to_pbtxt().encode("utf-8"))
        keys.append(f"{config.name}/config.pbtxt")
    logger.info("wrote Triton models %s (%s, %s variant) to %s", [c.name for c in configs], exported.task,
                variant, storage.root)
    return WrittenModel(served.name, exported.task, tuple(c.name for c in configs), tuple(keys))


def _version_files(exported: ExportedModel, variant: Variant) -> list[dict[str, bytes]]:
    """Files of each version folder, in model_configs' order (ensemble, pre, onnx, post)."""
    text_logic = (BACKEND_SOURCES / "plmops_text.py").read_bytes()
    tokenizer = {name: (exported.folder / name).read_bytes() for name in exported.tokenizer_files}
    onnx_files = {name: (exported.folder / name).read_bytes() for name in exported.onnx_files[1:]}
    onnx_files["model.onnx"] = (exported.folder / exported.onnx_files[0]).read_bytes()
    if variant == "portable":
        onnx_files |= {"model.py": (BACKEND_SOURCES / "onnx_runner.py").read_bytes(), "plmops_text.py": text_logic}
    return [
        # An ensemble has no files, but Triton needs its version folder, and object stores have no
        # empty folders: a small marker keeps it.
        {"ENSEMBLE": b"This version folder is intentionally empty: the model is a Triton ensemble.\n"},
        {"model.py": (BACKEND_SOURCES / "preprocess.py").read_bytes(), "plmops_text.py": text_logic, **tokenizer},
        onnx_files,
        {"model.py": (BACKEND_SOURCES / "postprocess.py").read_bytes(), "plmops_text.py": text_logic},
    ]
