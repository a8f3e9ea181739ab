"""PERT: permuted language modelling. No [MASK]; the model points at positions.

Positions are chosen like n-gram whole-word masking (rate of the row's tokens). Of the chosen
positions 90% are shuffled among themselves within the row and 10% stay where they are.

Target convention ("where did my token go"): for every chosen position i, labels[i] = j, the
position where the token that was originally at i now sits, so that

    original[i] == permuted[labels[i]]          for every chosen i.

Kept positions point at themselves. For a swap of two tokens this equals the other reading ("where
did the token now at i come from"); for longer cycles the two are inverse permutations of each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from plmops.platform.pretraining.masking import IGNORE_INDEX, NGRAM_PROBS, batch_tensors, choose


def cycle_destinations(moving: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A destination per position: the moving positions of a row form one random cycle, others stay.

    One cycle (rather than any permutation) guarantees every moving token really moves, so the kept
    share is exactly the 10% drawn, not 10% plus the fixed points of a random permutation. A row with
    a single moving position cannot move it.
    """
    batch, seq = moving.shape
    order = torch.rand(batch, seq, generator=generator).masked_fill(~moving, 2.0).argsort(1)
    n_moving = moving.sum(1, keepdim=True)
    rank = torch.arange(seq).expand(batch, seq)
    next_rank = torch.where(rank + 1 < n_moving, rank + 1, 0)
    target = torch.where(rank < n_moving, order.gather(1, next_rank), order)
    return torch.empty_like(order).scatter_(1, order, target)


def permute(
    input_ids: torch.Tensor, chosen: torch.Tensor, destinations: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the token at i to destinations[i]; labels[i] = destinations[i] where chosen, else -100.

    `destinations` must be a permutation of the positions of each row.
    """
    permuted = torch.empty_like(input_ids).scatter_(1, destinations, input_ids)
    return permuted, torch.where(chosen, destinations, IGNORE_INDEX)


def pert(
    batch: Mapping[str, Any],
    generator: torch.Generator,
    *,
    rate: float = 0.15,
    keep_prob: float = 0.1,
    ngram_probs: Sequence[float] = NGRAM_PROBS,
) -> dict[str, Any]:
    """Permute round(rate * tokens) positions per row (chosen by word n-grams); labels point at positions."""
    if not 0.0 <= keep_prob <= 1.0:
        raise ValueError(f"keep_prob must lie in [0, 1], got {keep_prob}")
    input_ids, word_ids = batch_tensors(batch)
    chosen = choose(word_ids, "ngram", rate, generator, ngram_probs=ngram_probs).chosen
    moving = chosen & (torch.rand(chosen.shape, generator=generator) >= keep_prob)
    permuted, labels = permute(input_ids, chosen, cycle_destinations(moving, generator))
    return {**batch, "input_ids": permuted, "labels": labels}
