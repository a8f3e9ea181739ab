"""CINO-style multilingual pretraining: language sampling and restricted-vocabulary ("fast") MLM.

Language sampling. With n_i the size of language i and l_i the mean length of its examples,

    p_i = n_i^alpha / l_i^beta / sum_j (n_j^alpha / l_j^beta)

alpha < 1 flattens the distribution so low-resource languages are seen more often than their share
(alpha = 1: proportional, alpha = 0: uniform); alpha = 0.7 is the default. beta (default 0: off)
corrects example-level sampling for length: a sampled example of language i brings l_i tokens, so
beta = 1 makes the expected *token* share of each language follow n_i^alpha. The token-level form
uses n_i = the number of tokens of language i (level="tokens").

Fast MLM. A minority-language batch only ever predicts ids its corpus uses, so the MLM head can score
just those rows of the output embedding: `group_vocab` gives each language group its sorted id list
(plus special ids), `remap_labels` maps full-vocabulary labels to positions in that list, and
`restricted_logits` computes the smaller softmax input. `benchmark_restricted_head()` measures the
speed-up (see docs/objectives.md for the command and the numbers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from plmops.platform.pretraining.masking import IGNORE_INDEX


@dataclass(frozen=True)
class LanguageStats:
    examples: int
    tokens: int

    @property
    def mean_length(self) -> float:
        return self.tokens / self.examples


def language_stats(
    texts: Mapping[str, Iterable[str]], count_tokens: Callable[[str], int]
) -> dict[str, LanguageStats]:
    """Example and token counts per language, tokens as counted by `count_tokens` (a tokenizer, say)."""
    stats = {}
    for lang, lang_texts in texts.items():
        lengths = [count_tokens(t) for t in lang_texts]
        stats[lang] = LanguageStats(len(lengths), sum(lengths))
    return stats


def sampling_probs(
    stats: Mapping[str, LanguageStats],
    *,
    alpha: float = 0.7,
    beta: float = 0.0,
    level: Literal["examples", "tokens"] = "examples",
) -> dict[str, float]:
    """p_i proportional to n_i^alpha / l_i^beta, n_i counting examples or tokens (see the module doc)."""
    if level not in ("examples", "tokens"):
        raise ValueError(f"level must be 'examples' or 'tokens', got {level!r}")
    empty = [lang for lang, s in stats.items() if s.examples <= 0 or s.tokens <= 0]
    if not stats or empty:
        raise ValueError(f"sampling_probs needs languages with examples and tokens; empty: {empty}")
    size = np.array(
        [s.examples if level == "examples" else s.tokens for s in stats.values()], dtype=np.float64
    )
    length = np.array([s.mean_length for s in stats.values()])
    weight = np.exp(alpha * np.log(size) - beta * np.log(length))
    return dict(zip(stats, (weight / weight.sum()).tolist()))


def sample_languages(probs: Mapping[str, float], n: int, generator: torch.Generator) -> list[str]:
    """n language codes drawn i.i.d. from probs, reproducible through the generator."""
    langs = list(probs)
    draws = torch.multinomial(
        torch.tensor([probs[lang] for lang in langs]), n, replacement=True, generator=generator
    )
    return [langs[i] for i in draws.tolist()]


def group_vocab(
    token_ids: Iterable[Sequence[int] | np.ndarray | torch.Tensor],
    vocab_size: int,
    special_ids: Sequence[int],
) -> torch.Tensor:
    """Sorted ids that a language group's corpus uses, plus the special ids."""
    used = np.zeros(vocab_size, dtype=bool)
    used[list(special_ids)] = True
    for n, chunk in enumerate(token_ids):
        ids = np.asarray(chunk, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"group_vocab: chunk {n} has ids outside [0, {vocab_size})")
        used[ids] = True
    return torch.from_numpy(np.flatnonzero(used))


def remap_labels(labels: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary labels -> indices into group_ids (-100 stays -100)."""
    ignore = labels == IGNORE_INDEX
    position = torch.searchsorted(group_ids, labels.clamp(min=0))
    found = group_ids[position.clamp(max=len(group_ids) - 1)] == labels
    missing = ~ignore & ~found
    if missing.any():
        raise ValueError(f"remap_labels: label id {int(labels[missing][0])} is not in the group's vocabulary")
    return torch.where(ignore, IGNORE_INDEX, position)


def restricted_logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, group_ids: torch.Tensor
) -> torch.Tensor:
    """MLM decoder scores for the group's ids only: hidden @ weight[group_ids].T + bias[group_ids]."""
    return F.linear(hidden, weight[group_ids], None if bias is None else bias[group_ids])


def benchmark_restricted_head(
    full_vocab: int = 50_000,
    group_size: int = 8_000,
    hidden: int = 768,
    rows: int = 64,
    predicted_per_row: int = 20,
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Median seconds of decoder + softmax + cross-entropy, forward and backward, full vs restricted."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(full_vocab, hidden, generator=g, requires_grad=True)
    bias = torch.zeros(full_vocab, requires_grad=True)
    states = torch.randn(rows * predicted_per_row, hidden, generator=g, requires_grad=True)
    group_ids = torch.randperm(full_vocab, generator=g)[:group_size].sort().values
    labels = group_ids[torch.randint(group_size, (len(states),), generator=g)]
    restricted_labels = remap_labels(labels, group_ids)

    def full() -> None:
        F.cross_entropy(F.linear(states, weight, bias), labels).backward()

    def restricted() -> None:
        F.cross_entropy(restricted_logits(states, weight, bias, group_ids), restricted_labels).backward()

    times = {"full_s": _median_seconds(full, repeats), "restricted_s": _median_seconds(restricted, repeats)}
    return {**times, "speedup": times["full_s"] / times["restricted_s"], "threads": torch.get_num_threads()}


def _median_seconds(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))
