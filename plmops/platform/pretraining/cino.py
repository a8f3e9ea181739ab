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
(plus special ids); pass it as `vocab_subset` to the plmops MLM head, which scores only those rows and
remaps the labels (`plmops.platform.models.remap_to_subset`). `corpus_vocab` counts a language's ids
over its texts with the tokenizer; `training.data.LanguageBatches` makes one-language batches that carry
them. benchmarks/cino_fast_mlm.py measures the speed-up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal

import numpy as np
import torch

_TOKENIZE_BATCH = 4096  # texts per tokenizer call when counting a corpus' ids


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


def corpus_vocab(text_batches: Iterable[Sequence[str]], tokenizer: Any) -> torch.Tensor:
    """`group_vocab` of texts tokenised as the batch stream tokenises them (no special tokens added),
    plus the tokenizer's special ids: every id an MLM label over these texts can be."""

    def token_ids() -> Iterable[np.ndarray]:
        for texts in text_batches:
            for start in range(0, len(texts), _TOKENIZE_BATCH):
                encoded = tokenizer(
                    list(texts[start : start + _TOKENIZE_BATCH]),
                    add_special_tokens=False,
                    return_attention_mask=False,
                    return_token_type_ids=False,
                    verbose=False,
                )["input_ids"]
                yield np.fromiter(chain.from_iterable(encoded), dtype=np.int64)

    return group_vocab(token_ids(), len(tokenizer), tokenizer.all_special_ids)
