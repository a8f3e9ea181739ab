"""The fine-tuning loop every task type shares: rows of token ids in, a trained model out.

A task type turns its examples into `Rows` (one unpadded sequence per row: a sentence, a sentence pair,
an NER chunk or an MRC window) with per-row targets; this module batches them and trains or predicts.

- Batches are length-bucketed: training shuffles rows with the seed, cuts the shuffled order into pools
  of `POOL_BATCHES` batches, sorts each pool by length and shuffles the resulting batches, so a batch
  holds rows of similar length (little padding) while the order stays random. Inference sorts all rows
  by length. Each batch is padded only to its own longest row.
- Optimisation is BERT's fine-tuning recipe: AdamW without decay on biases and LayerNorm gains, linear
  warm-up over `warmup_ratio` of the planned steps then linear decay to 0, gradients clipped to norm 1.
- With a dev evaluation, the model is scored after every epoch, the best epoch's weights are kept and
  training stops after `early_stopping_patience` evaluations without a gain. Without one, the last
  epoch's weights are the result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from plmops.platform.finetune.taskspec import HyperParameters
from plmops.platform.training.optim import build_optimizer, build_scheduler

IGNORE_INDEX = -100
POOL_BATCHES = 50
MAX_GRAD_NORM = 1.0
ADAM_BETAS = (0.9, 0.999)
INFERENCE_BATCH_FACTOR = 2  # inference holds no gradients: batches this many times larger fit


@dataclass
class Rows:
    """Model inputs, one unpadded row per sequence, with per-row training targets.

    A target is one int per row (a class, an answer position) or one list per row as long as the row
    (token labels, IGNORE_INDEX where a token has no label).
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    targets: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def collate(
    rows: Rows, indices: Sequence[int], pad_id: int, device: torch.device, with_targets: bool = True
) -> dict[str, torch.Tensor]:
    """The rows at `indices` padded to the longest of them, as model keyword arguments."""
    width = max(len(rows.input_ids[i]) for i in indices)
    batch = {
        "input_ids": _padded([rows.input_ids[i] for i in indices], width, pad_id),
        "token_type_ids": _padded([rows.token_type_ids[i] for i in indices], width, 0),
        "attention_mask": _padded([[1] * len(rows.input_ids[i]) for i in indices], width, 0),
    }
    for name, values in rows.targets.items() if with_targets else ():
        picked = [values[i] for i in indices]
        batch[name] = (
            _padded(picked, width, IGNORE_INDEX)
            if isinstance(picked[0], list)
            else torch.tensor(picked, dtype=torch.long)
        )
    return {name: tensor.to(device) for name, tensor in batch.items()}


def _padded(sequences: list[list[int]], width: int, value: int) -> torch.Tensor:
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return out


def train_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of row indices: random order, but each batch drawn from rows of similar length."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = batch_size * POOL_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        sorted_pool = sorted(order[start : start + pool], key=lengths.__getitem__)
        batches += [sorted_pool[i : i + batch_size] for i in range(0, len(sorted_pool), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def inference_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices sorted by length (ties in row order), so each batch pads as little as possible."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class Encoded:
    """A split ready for the model: its rows, what a task needs to map outputs back to examples, and
    counts of what tokenisation had to cut or split (per the task type's truncation policy)."""

    rows: Rows
    counts: dict[str, int]
    state: Any = None


def predict_rows(
    model: nn.Module,
    rows: Rows,
    batch_size: int,
    pad_id: int,
    extract: Callable[[Any], torch.Tensor],
    per_token: bool,
) -> list[np.ndarray]:
    """Per-row outputs in row order, without gradients; `extract` picks what to keep from the model's
    output ([batch, ...], or [batch, seq, ...] when `per_token`, then trimmed to each row's length)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[np.ndarray | None] = [None] * len(rows)
    with torch.no_grad():
        for indices in inference_batches(rows.lengths(), batch_size):
            batch = collate(rows, indices, pad_id, device, with_targets=False)
            values = extract(model(**batch)).float().cpu().numpy()
            for k, i in enumerate(indices):
                outputs[i] = values[k, : len(rows.input_ids[i])] if per_token else values[k]
    model.train(was_training)
    return [o for o in outputs if o is not None]


@dataclass
class FitResult:
    """How training went: epochs run, the dev score after each, which epoch's weights were kept."""

    epochs_run: int
    dev_scores: list[float]
    best_epoch: int  # 1-based; the last epoch when there is no dev evaluation
    train_seconds: float  # optimisation only, dev evaluations excluded
    rows_seen: int


def fit(
    model: nn.Module,
    rows: Rows,
    hparams: HyperParameters,
    seed: int,
    pad_id: int,
    evaluate: Callable[[], float] | None = None,
    where: str = "fine-tuning",
) -> FitResult:
    """Train `model` in place on `rows`; `evaluate` scores it on dev (higher is better).

    Raises FloatingPointError naming `where`, the epoch and the step when the loss stops being finite:
    a diverged run must not be reported as a score.
    """
    if len(rows) == 0:
        raise ValueError(f"{where}: no training rows")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    total_steps = math.ceil(len(rows) / hparams.batch_size) * hparams.epochs
    optimizer = build_optimizer(
        model, "adamw", hparams.lr, hparams.weight_decay, ADAM_BETAS, fused=True  # CPU kernels too (torch >= 2.4)
    )
    scheduler = build_scheduler(optimizer, round(hparams.warmup_ratio * total_steps), total_steps, "linear")
    result = FitResult(0, [], hparams.epochs, 0.0, 0)
    best_state: dict[str, torch.Tensor] | None = None
    for epoch in range(1, hparams.epochs + 1):
        result.train_seconds += _epoch(
            model,
            rows,
            hparams.batch_size,
            generator,
            optimizer,
            scheduler,
            pad_id,
            f"{where}, epoch {epoch}",
        )
        result.epochs_run, result.rows_seen = epoch, result.rows_seen + len(rows)
        if evaluate is None:
            continue
        score = evaluate()
        result.dev_scores.append(score)
        if score > max(result.dev_scores[:-1], default=-math.inf):
            result.best_epoch = epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        elif _patience_spent(result, hparams.early_stopping_patience):
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


def _patience_spent(result: FitResult, patience: int | None) -> bool:
    return patience is not None and result.epochs_run - result.best_epoch >= patience


def _epoch(
    model: nn.Module,
    rows: Rows,
    batch_size: int,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    pad_id: int,
    where: str,
) -> float:
    device = next(model.parameters()).device
    model.train()
    start = time.perf_counter()
    for step, indices in enumerate(train_batches(rows.lengths(), batch_size, generator), start=1):
        loss = model(**collate(rows, indices, pad_id, device)).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{where}, step {step}: loss is {loss.item()}; lower hparams.lr")
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start
