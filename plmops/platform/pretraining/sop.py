"""Sentence-order prediction (ALBERT): two consecutive segments, swapped half of the time.

The batch it builds carries `word_ids` and `words` too, so a masking objective (wwm, ngram, mac,
pert) can run on top of it: the second segment's word ids are shifted by the number of words of the
first, so `words[row][word_ids[row, t]]` is the text of token t's word in either segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

IN_ORDER, SWAPPED = 0, 1


@dataclass(frozen=True)
class Segment:
    """One text segment, tokenised without special tokens."""

    input_ids: Sequence[int]
    word_ids: Sequence[int]  # per token, an index into words
    words: Sequence[str]

    def check(self, where: str) -> None:
        if len(self.input_ids) == 0:
            raise ValueError(f"{where}: empty segment")
        if len(self.word_ids) != len(self.input_ids):
            raise ValueError(f"{where}: {len(self.input_ids)} tokens but {len(self.word_ids)} word ids")
        if min(self.word_ids) < 0 or max(self.word_ids) >= len(self.words):
            raise ValueError(f"{where}: word ids must index its {len(self.words)} words")


@dataclass(frozen=True)
class SpecialIds:
    cls: int
    sep: int
    pad: int


def pair_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Longest-first truncation: trim the longer segment (from its end) until both fit the budget."""
    if len_a + len_b <= budget:
        return len_a, len_b
    keep_a = min(len_a, max(budget - len_b, (budget + 1) // 2))
    return keep_a, min(len_b, budget - keep_a)


def sop(
    pairs: Sequence[tuple[Segment, Segment]],
    special: SpecialIds,
    max_len: int,
    generator: torch.Generator,
    *,
    swap_prob: float = 0.5,
) -> dict[str, Any]:
    """[CLS] first [SEP] second [SEP], padded to the longest row; sop_label 1 when the pair was swapped."""
    if max_len < 5:
        raise ValueError(f"max_len must leave room for [CLS], [SEP], [SEP] and two tokens, got {max_len}")
    if not pairs or not 0.0 <= swap_prob <= 1.0:
        raise ValueError(f"sop needs at least one pair and swap_prob in [0, 1], got {swap_prob}")
    swapped = torch.rand(len(pairs), generator=generator) < swap_prob
    rows = []
    for i, ((a, b), swap) in enumerate(zip(pairs, swapped.tolist())):
        a.check(f"pair {i}, segment A")
        b.check(f"pair {i}, segment B")
        rows.append(_row(b, a, special, max_len) if swap else _row(a, b, special, max_len))
    lengths = np.array([len(ids) for ids, _, _, _ in rows])
    input_ids = np.full((len(rows), lengths.max()), special.pad, dtype=np.int64)
    token_type_ids = np.zeros_like(input_ids)
    word_ids = np.full_like(input_ids, -1)
    for r, (ids, types, wids, _) in enumerate(rows):
        input_ids[r, : len(ids)] = ids
        token_type_ids[r, : len(ids)] = types
        word_ids[r, : len(ids)] = wids
    return {
        "input_ids": torch.from_numpy(input_ids),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "attention_mask": torch.from_numpy(np.arange(lengths.max()) < lengths[:, None]).long(),
        "word_ids": torch.from_numpy(word_ids),
        "words": [words for _, _, _, words in rows],
        "sop_label": swapped.long(),
    }


def _row(
    first: Segment, second: Segment, special: SpecialIds, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    n1, n2 = pair_lengths(len(first.input_ids), len(second.input_ids), max_len - 3)
    ids = np.concatenate(
        [[special.cls], first.input_ids[:n1], [special.sep], second.input_ids[:n2], [special.sep]]
    )
    types = np.repeat([0, 1], [n1 + 2, n2 + 1])
    shift = len(first.words)
    wids = np.concatenate([[-1], first.word_ids[:n1], [-1], np.asarray(second.word_ids[:n2]) + shift, [-1]])
    return ids.astype(np.int64), types, wids.astype(np.int64), [*first.words, *second.words]
