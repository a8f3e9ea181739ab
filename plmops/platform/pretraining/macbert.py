"""MacBERT: MLM as correction. Chosen words are replaced by similar words, never by [MASK].

Selection: word n-grams (n-gram whole-word masking) until round(rate * words in the row) words are
chosen. Each chosen word, also inside an n-gram, is decided separately: with replace_probs
(0.8, 0.1, 0.1) it is replaced by a similar word, by random tokens, or kept. Labels are the
original ids on every chosen token, kept ones included.

Length policy: a replacement must fill exactly the original word's token slots. Among the word's
similar words, those whose tokenisation has the same number of tokens (and differs from the original,
and holds no special id) are the candidates, one taken uniformly. If there is none (no similar word,
or none of that length), the word falls back to the random branch: each of its tokens becomes an
independent random non-special id, the same as the 10% random case.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from plmops.platform.pretraining.masking import (
    IGNORE_INDEX,
    NGRAM_PROBS,
    VocabInfo,
    batch_tensors,
    broadcast_from_start,
    check_probs,
    choose,
    dense_runs,
    run_starts,
)
from plmops.platform.pretraining.similar_words import SimilarWords

MAC_PROBS = (0.8, 0.1, 0.1)  # similar word / random tokens / unchanged


@dataclass
class SimilarTokens:
    """A similar-word source seen through the tokenizer, with the length policy; cached per word."""

    source: SimilarWords
    tokenize_word: Callable[[str], Sequence[int]]
    vocab: VocabInfo
    _cache: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict, init=False, repr=False)

    def replacements(self, word: str, original: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Tokenisations of the word's similar words that can stand in its slots `original`."""
        tokenised = self._cache.get(word)
        if tokenised is None:
            forbidden = {self.vocab.mask_token_id, *self.vocab.special_ids}
            candidates = (tuple(self.tokenize_word(w)) for w in self.source.similar(word))
            tokenised = tuple(t for t in candidates if t and forbidden.isdisjoint(t))
            self._cache[word] = tokenised
        return [t for t in tokenised if len(t) == len(original) and t != original]


def mac(
    batch: Mapping[str, Any],
    similar: SimilarTokens,
    generator: torch.Generator,
    *,
    rate: float = 0.15,
    replace_probs: Sequence[float] = MAC_PROBS,
    ngram_probs: Sequence[float] = NGRAM_PROBS,
) -> dict[str, Any]:
    """MacBERT corruption. The batch needs `words`: words[row][word_id] is the text of that word."""
    input_ids, word_ids = batch_tensors(batch)
    words = batch.get("words")
    if not isinstance(words, Sequence) or len(words) != len(input_ids):
        raise ValueError(f"batch['words'] must hold one list of word strings per row ({len(input_ids)} rows)")
    p_similar, p_random, _ = check_probs("replace_probs", replace_probs, size=3).tolist()
    chosen = choose(word_ids, "ngram", rate, generator, count="words", ngram_probs=ngram_probs).chosen
    draw = broadcast_from_start(torch.rand(word_ids.shape, generator=generator), word_ids)
    pick = torch.rand(word_ids.shape, generator=generator)
    to_similar = chosen & (draw < p_similar)
    to_random = chosen & (draw >= p_similar) & (draw < p_similar + p_random)
    corrupted = input_ids.clone()
    replaced = _put_similar(corrupted, word_ids, to_similar, pick, words, similar)
    to_random |= to_similar & ~replaced
    corrupted[to_random] = similar.vocab.random_ids(int(to_random.sum()), generator)
    return {**batch, "input_ids": corrupted, "labels": torch.where(chosen, input_ids, IGNORE_INDEX)}


def _put_similar(
    ids: torch.Tensor,
    word_ids: torch.Tensor,
    wanted: torch.Tensor,
    pick: torch.Tensor,
    words: Sequence[Sequence[str]],
    similar: SimilarTokens,
) -> torch.Tensor:
    """Write a same-length similar word over each wanted word, in place; returns the tokens written."""
    runs = dense_runs(word_ids)
    index = runs.clamp(min=0)
    sizes = torch.zeros_like(word_ids).scatter_add_(1, index, (runs >= 0).long()).gather(1, index)
    rows, cols = (run_starts(word_ids) & wanted).nonzero(as_tuple=True)
    table = ids.tolist()
    at_rows: list[int] = []
    at_cols: list[int] = []
    values: list[int] = []
    starts = zip(rows.tolist(), cols.tolist(), sizes[rows, cols].tolist(), word_ids[rows, cols].tolist())
    for (row, col, size, word_id), u in zip(starts, pick[rows, cols].tolist()):
        if word_id >= len(words[row]):
            raise ValueError(
                f"batch['words'][{row}] has {len(words[row])} words, word_ids uses word {word_id}"
            )
        options = similar.replacements(words[row][word_id], tuple(table[row][col : col + size]))
        if options:
            at_rows += [row] * size
            at_cols += range(col, col + size)
            values += options[int(u * len(options))]
    written = torch.zeros_like(wanted)
    if values:
        ids[at_rows, at_cols] = torch.tensor(values, dtype=ids.dtype)
        written[at_rows, at_cols] = True
    return written
