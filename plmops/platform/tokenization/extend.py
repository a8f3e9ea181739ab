"""Grow a vocabulary with pieces for a new language or script, and grow a model's embeddings to match.

CINO grew XLM-R's vocabulary this way for Tibetan and Mongolian: old ids stay where they are and the new
pieces are appended. Here each new embedding row starts as the mean of the rows of the pieces the old
tokenizer would have spelled it with, so the model begins from what it already knows about those
characters.

Choosing the pieces. A WordPiece vocabulary is trained on the new language alone (through the old
tokenizer's normaliser and pre-tokeniser) and its corpus is tokenised with it. Candidates are the pieces
that tokenisation used and every character of the corpus in both forms (word-initial and ##), minus
what the old vocabulary has. They are ranked
  * characters first, by use: without one, every word containing it is [UNK], and with all of them
    greedy longest match can always finish a word, whatever longer pieces make the cut;
  * then by tokens saved: uses x (pieces the old vocabulary, plus the new characters, needs to spell the
    candidate - 1), a first-order estimate that ignores how pieces compete inside a word.
The first `n_pieces` of that order are added.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from collections.abc import Set as AbstractSet

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertTokenizer, PreTrainedModel

from plmops.platform.tokenization.wordpiece import (
    CONTINUATION,
    check_wordpiece,
    encode_ids,
    train_pieces,
    vocab_list,
    with_vocab,
)


def spell(piece: str, vocab: Container[str]) -> list[str] | None:
    """The pieces of `vocab` that WordPiece's greedy longest match spells `piece` with (a `##` piece is
    spelled as a word continuation); None when some character cannot be matched."""
    continuation = piece.startswith(CONTINUATION)
    text = piece[len(CONTINUATION) :] if continuation else piece
    parts, start = [], 0
    while start < len(text):
        for end in range(len(text), start, -1):
            candidate = (CONTINUATION if start or continuation else "") + text[start:end]
            if candidate in vocab:
                break
        else:
            return None
        parts.append(candidate)
        start = end
    return parts


def _bare(piece: str) -> str:
    return piece.removeprefix(CONTINUATION)


def rank_pieces(candidates: Sequence[str], uses: np.ndarray, old_vocab: AbstractSet[str]) -> list[str]:
    """Candidates (all absent from `old_vocab`) in the order the module docstring describes; one that
    even the new characters cannot spell costs one token per character."""
    is_char = np.array([len(_bare(p)) == 1 for p in candidates], dtype=bool)
    known = set(old_vocab) | {p for p, c in zip(candidates, is_char) if c}
    cost = np.array([len(spell(p, known) or _bare(p)) for p in candidates], dtype=np.int64)
    saving = np.where(is_char, np.iinfo(np.int64).max, uses * (cost - 1))
    order = np.lexsort((-uses, -saving))  # by saving, ties by uses, then by candidate order
    return [candidates[i] for i in order.tolist()]


def extend_vocabulary(
    tokenizer: BertTokenizer,
    texts: Iterable[str],
    n_pieces: int,
    *,
    candidate_vocab_size: int | None = None,
    min_frequency: int = 2,
) -> tuple[BertTokenizer, list[str]]:
    """Append the `n_pieces` most useful new pieces for the language of `texts`; old ids are unchanged.

    Candidates come from a WordPiece of `candidate_vocab_size` (default 2 * n_pieces plus the specials)
    trained on `texts`. Fewer than `n_pieces` are added when fewer candidates exist.
    """
    check_wordpiece(tokenizer, "extend_vocabulary")
    if n_pieces < 1:
        raise ValueError(f"extend_vocabulary: n_pieces must be >= 1, got {n_pieces}")
    texts = list(texts)
    size = (
        2 * n_pieces + len(tokenizer.all_special_tokens)
        if candidate_vocab_size is None
        else candidate_vocab_size
    )
    local = train_pieces(tokenizer, texts, size, min_frequency, where="extend_vocabulary")
    local_vocab = local.get_vocab()
    uses = np.bincount(encode_ids(local, texts), minlength=len(local_vocab))
    old_pieces = vocab_list(tokenizer)
    old_vocab = set(old_pieces)
    counts = _candidate_uses(local_vocab, uses, set(tokenizer.all_special_tokens))
    candidates = [p for p in counts if p not in old_vocab]
    added = rank_pieces(candidates, np.array([counts[p] for p in candidates], dtype=np.int64), old_vocab)
    added = added[:n_pieces]
    return with_vocab(tokenizer, old_pieces + added), added


def _candidate_uses(local_vocab: dict[str, int], uses: np.ndarray, specials: set[str]) -> dict[str, int]:
    """Pieces the new language's own WordPiece used, with their use counts, plus every character of its
    alphabet in both forms (word-initial and ##), used or not: a character is the fallback that keeps a
    word from becoming [UNK] even when the longer pieces that hid it in training are not added."""
    by_id = sorted(local_vocab, key=local_vocab.__getitem__)
    counts = {p: int(uses[local_vocab[p]]) for p in by_id if uses[local_vocab[p]] > 0 and p not in specials}
    characters = sorted({_bare(p) for p in by_id if len(_bare(p)) == 1 and p not in specials})
    for character in characters:
        counts.setdefault(character, 0)
        counts.setdefault(CONTINUATION + character, 0)
    return counts


def tied_vocab_tensors(model: PreTrainedModel) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The word-embedding matrix and the MLM decoder bias (None without an MLM head), after checking that
    the decoder shares the embedding matrix: every vocabulary-sized tensor of the model."""
    weight = model.get_input_embeddings().weight
    decoder = model.get_output_embeddings()
    if decoder is None:
        return weight, None
    if decoder.weight is not weight:
        raise ValueError(f"{type(model).__name__}: the MLM decoder is not tied to the word embeddings")
    return weight, decoder.bias


def replace_vocab_tensors(model: PreTrainedModel, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Install new word embeddings (and the tied decoder with its bias) of a new vocabulary size, in place."""
    embeddings = nn.Embedding.from_pretrained(
        weight.detach().clone(), freeze=False, padding_idx=model.config.pad_token_id
    )
    model.set_input_embeddings(embeddings)
    if model.get_output_embeddings() is not None:
        decoder = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        decoder.weight = embeddings.weight
        if bias is not None:
            decoder.bias = nn.Parameter(bias.detach().clone())
        model.set_output_embeddings(decoder)
    model.config.vocab_size = weight.shape[0]


def _mean_rows(table: torch.Tensor, spellings: Sequence[Sequence[int] | None]) -> torch.Tensor:
    """Per spelling, the mean of its rows of `table`; the mean of all rows where it is None."""
    rows = table.mean(dim=0).expand(len(spellings), -1).clone()
    known = [i for i, s in enumerate(spellings) if s is not None]
    if known:
        flat = torch.tensor([j for i in known for j in spellings[i]], dtype=torch.long, device=table.device)
        lengths = torch.tensor([len(spellings[i]) for i in known], device=table.device)
        offsets = torch.cumsum(lengths, 0) - lengths
        rows[known] = F.embedding_bag(flat, table, offsets, mode="mean")
    return rows


@torch.no_grad()
def resize_embeddings(
    model: PreTrainedModel,
    old_tokenizer: BertTokenizer,
    new_tokenizer: BertTokenizer,
    added_pieces: Sequence[str],
) -> PreTrainedModel:
    """Grow `model` (in place, and returned) from `old_tokenizer`'s vocabulary to `new_tokenizer`'s.

    Old rows are untouched. A new piece's embedding row and decoder bias are the mean of those of the
    pieces `old_tokenizer` spells it with, or the mean over the whole old vocabulary when it cannot.
    """
    old_pieces, new_pieces = vocab_list(old_tokenizer), vocab_list(new_tokenizer)
    if new_pieces != old_pieces + list(added_pieces):
        raise ValueError(
            "resize_embeddings: new_tokenizer's vocabulary is not old_tokenizer's + added_pieces"
        )
    weight, bias = tied_vocab_tensors(model)
    if weight.shape[0] != len(old_pieces):
        raise ValueError(
            f"resize_embeddings: the model has {weight.shape[0]} embedding rows but old_tokenizer "
            f"{len(old_pieces)} pieces"
        )
    old_ids = {p: i for i, p in enumerate(old_pieces)}
    spellings = [spell(p, old_ids) for p in added_pieces]
    table = weight if bias is None else torch.cat([weight, bias[:, None].to(weight.dtype)], dim=1)
    rows = _mean_rows(table, [None if s is None else [old_ids[p] for p in s] for s in spellings])
    new_weight = torch.cat([weight, rows[:, : weight.shape[1]]])
    new_bias = None if bias is None else torch.cat([bias, rows[:, -1].to(bias.dtype)])
    replace_vocab_tensors(model, new_weight, new_bias)
    return model
