"""ONNX Runtime on an exported graph: sessions, offline graph optimisation, int8 dynamic quantisation and
latency.

Offline optimisation (`optimize_onnx`) saves the graph ONNX Runtime would otherwise build at every load.
Measured on CPU (docs/export.md), it does not pay on these graphs: level `basic` runs as fast as no
optimisation, and `extended`/`all` run 4-11% slower in fp32 (12-19% in int8). In fp32 all of it comes
from SkipLayerNormalization (residual add fused into LayerNorm): with that one fusion disabled, `extended`
is back to `basic`'s speed. So CPU sessions here default to `basic`, and the plain export is what to
ship. Level `all` also adds layouts tied to the machine it ran on. ONNX Runtime's BERT optimizer
(`onnxruntime.transformers.optimizer`) finds no attention to fuse (attention is exported from
scaled_dot_product_attention, not the pattern it matches), so it is not used.

Dynamic int8 quantisation (`quantize_int8`) stores MatMul and embedding weights as int8 and quantises
activations per batch at run time; inputs and outputs stay as exported. Its quality is a task-metric
question: score both graphs with `scoring.score_delta`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process

from plmops.platform.export.metadata import ExportMetadata, derive_metadata, read_metadata
from plmops.platform.export.onnx_export import DEFAULT_TOLERANCE, ParityError

LEVELS = {
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
PROBE_SHAPE = (4, 48)  # (batch, sequence) of the random batch optimised graphs are checked on


def session(path: str | Path, *, threads: int = 0, optimization: str = "basic") -> ort.InferenceSession:
    """A CPU session; `threads` 0 lets ONNX Runtime use every core, `optimization` a LEVELS key (the
    default, `basic`, is the fastest measured here; ONNX Runtime's own default is `all`)."""
    if optimization not in LEVELS:
        raise ValueError(f"optimization must be one of {', '.join(LEVELS)}, got {optimization!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[optimization]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: "all" warns about machine-specific layouts on every load
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def probe_inputs(
    metadata: ExportMetadata, batch: int, sequence: int, *, padded: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """A random batch of valid ids; with `padded`, rows after the first end early (attention_mask 0,
    pad ids), so masking is exercised."""
    rng = np.random.default_rng(seed)
    sequence = min(sequence, metadata.max_length)
    input_ids = rng.integers(0, metadata.vocab_size, (batch, sequence), dtype=np.int64)
    lengths = np.full(batch, sequence)
    if padded:
        lengths[1:] = rng.integers(2, sequence + 1, batch - 1)
    attention_mask = (np.arange(sequence)[None, :] < lengths[:, None]).astype(np.int64)
    input_ids[attention_mask == 0] = metadata.pad_token_id
    token_type_ids = (np.arange(sequence)[None, :] >= lengths[:, None] // 2).astype(np.int64) * attention_mask
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def max_abs_diff(reference: str | Path, candidate: str | Path, inputs: dict[str, np.ndarray]) -> float:
    """Largest |candidate - reference| over all outputs, both run with online optimisation off."""
    first, second = session(reference, optimization="none"), session(candidate, optimization="none")
    names = [o.name for o in first.get_outputs()]
    want, have = first.run(names, inputs), second.run(names, inputs)
    return max(float(np.max(np.abs(a - b))) for a, b in zip(want, have))


def op_counts(path: str | Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


@dataclass(frozen=True)
class OptimizeReport:
    source: Path
    output: Path
    level: str
    nodes_before: int
    nodes_after: int
    new_ops: dict[str, int]  # operators the optimised graph has and the source had not (the fusions)
    max_abs_diff: float  # against the source on a random padded batch


def optimize_onnx(
    path: str | Path, out: str | Path, *, level: str = "extended", tolerance: float = DEFAULT_TOLERANCE
) -> OptimizeReport:
    """Save the graph ONNX Runtime optimises at `level` to `out` (+ metadata) and check it still
    computes what the source does (ParityError otherwise)."""
    if level not in ("basic", "extended", "all"):
        raise ValueError(f"level must be basic, extended or all, got {level!r}")
    metadata = read_metadata(path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    diff = max_abs_diff(path, out, probe_inputs(metadata, *PROBE_SHAPE))
    if not diff <= tolerance:
        out.unlink()
        raise ParityError(
            f"{out}: optimisation at level {level} changed outputs by {diff:.3g} (> {tolerance:g})"
        )
    derive_metadata(path, out, graph_optimization=level)
    before, after = op_counts(path), op_counts(out)
    return OptimizeReport(
        source=Path(path),
        output=out,
        level=level,
        nodes_before=before.total(),
        nodes_after=after.total(),
        new_ops={op: n for op, n in sorted(after.items()) if op not in before},
        max_abs_diff=diff,
    )


@dataclass(frozen=True)
class QuantizeReport:
    source: Path
    output: Path
    fp32_bytes: int
    int8_bytes: int
    quantized_ops: dict[str, int]  # the int8 operators in the output
    max_abs_diff: float  # against the fp32 graph on a random padded batch: a size, not a check

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / self.fp32_bytes


INT8_OPS = ("MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear", "DynamicQuantizeMatMul")


def quantize_int8(path: str | Path, out: str | Path, *, per_channel: bool = False) -> QuantizeReport:
    """Dynamic int8 quantisation of the plain fp32 export at `path` to `out` (+ metadata).

    The graph is first pre-processed as ONNX Runtime recommends (basic optimisation, shape inference;
    its symbolic shape inference fails on these graphs and is skipped). A graph already optimised at
    `extended` or `all` is refused: its fused operators are not quantisable, so little would change.
    """
    metadata = read_metadata(path)
    if metadata.graph_optimization in ("extended", "all") or metadata.precision != "fp32":
        raise ValueError(
            f"{path}: quantise the plain fp32 export, not a graph with precision {metadata.precision} "
            f"and graph_optimization {metadata.graph_optimization}"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(prepared, out, weight_type=QuantType.QInt8, per_channel=per_channel)
    derive_metadata(path, out, precision="int8")
    counts = op_counts(out)
    return QuantizeReport(
        source=Path(path),
        output=out,
        fp32_bytes=Path(path).stat().st_size,
        int8_bytes=out.stat().st_size,
        quantized_ops={op: counts[op] for op in INT8_OPS if counts[op]},
        max_abs_diff=max_abs_diff(path, out, probe_inputs(metadata, *PROBE_SHAPE)),
    )


@dataclass(frozen=True)
class Latency:
    path: Path
    optimization: str
    threads: int
    sequence_length: int
    load_ms: float
    median_ms: dict[int, float]  # batch size -> median milliseconds per batch


def compare_latency(
    variants: Mapping[str, tuple[str | Path, str]],
    batch_sizes: Sequence[int] = (1, 8),
    sequence_length: int = 64,
    *,
    threads: int = 1,
    rounds: int = 10,
    per_round: int = 3,
    warmup: int = 3,
) -> dict[str, Latency]:
    """Median time per batch of unpadded random ids for each variant (name -> (graph, optimization
    level at load)), per batch size.

    Variants take turns, `per_round` batches each for `rounds` rounds, so load from other processes on a
    shared machine falls on all of them alike instead of on whichever ran during a busy spell.
    """
    runners, loads, inputs = {}, {}, {}
    for name, (path, optimization) in variants.items():
        metadata = read_metadata(path)
        start = time.perf_counter()
        runners[name] = session(path, threads=threads, optimization=optimization)
        loads[name] = (time.perf_counter() - start) * 1000
        inputs[name] = {b: probe_inputs(metadata, b, sequence_length, padded=False) for b in batch_sizes}
    times: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batch_sizes} for name in variants}
    for batch in batch_sizes:
        for name, runner in runners.items():
            for _ in range(warmup):
                runner.run(None, inputs[name][batch])
        for _ in range(rounds):
            for name, runner in runners.items():
                for _ in range(per_round):
                    start = time.perf_counter()
                    runner.run(None, inputs[name][batch])
                    times[name][batch].append((time.perf_counter() - start) * 1000)
    return {
        name: Latency(
            Path(path),
            optimization,
            threads,
            inputs[name][batch_sizes[0]]["input_ids"].shape[1],
            loads[name],
            {b: statistics.median(times[name][b]) for b in batch_sizes},
        )
        for name, (path, optimization) in variants.items()
    }


def measure_latency(
    path: str | Path,
    batch_sizes: Sequence[int] = (1, 8),
    sequence_length: int = 64,
    *,
    threads: int = 1,
    optimization: str = "basic",
    rounds: int = 10,
    per_round: int = 3,
) -> Latency:
    """Session load time and median time per batch of one graph (see compare_latency)."""
    variants = {"graph": (path, optimization)}
    return compare_latency(
        variants, batch_sizes, sequence_length, threads=threads, rounds=rounds, per_round=per_round
    )["graph"]
