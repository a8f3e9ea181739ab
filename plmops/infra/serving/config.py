"""Typed Triton model configurations, rendered through Triton's own protobuf schema.

Every `config.pbtxt` we write comes from `TritonModelConfig.to_pbtxt`, which fills a
`model_config_pb2.ModelConfig` message and prints it with protobuf's text format: a field name or an
enum value Triton does not know cannot be written at all, so the files are valid by construction and
`parse_pbtxt` reads them back exactly. The dataclasses check the combinations the schema cannot express
(TensorRT needs GPU instances, dynamic batching needs batching, an ensemble has no instances).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

DataType = Literal["BOOL", "INT32", "INT64", "FP16", "FP32", "FP64", "STRING"]
Precision = Literal["FP32", "FP16", "INT8"]
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"invalid {what} {name!r}: use letters, digits, '_', '.' or '-' (no '/' or spaces)")


@dataclass(frozen=True)
class TensorSpec:
    """An input or output; `dims` exclude the batch dimension when the model batches (-1: any size)."""

    name: str
    data_type: DataType
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        check_name(self.name, "tensor name")
        if not self.dims or any(d == 0 or d < -1 for d in self.dims):
            raise ValueError(f"tensor {self.name}: dims must be non-empty, each -1 or positive, got {self.dims}")

    def fill(self, message: pb.ModelInput | pb.ModelOutput) -> None:
        message.name = self.name
        message.data_type = pb.DataType.Value(f"TYPE_{self.data_type}")
        message.dims.extend(self.dims)


@dataclass(frozen=True)
class DynamicBatching:
    """Requests wait up to `max_queue_delay_microseconds` for others to form a larger batch."""

    max_queue_delay_microseconds: int = 500
    preferred_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_queue_delay_microseconds < 0:
            raise ValueError(f"max_queue_delay_microseconds must be >= 0, got {self.max_queue_delay_microseconds}")
        if any(size < 1 for size in self.preferred_batch_sizes):
            raise ValueError(f"preferred batch sizes must be positive, got {self.preferred_batch_sizes}")


@dataclass(frozen=True)
class InstanceGroup:
    """`count` copies of the model on the CPU, or on each of `gpus` (all visible GPUs when empty)."""

    kind: Literal["cpu", "gpu"] = "cpu"
    count: int = 1
    gpus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(f"instance kind must be 'cpu' or 'gpu', got {self.kind!r}")
        if self.count < 1:
            raise ValueError(f"instance count must be >= 1, got {self.count}")
        if self.gpus and self.kind != "gpu":
            raise ValueError(f"GPU ids {self.gpus} given for a CPU instance group")


@dataclass(frozen=True)
class ShapeProfile:
    """Smallest, most frequent and largest [batch, tokens] of every input, for TensorRT."""

    inputs: tuple[str, ...]
    min_shape: tuple[int, int]
    opt_shape: tuple[int, int]
    max_shape: tuple[int, int]

    def __post_init__(self) -> None:
        ordered = all(a <= b <= c for a, b, c in zip(self.min_shape, self.opt_shape, self.max_shape))
        if not self.inputs or not ordered or min(self.min_shape) < 1:
            raise ValueError(f"shape profile needs inputs and 1 <= min <= opt <= max per axis, got {self}")

    def parameters(self) -> dict[str, str]:
        def shapes(shape: tuple[int, int]) -> str:
            return ",".join(f"{name}:{shape[0]}x{shape[1]}" for name in self.inputs)

        return {
            "trt_profile_min_shapes": shapes(self.min_shape),
            "trt_profile_opt_shapes": shapes(self.opt_shape),
            "trt_profile_max_shapes": shapes(self.max_shape),
        }


@dataclass(frozen=True)
class TensorRTAccelerator:
    """ONNX Runtime's TensorRT execution provider inside Triton's onnxruntime backend (GPU only).

    `engine_cache_path` keeps built engines across restarts. `shape_profile` (inputs as "name:BxS")
    declares the range of input shapes up front, so one engine serves every batch size and sequence
    length; without one, TensorRT rebuilds its engine whenever a larger shape arrives (minutes for a
    BERT-base model). The repository writer fills it from max_batch_size and max_length.
    """

    precision_mode: Precision = "FP16"
    max_workspace_size_bytes: int = 1 << 30
    engine_cache_path: str | None = None
    shape_profile: ShapeProfile | None = None

    def __post_init__(self) -> None:
        if self.precision_mode not in ("FP32", "FP16", "INT8"):
            raise ValueError(f"TensorRT precision_mode must be FP32, FP16 or INT8, got {self.precision_mode!r}")
        if self.max_workspace_size_bytes < 1:
            raise ValueError(f"max_workspace_size_bytes must be positive, got {self.max_workspace_size_bytes}")

    def parameters(self) -> dict[str, str]:
        params = {
            "precision_mode": self.precision_mode,
            "max_workspace_size_bytes": str(self.max_workspace_size_bytes),
        }
        if self.engine_cache_path:
            params |= {"trt_engine_cache_enable": "1", "trt_engine_cache_path": self.engine_cache_path}
        if self.shape_profile is not None:
            params |= self.shape_profile.parameters()
        return params


@dataclass(frozen=True)
class EnsembleStep:
    """One model of an ensemble: `input_map` maps the model's input names to ensemble tensor names,
    `output_map` its output names to ensemble tensor names."""

    model_name: str
    input_map: Mapping[str, str]
    output_map: Mapping[str, str]


@dataclass(frozen=True)
class TritonModelConfig:
    """One model's `config.pbtxt`. Exactly one of `platform` ("onnxruntime_onnx", "ensemble") and
    `backend` ("python") is set; `parameters` become string parameters the model reads at load time."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    platform: str | None = None
    backend: str | None = None
    dynamic_batching: DynamicBatching | None = None
    instance_groups: tuple[InstanceGroup, ...] = ()
    tensorrt: TensorRTAccelerator | None = None
    ensemble_steps: tuple[EnsembleStep, ...] = ()
    parameters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name, "model name")
        where = f"model {self.name}"
        if (self.platform is None) == (self.backend is None):
            raise ValueError(f"{where}: set exactly one of platform and backend")
        if self.max_batch_size < 0:
            raise ValueError(f"{where}: max_batch_size must be >= 0, got {self.max_batch_size}")
        if not self.inputs or not self.outputs:
            raise ValueError(f"{where}: a model needs at least one input and one output")
        self._check_batching(where)
        self._check_accelerator(where)
        self._check_ensemble(where)

    def _check_batching(self, where: str) -> None:
        batching = self.dynamic_batching
        if batching is None:
            return
        if self.max_batch_size == 0:
            raise ValueError(f"{where}: dynamic batching needs max_batch_size > 0")
        too_big = [s for s in batching.preferred_batch_sizes if s > self.max_batch_size]
        if too_big:
            raise ValueError(f"{where}: preferred batch sizes {too_big} exceed max_batch_size {self.max_batch_size}")

    def _check_accelerator(self, where: str) -> None:
        if self.tensorrt is None:
            return
        if self.platform != "onnxruntime_onnx":
            raise ValueError(f"{where}: the TensorRT accelerator exists only for platform onnxruntime_onnx")
        if not self.instance_groups or any(g.kind != "gpu" for g in self.instance_groups):
            raise ValueError(f"{where}: the TensorRT accelerator needs GPU instance groups only")

    def _check_ensemble(self, where: str) -> None:
        is_ensemble = self.platform == "ensemble"
        if is_ensemble != bool(self.ensemble_steps):
            raise ValueError(f"{where}: ensemble steps are required for, and only for, platform ensemble")
        if is_ensemble and (self.instance_groups or self.dynamic_batching):
            raise ValueError(f"{where}: an ensemble has no instance groups or dynamic batching of its own")

    def to_proto(self) -> pb.ModelConfig:
        config = pb.ModelConfig(name=self.name, max_batch_size=self.max_batch_size)
        if self.platform:
            config.platform = self.platform
        if self.backend:
            config.backend = self.backend
        for spec in self.inputs:
            spec.fill(config.input.add())
        for spec in self.outputs:
            spec.fill(config.output.add())
        if self.dynamic_batching is not None:
            config.dynamic_batching.max_queue_delay_microseconds = self.dynamic_batching.max_queue_delay_microseconds
            config.dynamic_batching.preferred_batch_size.extend(self.dynamic_batching.preferred_batch_sizes)
        for group in self.instance_groups:
            message = config.instance_group.add(count=group.count)
            message.kind = pb.ModelInstanceGroup.KIND_GPU if group.kind == "gpu" else pb.ModelInstanceGroup.KIND_CPU
            message.gpus.extend(group.gpus)
        if self.tensorrt is not None:
            accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
            accelerator.parameters.update(self.tensorrt.parameters())
        for step in self.ensemble_steps:
            message = config.ensemble_scheduling.step.add(model_name=step.model_name, model_version=-1)
            message.input_map.update(step.input_map)
            message.output_map.update(step.output_map)
        for key, value in self.parameters.items():
            config.parameters[key].string_value = value
        return config

    def to_pbtxt(self) -> str:
        return text_format.MessageToString(self.to_proto(), as_utf8=True)


def parse_pbtxt(text: str, where: str = "config.pbtxt") -> pb.ModelConfig:
    """Read a `config.pbtxt` with Triton's schema; an unknown field or bad value names the place."""
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as err:
        raise ValueError(f"{where}: not a valid Triton model configuration: {err}") from err
