"""Which tokens a masked-LM style objective touches, and the BERT 80/10/10 corruption of them.

Every objective in this package works on a padded batch: `input_ids` [batch, seq] and `word_ids`
[batch, seq], where `word_ids` is -1 on special tokens and padding. A *unit* is what gets selected as
a whole: one token (MLM), one word (whole-word masking) or a run of words (n-gram masking). Units are
maximal runs of equal non-negative ids, so a special token always ends a unit and nothing at -1 is
ever selected or changed.

Selection is budgeted: a row may spend round(rate * cost of the row) and units are taken in random
order, each only if it still fits, so the budget is never overshot (a unit that is too long is
skipped and the next one is tried). All randomness comes from the `torch.Generator` passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
REPLACE_PROBS = (0.8, 0.1, 0.1)  # [MASK] / random token / unchanged
NGRAM_PROBS = (0.4, 0.3, 0.2, 0.1)  # P(n = 1), P(n = 2), ... for word n-grams

Unit = Literal["token", "word", "ngram"]
Count = Literal["tokens", "words"]


@dataclass(frozen=True)
class VocabInfo:
    """What corruption needs to know about the vocabulary."""

    vocab_size: int
    mask_token_id: int
    special_ids: tuple[int, ...] = ()
    _allowed: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.vocab_size <= 0:
            raise ValueError(f"VocabInfo.vocab_size must be positive, got {self.vocab_size}")
        bad = [i for i in (self.mask_token_id, *self.special_ids) if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"VocabInfo: ids {bad} lie outside the vocabulary [0, {self.vocab_size})")
        ids = torch.arange(self.vocab_size)
        forbidden = torch.tensor([self.mask_token_id, *self.special_ids])
        allowed = ids[~torch.isin(ids, forbidden)]
        if allowed.numel() == 0:
            raise ValueError("VocabInfo: every id is special, nothing left to sample random tokens from")
        object.__setattr__(self, "_allowed", allowed)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> VocabInfo:
        """From a Hugging Face tokenizer: its length, [MASK] id and all special ids."""
        return cls(len(tokenizer), tokenizer.mask_token_id, tuple(tokenizer.all_special_ids))

    def random_ids(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n ids drawn uniformly from the vocabulary minus [MASK] and the special ids."""
        pick = torch.randint(len(self._allowed), (n,), generator=generator)
        return self._allowed[pick]


@dataclass(frozen=True)
class Selection:
    """Chosen tokens, and the unit each selectable token belongs to (dense per row, -1 elsewhere)."""

    chosen: torch.Tensor  # bool [batch, seq]
    units: torch.Tensor  # long [batch, seq]


def word_ids_from_offsets(
    token_offsets: Sequence[tuple[int, int]], word_offsets: Sequence[tuple[int, int]]
) -> list[int]:
    """Map each token to the index of the word its first character falls in.

    Tokens with an empty span (the tokenizer's special tokens and padding) get -1. A token that
    straddles a word boundary belongs to the word it starts in, so a word never splits a token.
    """
    words = np.asarray(word_offsets, dtype=np.int64).reshape(-1, 2)
    tokens = np.asarray(token_offsets, dtype=np.int64).reshape(-1, 2)
    bad = np.flatnonzero((words[:, 1] <= words[:, 0]) | (words[:, 0] < np.append(0, words[:-1, 1])))
    if len(bad):
        w = int(bad[0])
        raise ValueError(
            f"word_offsets[{w}] = {tuple(words[w].tolist())}: spans must be non-empty, sorted, disjoint"
        )
    index = np.searchsorted(words[:, 0], tokens[:, 0], side="right") - 1
    ends = np.append(words[:, 1], -1)  # index -1 (before the first word) reads the -1 sentinel
    inside = tokens[:, 0] < ends[index]
    special = tokens[:, 1] <= tokens[:, 0]
    lost = np.flatnonzero(~special & ~inside)
    if len(lost):
        t = int(lost[0])
        raise ValueError(f"token {t} at chars {tuple(tokens[t].tolist())} lies in no word of word_offsets")
    return np.where(special, -1, index).tolist()


def batch_tensors(batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's input_ids and word_ids, checked to be aligned 2-D integer tensors."""
    for key in ("input_ids", "word_ids"):
        value = batch.get(key)
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.is_floating_point():
            raise ValueError(f"batch[{key!r}] must be a 2-D integer tensor [batch, seq], got {value!r:.80}")
    input_ids, word_ids = batch["input_ids"], batch["word_ids"]
    if input_ids.shape != word_ids.shape:
        raise ValueError(
            f"batch: input_ids {tuple(input_ids.shape)} and word_ids {tuple(word_ids.shape)} differ"
        )
    return input_ids.long(), word_ids.long()


def run_starts(ids: torch.Tensor) -> torch.Tensor:
    """True where a run of equal non-negative ids begins."""
    previous = F.pad(ids[:, :-1], (1, 0), value=-1)
    return (ids >= 0) & (ids != previous)


def dense_runs(ids: torch.Tensor) -> torch.Tensor:
    """Number the runs 0, 1, 2, ... within each row; -1 stays -1."""
    return torch.where(ids >= 0, run_starts(ids).cumsum(1) - 1, -1)


def broadcast_from_start(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Give every token of a run the value at the run's first token (one draw per word, say)."""
    positions = torch.arange(groups.shape[1]).expand_as(groups)
    first = torch.where(run_starts(groups), positions, 0).cummax(1).values
    return values.gather(1, first)


def check_probs(name: str, probs: Sequence[float], size: int | None = None) -> torch.Tensor:
    """The probabilities as a tensor, or a ValueError naming the argument."""
    p = torch.tensor(probs, dtype=torch.float64)
    if size is not None and len(p) != size:
        raise ValueError(f"{name} needs {size} probabilities, got {len(p)}")
    if len(p) == 0 or torch.any(p < 0) or abs(float(p.sum()) - 1.0) > 1e-6:
        raise ValueError(f"{name} must be non-negative and sum to 1, got {tuple(probs)}")
    return p


def ngram_units(
    word_ids: torch.Tensor, ngram_probs: Sequence[float], generator: torch.Generator
) -> torch.Tensor:
    """Cut each row's words into n-grams whose lengths are drawn from ngram_probs.

    The words are tiled left to right by i.i.d. lengths, so the n-grams never overlap. Units are
    runs, so a special token or padding cuts an n-gram (one never spans [SEP]), as does the row end.
    """
    probs = check_probs("ngram_probs", ngram_probs).float()
    words = dense_runs(word_ids)
    batch = words.shape[0]
    n_words = int(words.max()) + 1 if words.numel() else 0
    if n_words == 0:
        return words
    lengths = torch.multinomial(probs.expand(batch, -1), n_words, replacement=True, generator=generator) + 1
    word_index = torch.arange(n_words).expand(batch, -1).contiguous()
    span_of_word = torch.searchsorted(lengths.cumsum(1), word_index, right=True)
    return torch.where(words >= 0, span_of_word.gather(1, words.clamp(min=0)), -1)


def greedy_fill(cost: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Accept units in column order while they fit the row's budget; a unit that would overshoot is skipped.

    Equivalent to the sequential loop "for each unit: take it if cost <= remaining", done in rounds
    over the whole batch: each round takes the longest prefix of still-fitting units, then drops the
    first unit that overshoots. Every round takes at least one unit per unfinished row, and after the
    first round only a remainder smaller than one unit is left, so there are few rounds.
    """
    batch, n_units = cost.shape
    column = torch.arange(n_units)
    accepted = torch.zeros_like(cost, dtype=torch.bool)
    remaining = budget.clone()
    start = torch.zeros(batch, dtype=torch.long)
    while True:
        candidate = (column >= start[:, None]) & (cost <= remaining[:, None])
        running = (cost * candidate).cumsum(1)
        fits = candidate & (running <= remaining[:, None])
        overshoot = candidate & ~fits
        accepted |= fits
        remaining -= (cost * fits).sum(1)
        if not overshoot.any():
            return accepted
        start = torch.where(overshoot, column, n_units).min(1).values + 1


def select_units(
    unit_ids: torch.Tensor, cost: torch.Tensor, rate: float, generator: torch.Generator
) -> Selection:
    """Choose whole units in random order until round(rate * row cost) is spent, never more.

    `cost` is per token (1 per token for a token budget, 1 on each word's first token for a word
    budget); a unit costs the sum over its tokens.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate}")
    units = dense_runs(unit_ids)
    valid = units >= 0
    batch, seq = units.shape
    n_units = int(units.max()) + 1 if units.numel() else 0
    if n_units == 0:
        return Selection(torch.zeros_like(valid), units)
    index = units.clamp(min=0)
    cost = cost.long() * valid
    unit_cost = torch.zeros(batch, n_units, dtype=torch.long).scatter_add_(1, index, cost)
    exists = torch.arange(n_units) < (units.max(1).values + 1)[:, None]
    budget = torch.floor(rate * cost.sum(1).double() + 0.5).long()
    order = torch.rand(batch, n_units, generator=generator).masked_fill(~exists, 2.0).argsort(1)
    never_fits = seq + 1  # more than any budget, for the padding columns of short rows
    ordered_cost = unit_cost.gather(1, order).masked_fill(~exists.gather(1, order), never_fits)
    accepted = torch.zeros_like(exists).scatter_(1, order, greedy_fill(ordered_cost, budget))
    return Selection(accepted.gather(1, index) & valid, units)


def choose(
    word_ids: torch.Tensor,
    unit: Unit,
    rate: float,
    generator: torch.Generator,
    *,
    count: Count = "tokens",
    ngram_probs: Sequence[float] = NGRAM_PROBS,
) -> Selection:
    """Select tokens, words or word n-grams; the budget counts tokens or words."""
    selectable = word_ids >= 0
    if unit == "token":
        unit_ids = torch.where(selectable, torch.arange(word_ids.shape[1]).expand_as(word_ids), -1)
    elif unit == "word":
        unit_ids = word_ids
    elif unit == "ngram":
        unit_ids = ngram_units(word_ids, ngram_probs, generator)
    else:
        raise ValueError(f"unit must be 'token', 'word' or 'ngram', got {unit!r}")
    if count == "tokens":
        cost = selectable.long()
    elif count == "words" and unit != "token":
        cost = run_starts(word_ids).long()
    else:
        raise ValueError(
            f"count must be 'tokens', or 'words' for word or n-gram units; got {count!r} for {unit!r}"
        )
    return select_units(unit_ids, cost, rate, generator)


def corrupt(
    input_ids: torch.Tensor,
    chosen: torch.Tensor,
    groups: torch.Tensor,
    vocab: VocabInfo,
    replace_probs: Sequence[float],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT corruption of the chosen tokens; the mask/random/keep draw is shared by each run of `groups`.

    Returns (corrupted input_ids, labels) with labels = the original id where chosen, else -100.
    """
    p_mask, p_random, _ = check_probs("replace_probs", replace_probs, size=3).tolist()
    draw = broadcast_from_start(torch.rand(groups.shape, generator=generator), groups)
    to_mask = chosen & (draw < p_mask)
    to_random = chosen & (draw >= p_mask) & (draw < p_mask + p_random)
    corrupted = input_ids.masked_fill(to_mask, vocab.mask_token_id)
    corrupted[to_random] = vocab.random_ids(int(to_random.sum()), generator)
    labels = torch.where(chosen, input_ids, IGNORE_INDEX)
    return corrupted, labels


def _masked_lm(
    batch: Mapping[str, Any],
    vocab: VocabInfo,
    generator: torch.Generator,
    unit: Unit,
    rate: float,
    replace_probs: Sequence[float],
    ngram_probs: Sequence[float],
) -> dict[str, Any]:
    input_ids, word_ids = batch_tensors(batch)
    selection = choose(word_ids, unit, rate, generator, ngram_probs=ngram_probs)
    groups = selection.units if unit == "token" else word_ids
    corrupted, labels = corrupt(input_ids, selection.chosen, groups, vocab, replace_probs, generator)
    return {**batch, "input_ids": corrupted, "labels": labels}


def mlm(
    batch: Mapping[str, Any],
    vocab: VocabInfo,
    generator: torch.Generator,
    *,
    rate: float = 0.15,
    replace_probs: Sequence[float] = REPLACE_PROBS,
) -> dict[str, Any]:
    """Original BERT masking: round(rate * tokens) single tokens per row, 80/10/10 per token."""
    return _masked_lm(batch, vocab, generator, "token", rate, replace_probs, NGRAM_PROBS)


def wwm(
    batch: Mapping[str, Any],
    vocab: VocabInfo,
    generator: torch.Generator,
    *,
    rate: float = 0.15,
    replace_probs: Sequence[float] = REPLACE_PROBS,
) -> dict[str, Any]:
    """Whole-word masking: all tokens of a chosen word are masked; 80/10/10 is decided per word."""
    return _masked_lm(batch, vocab, generator, "word", rate, replace_probs, NGRAM_PROBS)


def ngram(
    batch: Mapping[str, Any],
    vocab: VocabInfo,
    generator: torch.Generator,
    *,
    rate: float = 0.15,
    replace_probs: Sequence[float] = REPLACE_PROBS,
    ngram_probs: Sequence[float] = NGRAM_PROBS,
) -> dict[str, Any]:
    """N-gram masking over whole words (n drawn from ngram_probs); 80/10/10 decided per word."""
    return _masked_lm(batch, vocab, generator, "ngram", rate, replace_probs, ngram_probs)
