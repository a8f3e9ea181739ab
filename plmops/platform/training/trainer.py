"""The pretraining loop: one obvious path from a model and a batch stream to checkpoints and metrics.

    trainer = Trainer(model, data, TrainConfig(steps=10_000, lr=1e-4), storage=open_storage("ckpt/"), on_metrics=log)
    result = trainer.fit(resume="auto")   # result.preempted: stopped by SIGTERM, checkpoint written

`data` is any iterable of batch dicts (BatchMaker output: they go straight into `model(**batch)`) with
`state_dict()` / `load_state_dict()`, so a resumed run continues from the same batch. Under torchrun
(call `init_distributed()` first) each rank passes its own shard of the stream: the global batch is world
size x grad_accum micro-batches. `parallel="ddp"` keeps a whole copy of the model and optimizer on every
rank; `parallel="fsdp"` (FSDP2, `fully_shard`) splits weights, gradients and optimizer state over the
ranks, one all-gather group per transformer block, for configurations that do not fit one GPU beside
their optimizer state. Checkpoints are the same whole files either way.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from plmops.platform.training.checkpoint import (
    Checkpointer,
    Storage,
    capture_rng,
    restore_rng,
    whole_weights,
)
from plmops.platform.training.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler

# bf16 dense tensor-core peaks (FLOP/s) by device-name fragment, most specific first.
PEAK_BF16_FLOPS = {"H200": 989.4e12, "H100 PCIe": 756.0e12, "H100": 989.4e12, "A100": 312.0e12}
PARALLEL = ("ddp", "fsdp")


class BatchStream(Protocol):
    """Batches in a resumable order. `state_dict()` is saved in checkpoints and read back with
    `torch.load(weights_only=True)`: numbers, strings, tensors and lists/dicts/tuples of them only."""

    def __iter__(self) -> Iterator[Mapping[str, Any]]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


MetricsCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainConfig:
    """Hyper-parameters of one run; `lr` is the peak reached after `warmup_steps`."""

    steps: int
    lr: float = 1e-4
    warmup_steps: int = 0
    schedule: Literal["linear", "cosine"] = "linear"
    optimizer: Literal["adamw", "lamb"] = "adamw"
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    checkpoint_every: int = 1000
    keep_last: int = 3
    seed: int = 0
    compile: bool = False
    activation_checkpointing: bool = False
    log_every: int = 10
    parallel: Literal["ddp", "fsdp"] = "ddp"

    def __post_init__(self) -> None:
        for name in ("steps", "grad_accum", "checkpoint_every", "keep_last", "log_every"):
            _require(name, getattr(self, name), "a positive integer", lambda v: _is_int(v) and v > 0)
        _require(
            "warmup_steps",
            self.warmup_steps,
            "an integer in [0, steps]",
            lambda v: _is_int(v) and 0 <= v <= self.steps,
        )
        _require("lr", self.lr, "a positive number", lambda v: _is_number(v) and v > 0)
        _require("weight_decay", self.weight_decay, "a number >= 0", lambda v: _is_number(v) and v >= 0)
        _require(
            "max_grad_norm",
            self.max_grad_norm,
            "None (no clipping) or a positive number",
            lambda v: v is None or (_is_number(v) and v > 0),
        )
        _require(
            "betas",
            self.betas,
            "two numbers in [0, 1)",
            lambda v: (
                isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v)
            ),
        )
        self.betas = tuple(self.betas)
        _require("schedule", self.schedule, f"one of {SCHEDULES}", lambda v: v in SCHEDULES)
        _require("optimizer", self.optimizer, f"one of {OPTIMIZERS}", lambda v: v in OPTIMIZERS)
        _require("seed", self.seed, "an integer", _is_int)
        _require("parallel", self.parallel, f"one of {PARALLEL}", lambda v: v in PARALLEL)
        for name in ("compile", "activation_checkpointing"):
            _require(name, getattr(self, name), "True or False", lambda v: isinstance(v, bool))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(name: str, value: Any, allowed: str, check: Callable[[Any], bool]) -> None:
    if not check(value):
        raise ValueError(f"TrainConfig.{name} must be {allowed}, got {value!r}")


@dataclass
class TrainResult:
    step: int  # last completed step
    preempted: bool  # stopped early by SIGTERM, after writing a checkpoint
    checkpoint: str | None  # folder of the last checkpoint written (or resumed from)
    tokens: int = 0  # real (non-padding) tokens trained on so far, over all ranks and resumptions


def init_distributed() -> tuple[int, int]:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPUs); (rank, world size), (0, 1) alone."""
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def peak_bf16_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def real_tokens(batch: Mapping[str, Any]) -> torch.Tensor:
    """Non-padding tokens: attention_mask == 1 (one document per row) or document_ids != 0 (packed)."""
    if "attention_mask" in batch:
        return batch["attention_mask"].sum()
    if "document_ids" in batch:
        return (batch["document_ids"] != 0).sum()
    return torch.tensor(batch["input_ids"].numel(), device=batch["input_ids"].device)


def flops_per_token(model: nn.Module) -> Callable[[int], int]:
    """Training FLOPs per token at a sequence length: 6 per non-embedding weight plus attention's 12·L·d·T."""
    n = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    attention = 12 * model.config.num_hidden_layers * model.config.hidden_size
    return lambda seq_len: 6 * n + attention * seq_len


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _sigterm_sets(flag: threading.Event) -> Iterator[None]:
    """SIGTERM (a Kubernetes eviction) only sets a flag; the loop checkpoints at the next step boundary.
    Signal handlers can only be installed from the main thread: elsewhere the caller sets the flag."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Trainer:
    """Runs `config.steps` optimizer steps of `model(**batch).loss`, checkpointing to `storage`.

    `stop` is the preemption flag: SIGTERM sets it when `fit` runs in the main thread; code running the
    trainer in another thread sets it itself. Either way the run checkpoints and returns preempted.

    With `parallel="fsdp"` in a process group the model passed in is sharded in place: evaluate or save
    `whole_model()`, not the model itself. Alone (no process group) there is nothing to shard.
    """

    def __init__(
        self,
        model: nn.Module,
        data: BatchStream,
        config: TrainConfig,
        storage: Storage | None = None,
        on_metrics: MetricsCallback | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.on_metrics = on_metrics
        self.stop = threading.Event()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        cuda = torch.cuda.is_available()
        self.device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        self.model = model.to(self.device)
        self.peak_flops = peak_bf16_flops(self.device)
        self.flops_per_token = flops_per_token(model)
        self._plain_type = type(model)
        if config.activation_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.sharded = config.parallel == "fsdp" and dist.is_initialized()
        if self.sharded:
            _shard(model, self.device, self.world)
        # After sharding: the optimizer must hold the shards (DTensors), not the replaced whole tensors.
        self.optimizer = build_optimizer(
            model, config.optimizer, config.lr, config.weight_decay, config.betas, fused=cuda
        )
        self.scheduler = build_scheduler(self.optimizer, config.warmup_steps, config.steps, config.schedule)
        self.checkpointer = None if storage is None else Checkpointer(storage, config.keep_last)

    def fit(self, resume: Literal["auto"] | None = None) -> TrainResult:
        """Train to `config.steps`; `resume="auto"` continues from the storage's `latest` checkpoint."""
        if resume not in (None, "auto"):
            raise ValueError(f"Trainer.fit: resume must be None or 'auto', got {resume!r}")
        _seed_everything(self.config.seed + self.rank)  # ranks draw different dropout masks
        step, checkpoint, seen = 0, None, 0
        if resume == "auto" and self.checkpointer is not None and (checkpoint := self.checkpointer.latest()):
            step, seen = self._restore(checkpoint)
        forward = self._wrapped()
        forward.train()
        batches = iter(self.data)
        window = _Window(seen)
        preempted = False
        with _sigterm_sets(self.stop):
            while step < self.config.steps:
                lr = self.scheduler.get_last_lr()[0]
                loss, grad_norm = self._step(forward, batches, step, window)
                step += 1
                if step % self.config.log_every == 0 or step == self.config.steps:
                    self._report(step, loss, grad_norm, lr, window)
                preempted = self._any_rank(self.stop.is_set())
                if preempted or step % self.config.checkpoint_every == 0 or step == self.config.steps:
                    checkpoint = self._save(step, window) or checkpoint
                if preempted:
                    break
        return TrainResult(step, preempted, checkpoint, tokens=self._global_tokens(window))

    def whole_model(self) -> nn.Module | None:
        """The trained model as one plain module on rank 0, None on the other ranks: what rank 0 alone may
        evaluate and save. Under FSDP a collective (every rank calls it) that gathers a new copy on the
        device; otherwise the model itself."""
        if not self.sharded:
            return self.model if self.rank == 0 else None
        weights = whole_weights(self.model)
        if self.rank != 0:
            return None
        whole = self._plain_type(self.model.config)
        whole.load_state_dict(weights)
        return whole.to(self.device).train(self.model.training)

    def _wrapped(self) -> nn.Module:
        forward: nn.Module = self.model
        if self.world > 1 and not self.sharded:
            ids = [self.device.index] if self.device.type == "cuda" else None
            forward = DistributedDataParallel(forward, device_ids=ids)
        return torch.compile(forward) if self.config.compile else forward

    def _step(
        self, forward: nn.Module, batches: Iterator[Mapping[str, Any]], step: int, window: _Window
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over `grad_accum` micro-batches; loss and grad norm stay on the device."""
        accum = self.config.grad_accum
        total = torch.zeros((), device=self.device)
        for micro in range(accum):
            batch = self._next(batches, step, micro)
            window.add(batch, self.flops_per_token(batch["input_ids"].shape[1]))
            with self._gradient_sync(forward, micro == accum - 1):
                with self._autocast():
                    loss = forward(**batch).loss / accum
                loss.backward()
            total += loss.detach()
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm is not None else float("inf")
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if isinstance(grad_norm, DTensor):  # the norm over all shards, replicated on every rank
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, grad_norm

    def _gradient_sync(self, forward: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Gradients of the micro-batches before the last stay local and accumulate: no all-reduce (DDP)
        or reduce-scatter (FSDP) until the last one's backward."""
        if self.sharded:
            self.model.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        if last or self.world == 1:
            return contextlib.nullcontext()
        return forward.no_sync()

    def _next(self, batches: Iterator[Mapping[str, Any]], step: int, micro: int) -> dict[str, Any]:
        try:
            batch = next(batches)
        except StopIteration:
            raise RuntimeError(
                f"Trainer: the data ran out at step {step + 1} (micro-batch {micro + 1} of "
                f"{self.config.grad_accum}); TrainConfig.steps={self.config.steps} needs "
                f"{self.config.steps * self.config.grad_accum} batches per rank (make the stream repeat)"
            ) from None
        return {
            k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
        }

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()  # fp32 on CPU: exact, and CPU bf16 is no faster

    def _report(
        self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, lr: float, window: _Window
    ) -> None:
        """Metrics averaged over ranks; tokens and FLOPs summed over ranks and the steps since the last report."""
        stats = torch.stack([loss.double(), grad_norm.double(), window.tokens, window.flops, window.total])
        if self.world > 1:
            dist.all_reduce(stats)
        loss_sum, norm_sum, tokens, flops, total = stats.tolist()
        seconds = window.reset()
        metrics = {
            "loss": loss_sum / self.world,
            "lr": lr,
            "grad_norm": norm_sum / self.world,
            "tokens_per_s": tokens / seconds,
            "tokens": total,
        }
        if self.peak_flops:
            metrics["mfu"] = flops / seconds / (self.peak_flops * self.world)
        if self.rank == 0 and self.on_metrics is not None:
            self.on_metrics(step, metrics)

    def _any_rank(self, flag: bool) -> bool:
        """Every rank must stop at the same step, whichever of them got the signal."""
        if self.world == 1:
            return flag
        value = torch.tensor(int(flag), device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def _global_tokens(self, window: _Window) -> int:
        total = window.total.clone()
        if self.world > 1:
            dist.all_reduce(total)
        return int(total.item())

    def _save(self, step: int, window: _Window) -> str | None:
        if self.checkpointer is None:
            return None
        ranks = [{"rng": capture_rng(), "data": self.data.state_dict(), "tokens": int(window.total.item())}]
        if self.world > 1:
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, ranks[0])
            ranks = gathered
        folder = self.checkpointer.save(
            step, self.model, self.optimizer, self.scheduler, ranks, asdict(self.config)
        )
        if self.world > 1:
            dist.barrier()  # no rank runs ahead (or exits on preemption) before the checkpoint is whole
        return folder

    def _restore(self, folder: str) -> tuple[int, int]:
        """Load a checkpoint in place; (step, this rank's tokens seen) to continue from."""
        restored = self.checkpointer.load(folder, self.model, self.optimizer, self.scheduler)
        if len(restored.ranks) != self.world:
            raise ValueError(
                f"checkpoint {folder} was written by {len(restored.ranks)} ranks, this run has {self.world}: "
                f"the data positions cannot be split differently"
            )
        own = restored.ranks[self.rank]
        restore_rng(own["rng"])
        self.data.load_state_dict(own["data"])
        return restored.step, int(own.get("tokens", 0))


def _shard(model: nn.Module, device: torch.device, world: int) -> None:
    """FSDP2 in place: one group per transformer block, then the root group (embeddings, heads). On
    CUDA the gathered weights are bf16 and gradients are reduced in fp32; on CPU all stays fp32."""
    mesh = init_device_mesh(device.type, (world,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    policy = policy if device.type == "cuda" else MixedPrecisionPolicy()
    for block in reversed(_blocks(model)):  # innermost first, as fully_shard requires
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The modules of a kind in `_no_split_modules` (HF's list of blocks never to split), except those
    holding a weight also used outside them: the word embeddings are the MLM decoder's weight, so they
    stay with the root, where both uses see the same gathered tensor."""
    kinds = set(getattr(model, "_no_split_modules", None) or ())
    everywhere = list(model.named_parameters(remove_duplicate=False))
    blocks = []
    for prefix, module in model.named_modules():
        if type(module).__name__ not in kinds:
            continue
        inside = {id(p) for p in module.parameters()}
        outside = {id(p) for name, p in everywhere if not name.startswith(prefix + ".")}
        if not inside & outside:
            blocks.append(module)
    return blocks


class _Window:
    """Real tokens and model FLOPs since the last report, and this rank's tokens since the run began,
    kept on the device to avoid host syncs."""

    def __init__(self, seen: int = 0) -> None:
        self.tokens = torch.zeros((), dtype=torch.float64)
        self.flops = torch.zeros((), dtype=torch.float64)
        self.total = torch.tensor(float(seen), dtype=torch.float64)
        self.start = time.perf_counter()

    def add(self, batch: Mapping[str, Any], flops_per_token: int) -> None:
        tokens = real_tokens(batch).to(torch.float64)
        if self.tokens.device != tokens.device:
            self.tokens, self.flops = self.tokens.to(tokens.device), self.flops.to(tokens.device)
            self.total = self.total.to(tokens.device)
        self.tokens += tokens
        self.flops += tokens * flops_per_token
        self.total += tokens

    def reset(self) -> float:
        now = time.perf_counter()
        seconds, self.start = max(now - self.start, 1e-9), now
        self.tokens, self.flops = torch.zeros_like(self.tokens), torch.zeros_like(self.flops)
        return seconds
