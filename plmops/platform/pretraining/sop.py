"""Sentence-order prediction (ALBERT): two consecutive segments, swapped half of the time.

The batch it builds carries `word_ids` and `words` too, so a masking objective (wwm, ngram, mac,
pert) can run on top of it: the second segment's word ids are shifted by the number of words of the
first, so `words[row][word_ids[row, t]]` is the text of token t's word in either segment.

Where a document is cut: a long one into windows of at most the length a pair may have
(`pair_windows`: even shares, ending at sentence ends where they can), each window in two
(`split_point`): at a sentence boundary in the middle half of its tokens, the one nearest the middle;
failing that, at the word boundary nearest the middle. A window of one word cannot be cut: `sop` then
takes it alone (`second=None`), `[CLS] tokens [SEP]` with the label -100, so its tokens still train
the masked LM while the order loss ignores it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

IN_ORDER, SWAPPED = 0, 1
NO_ORDER = -100  # a row with one segment: nothing to predict (the model's ignore index)


@dataclass(frozen=True)
class Segment:
    """One text segment, tokenised without special tokens."""

    input_ids: Sequence[int]
    word_ids: Sequence[int]  # per token, an index into words; -1 for a token in no word
    words: Sequence[str]

    def check(self, where: str) -> None:
        if len(self.input_ids) == 0:
            raise ValueError(f"{where}: empty segment")
        if len(self.word_ids) != len(self.input_ids):
            raise ValueError(f"{where}: {len(self.input_ids)} tokens but {len(self.word_ids)} word ids")
        if min(self.word_ids) < -1 or max(self.word_ids) >= len(self.words):
            raise ValueError(f"{where}: word ids must index its {len(self.words)} words (or be -1)")


@dataclass(frozen=True)
class SpecialIds:
    cls: int
    sep: int
    pad: int


def _boundaries(word_ids: np.ndarray, sentence_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Over positions 0..n: True at t where token t starts a new word, and where it starts a new
    sentence as well (0 and n are no cut, so False)."""
    n = len(word_ids)
    if len(sentence_ids) != n:
        raise ValueError(f"{n} word ids but {len(sentence_ids)} sentence ids")
    word = np.zeros(n + 1, dtype=bool)
    word[1:n] = (word_ids[1:] != word_ids[:-1]) | (word_ids[1:] < 0)
    sentence = word.copy()
    sentence[1:n] &= sentence_ids[1:] != sentence_ids[:-1]
    return word, sentence


def split_point(word_ids: np.ndarray, sentence_ids: np.ndarray) -> int | None:
    """Where the second segment starts (a token index in 1..n-1), or None when no word boundary exists.

    `word_ids` and `sentence_ids` give each token's word and sentence. A cut is only ever made where a
    new word starts; sentence boundaries win when one lies in the middle half, since a segment that
    ends mid-sentence gives the order away by its broken syntax rather than by discourse.
    """
    n = len(word_ids)
    word, sentence = _boundaries(np.asarray(word_ids), np.asarray(sentence_ids))
    at = np.arange(n + 1)
    middle = (4 * at >= n) & (4 * at <= 3 * n)
    for candidates in (at[sentence & middle], at[word]):
        if len(candidates):
            return int(candidates[np.argmin(np.abs(2 * candidates - n))])
    return None


def pair_windows(word_ids: np.ndarray, sentence_ids: np.ndarray, capacity: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of at most `capacity`, each to become one sentence-order pair.

    What is left of the document is shared evenly among the fewest windows that can hold it (no tail of
    a few tokens makes a pair of its own), and a window ends at the sentence boundary nearest its share
    when one lies past half of it and leaves half a share after it, else at the last word boundary
    within its share (inside a word only when one word fills it), so that both segments of a pair are
    more often whole sentences.
    """
    n = len(word_ids)
    if capacity < 2:
        raise ValueError(f"pair_windows: capacity must be >= 2, got {capacity}")
    word, sentence = _boundaries(np.asarray(word_ids), np.asarray(sentence_ids))
    bounds, start = [], 0
    while n - start > capacity:
        rest = n - start
        share = -(-rest // -(-rest // capacity))  # ceil(rest / number of windows it needs)
        ends = start + np.flatnonzero(sentence[start : start + capacity + 1])
        ends = ends[(2 * (ends - start) >= share) & (2 * (n - ends) >= share)]  # half a share each side
        if len(ends):
            end = int(ends[np.argmin(np.abs(ends - start - share))])
        else:
            words = start + np.flatnonzero(word[start + 1 : start + share + 1]) + 1
            end = int(words[-1]) if len(words) else start + share
        bounds.append((start, end))
        start = end
    return [*bounds, (start, n)]


def pair_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Longest-first truncation: trim the longer segment (from its end) until both fit the budget."""
    if len_a + len_b <= budget:
        return len_a, len_b
    keep_a = min(len_a, max(budget - len_b, (budget + 1) // 2))
    return keep_a, min(len_b, budget - keep_a)


def sop(
    pairs: Sequence[tuple[Segment, Segment | None]],
    special: SpecialIds,
    max_len: int,
    generator: torch.Generator,
    *,
    swap_prob: float = 0.5,
    pad_to_multiple_of: int = 1,
) -> dict[str, Any]:
    """[CLS] first [SEP] second [SEP], padded to the longest row (rounded up to `pad_to_multiple_of`);
    `sentence_order_label` 1 when the pair was swapped. A pair whose second segment is None gives
    `[CLS] first [SEP]` and the label -100 (one swap is drawn for every pair all the same, so which pairs
    are whole does not shift the draws of the others)."""
    if max_len < 5:
        raise ValueError(f"max_len must leave room for [CLS], [SEP], [SEP] and two tokens, got {max_len}")
    if not pairs or not 0.0 <= swap_prob <= 1.0:
        raise ValueError(f"sop needs at least one pair and swap_prob in [0, 1], got {swap_prob}")
    swapped = torch.rand(len(pairs), generator=generator) < swap_prob
    rows = []
    for i, ((a, b), swap) in enumerate(zip(pairs, swapped.tolist())):
        a.check(f"pair {i}, segment A")
        if b is None:
            rows.append(_single(a, special, max_len))
            continue
        b.check(f"pair {i}, segment B")
        rows.append(_row(b, a, special, max_len) if swap else _row(a, b, special, max_len))
    lengths = np.array([len(ids) for ids, _, _, _ in rows])
    width = -(-int(lengths.max()) // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = np.full((len(rows), min(width, max_len)), special.pad, dtype=np.int64)
    token_type_ids = np.zeros_like(input_ids)
    word_ids = np.full_like(input_ids, -1)
    for r, (ids, types, wids, _) in enumerate(rows):
        input_ids[r, : len(ids)] = ids
        token_type_ids[r, : len(ids)] = types
        word_ids[r, : len(ids)] = wids
    whole = torch.tensor([b is not None for _, b in pairs])
    return {
        "input_ids": torch.from_numpy(input_ids),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "attention_mask": torch.from_numpy(np.arange(input_ids.shape[1]) < lengths[:, None]).long(),
        "word_ids": torch.from_numpy(word_ids),
        "words": [words for _, _, _, words in rows],
        "sentence_order_label": torch.where(whole, swapped.long(), NO_ORDER),
    }


def _row(
    first: Segment, second: Segment, special: SpecialIds, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    n1, n2 = pair_lengths(len(first.input_ids), len(second.input_ids), max_len - 3)
    ids = np.concatenate(
        [[special.cls], first.input_ids[:n1], [special.sep], second.input_ids[:n2], [special.sep]]
    )
    types = np.repeat([0, 1], [n1 + 2, n2 + 1])
    shifted = np.asarray(second.word_ids[:n2], dtype=np.int64)
    shifted = np.where(shifted >= 0, shifted + len(first.words), -1)
    wids = np.concatenate([[-1], first.word_ids[:n1], [-1], shifted, [-1]])
    return ids.astype(np.int64), types, wids.astype(np.int64), [*first.words, *second.words]


def _single(
    segment: Segment, special: SpecialIds, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    n = min(len(segment.input_ids), max_len - 2)
    ids = np.concatenate([[special.cls], segment.input_ids[:n], [special.sep]])
    wids = np.concatenate([[-1], segment.word_ids[:n], [-1]])
    return ids.astype(np.int64), np.zeros(n + 2, dtype=np.int64), wids.astype(np.int64), list(segment.words)
