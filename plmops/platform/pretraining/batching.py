"""Corpus rows → pretraining batches: tokenise with word ids, cut long documents, pack short ones.

Three steps, each usable alone:

1. `encode(rows, tokenizer, max_len)`: one batched tokenizer call over the rows' texts; each token gets
   the jieba word its first character falls in (the corpus' `word_offsets`); a document longer than
   max_len is cut into windows, at word boundaries where a word fits, each `[CLS] ... [SEP]`.
2. `pack(lengths, max_len)`: first-fit decreasing over consecutive buffers, so rows fill up with whole
   examples (short news titles fill the gaps left by Wikipedia paragraphs) and padding mostly vanishes.
3. `BatchMaker`: rows of examples → padded tensors → one objective → the dict the plmops models take.

Sentence-order prediction (`BatchConfig.sop`) replaces the first two: `encode_pairs` cuts each document
into windows of at most max_len - 3 tokens and each window into two consecutive segments (see sop.py),
rows are not packed (one pair per row), and the maker lays a pair out as `[CLS] A [SEP] B [SEP]`,
swapped with probability 0.5, before it masks.

Packed rows carry `document_ids` (1..k per row, 0 on padding), which the encoder turns into
block-diagonal attention and restarting positions. Word ids are offset per document so they are unique
within a row, and every document starts with [CLS] and ends with [SEP] (word id -1), so the masking
objectives, whose units are runs of equal non-negative word ids, can never join words of two documents:
an n-gram that reaches a document's end is cut at its [SEP]. PERT shuffles positions along one cycle per
row, which would move tokens between documents, so it runs on a view with one document per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from plmops.platform.pretraining.macbert import SimilarTokens, mac
from plmops.platform.pretraining.masking import (
    IGNORE_INDEX,
    VocabInfo,
    mlm,
    ngram,
    word_ids_from_offsets,
    wwm,
)
from plmops.platform.pretraining.pert import pert
from plmops.platform.pretraining.sop import Segment, SpecialIds, pair_windows, sop, split_point
from plmops.platform.text.sentences import split_sentences

Objective = Literal["mlm", "wwm", "ngram", "mac", "pert"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
MASKERS = {"mlm": mlm, "wwm": wwm, "ngram": ngram}
SOP_MASKINGS = ("mlm", "wwm", "ngram", "mac")  # PERT moves tokens across the [SEP] of a pair


@dataclass(frozen=True, eq=False)
class Example:
    """One window of one document, `[CLS] tokens [SEP]`, with the words its tokens belong to.

    `row` and `token_start` say where it came from (the row's index in the `encode` call and the index,
    among that row's tokens, of its first token after [CLS]), so masks can be traced back to text.
    """

    input_ids: np.ndarray  # int64 [n]
    word_ids: np.ndarray  # int64 [n], an index into `words`; -1 on [CLS] and [SEP]
    words: tuple[str, ...]
    row: int
    token_start: int
    lang: str | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


# --- encoding -----------------------------------------------------------------------------------------


def _flat_pairs(nested: Sequence[Sequence[Sequence[int]]], name: str) -> tuple[np.ndarray, np.ndarray]:
    """[[(a, b), ...], ...] → ([total, 2] int64, count per item), without a Python loop per pair."""
    counts = np.fromiter(map(len, nested), dtype=np.int64, count=len(nested))
    flat = np.fromiter(chain.from_iterable(chain.from_iterable(nested)), dtype=np.int64)
    if len(flat) != 2 * counts.sum():
        raise ValueError(f"{name}: every span must be a pair [start, end)")
    return flat.reshape(-1, 2), counts


def _row_texts(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    texts = []
    for i, row in enumerate(rows):
        if not isinstance(row.get("text"), str) or row.get("word_offsets") is None:
            raise ValueError(f"rows[{i}] needs a str 'text' and 'word_offsets' (list of [start, end))")
        texts.append(row["text"])
    return texts


def _word_ids(
    token_offsets: np.ndarray, n_tokens: np.ndarray, spans: np.ndarray, n_words: np.ndarray, texts: list[str]
) -> np.ndarray:
    """Word index (within its own row) of every token of every row, in one vectorised pass.

    Rows are laid end to end in one character axis (each shifted past the previous text), so a single
    `word_ids_from_offsets` call maps all tokens; only on an error are rows checked one by one to name it.
    """
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    text_of_span = np.repeat(np.arange(len(texts)), n_words)
    outside = np.flatnonzero((spans[:, 0] < 0) | (spans[:, 1] > lengths[text_of_span]))
    if len(outside):
        r = int(text_of_span[outside[0]])
        raise ValueError(f"rows[{r}]: word span {tuple(spans[outside[0]].tolist())} lies outside its text")
    shift = np.cumsum(lengths + 1) - (lengths + 1)
    try:
        ids = word_ids_from_offsets(
            token_offsets + np.repeat(shift, n_tokens)[:, None], spans + shift[text_of_span][:, None]
        )
    except ValueError:
        _raise_for_row(token_offsets, n_tokens, spans, n_words)
        raise
    word_base = np.cumsum(n_words) - n_words
    ids = np.asarray(ids, dtype=np.int64)
    return np.where(ids >= 0, ids - np.repeat(word_base, n_tokens), -1)


def _raise_for_row(
    token_offsets: np.ndarray, n_tokens: np.ndarray, spans: np.ndarray, n_words: np.ndarray
) -> None:
    token_parts = np.split(token_offsets, np.cumsum(n_tokens)[:-1])
    span_parts = np.split(spans, np.cumsum(n_words)[:-1])
    for r, (tokens, words) in enumerate(zip(token_parts, span_parts)):
        try:
            word_ids_from_offsets(tokens, words)
        except ValueError as err:
            raise ValueError(f"rows[{r}]: {err}") from None


def _windows(word_ids: np.ndarray, capacity: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of at most `capacity`; a cut inside a word moves back to its start
    unless the word alone fills the window."""
    n = len(word_ids)
    if n <= capacity:
        return [(0, n)]
    new_word = np.ones(n, dtype=bool)
    new_word[1:] = (word_ids[1:] != word_ids[:-1]) | (word_ids[1:] < 0)
    word_start = np.maximum.accumulate(np.where(new_word, np.arange(n), 0))
    bounds, start = [], 0
    while n - start > capacity:
        end = start + capacity
        if word_start[end] > start:
            end = int(word_start[end])
        bounds.append((start, end))
        start = end
    return [*bounds, (start, n)]


@dataclass(frozen=True, eq=False)
class _Document:
    """One row tokenised: ids, word ids (within the row), each token's character span, the row's words."""

    text: str
    input_ids: np.ndarray
    word_ids: np.ndarray
    offsets: np.ndarray  # [tokens, 2]
    spans: np.ndarray  # [words, 2]
    lang: str | None

    def window(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """Tokens a..b: ids, word ids counted from the window's first word (-1 stays), those words."""
        window = self.word_ids[a:b]
        known = window[window >= 0]
        first, last = (int(known[0]), int(known[-1]) + 1) if len(known) else (0, 0)
        words = tuple(self.text[s:e] for s, e in self.spans[first:last].tolist())
        return self.input_ids[a:b], np.where(window >= 0, window - first, -1), words


def _tokenize(rows: Sequence[Mapping[str, Any]], tokenizer: Any, caller: str) -> list[_Document]:
    """One batched tokenizer call over the rows' texts; every token mapped to its word."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{caller} needs a fast tokenizer (offset mappings), got {type(tokenizer).__name__}")
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ValueError(f"{caller} needs a tokenizer with [CLS] and [SEP] tokens")
    texts = _row_texts(rows)
    if not texts:
        return []
    enc = tokenizer(
        texts,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # long documents are expected: they are cut into windows
    )
    token_offsets, n_tokens = _flat_pairs(enc["offset_mapping"], "offset_mapping")
    spans, n_words = _flat_pairs([row["word_offsets"] for row in rows], "word_offsets")
    ids = np.fromiter(chain.from_iterable(enc["input_ids"]), dtype=np.int64, count=int(n_tokens.sum()))
    word_ids = _word_ids(token_offsets, n_tokens, spans, n_words, texts)
    token_ends, span_ends = np.cumsum(n_tokens).tolist(), np.cumsum(n_words).tolist()
    documents = []
    for r, (row, text) in enumerate(zip(rows, texts)):
        t0, t1 = token_ends[r] - int(n_tokens[r]), token_ends[r]
        w0, w1 = span_ends[r] - int(n_words[r]), span_ends[r]
        documents.append(
            _Document(text, ids[t0:t1], word_ids[t0:t1], token_offsets[t0:t1], spans[w0:w1], row.get("lang"))
        )
    return documents


def encode(rows: Sequence[Mapping[str, Any]], tokenizer: Any, max_len: int) -> list[Example]:
    """Corpus rows (`text`, `word_offsets`, optional `lang`) → examples of at most max_len tokens.

    `tokenizer` is a Hugging Face fast tokenizer (offset mappings are needed) with [CLS] and [SEP].
    A row with no token at all (only whitespace or characters the tokenizer drops) gives no example.
    """
    if max_len < 3:
        raise ValueError(f"max_len must leave room for [CLS], [SEP] and a token, got {max_len}")
    documents = _tokenize(rows, tokenizer, "encode")
    cls, sep = np.array([tokenizer.cls_token_id]), np.array([tokenizer.sep_token_id])
    examples = []
    for r, doc in enumerate(documents):
        for a, b in _windows(doc.word_ids, max_len - 2) if len(doc.input_ids) else []:
            ids, word_ids, words = doc.window(a, b)
            examples.append(
                Example(
                    input_ids=np.concatenate([cls, ids, sep]),
                    word_ids=np.concatenate([[-1], word_ids, [-1]]),
                    words=words,
                    row=r,
                    token_start=a,
                    lang=doc.lang,
                )
            )
    return examples


@dataclass(frozen=True, eq=False)
class SopExample:
    """One window of one document as two consecutive segments for sentence-order prediction.

    `second` is None when the window is a single word and cannot be cut (see `sop.split_point`).
    `row` and `token_start` trace it back as for `Example`; `first` starts at token_start.
    """

    first: Segment
    second: Segment | None
    row: int
    token_start: int
    lang: str | None = None

    def __len__(self) -> int:
        """Tokens in its batch row, specials included."""
        if self.second is None:
            return len(self.first.input_ids) + 2
        return len(self.first.input_ids) + len(self.second.input_ids) + 3


def _segments(
    ids: np.ndarray, word_ids: np.ndarray, words: tuple[str, ...], cut: int | None
) -> tuple[Segment, Segment | None]:
    """A window's tokens as (first, second) cut before token `cut`; word ids renumbered per segment."""
    if cut is None:
        return Segment(ids, word_ids, words), None
    head = word_ids[:cut]
    k = int(head.max()) + 1 if (head >= 0).any() else 0
    tail = word_ids[cut:]
    return Segment(ids[:cut], head, words[:k]), Segment(
        ids[cut:], np.where(tail >= 0, tail - k, -1), words[k:]
    )


def encode_pairs(rows: Sequence[Mapping[str, Any]], tokenizer: Any, max_len: int) -> list[SopExample]:
    """Corpus rows → sentence-order examples: each document in windows of at most max_len - 3 tokens
    (`sop.pair_windows`), each window cut in two by `sop.split_point`.

    Sentences are found by `split_sentences`, the function ingestion stores `sentence_offsets` with,
    so rows need no more than `text` and `word_offsets`. A row with no token gives no example.
    """
    if max_len < 5:
        raise ValueError(f"max_len must leave room for [CLS], [SEP], [SEP] and two tokens, got {max_len}")
    examples = []
    for r, doc in enumerate(_tokenize(rows, tokenizer, "encode_pairs")):
        if not len(doc.input_ids):
            continue
        starts = np.array([s for s, _ in split_sentences(doc.text)], dtype=np.int64)
        sentence_ids = np.searchsorted(starts, doc.offsets[:, 0], side="right") - 1
        for a, b in pair_windows(doc.word_ids, sentence_ids, max_len - 3):
            ids, word_ids, words = doc.window(a, b)
            cut = split_point(word_ids, sentence_ids[a:b])
            examples.append(
                SopExample(*_segments(ids, word_ids, words, cut), row=r, token_start=a, lang=doc.lang)
            )
    return examples


# --- packing ------------------------------------------------------------------------------------------


def _first_fit_decreasing(lengths: np.ndarray, max_len: int) -> list[list[int]]:
    """Bins of item indices: items from longest to shortest, each into the first bin it fits."""
    free = np.empty(len(lengths), dtype=np.int64)
    bins: list[list[int]] = []
    for i in np.argsort(-lengths, kind="stable").tolist():
        size = int(lengths[i])
        fits = np.flatnonzero(free[: len(bins)] >= size)
        if len(fits):
            bins[fits[0]].append(i)
            free[fits[0]] -= size
        else:
            free[len(bins)] = max_len - size
            bins.append([i])
    return [sorted(b) for b in bins]


def pack(
    lengths: Sequence[int] | np.ndarray, max_len: int, *, buffer_size: int = 4096, seed: int = 0
) -> list[list[int]]:
    """Group item indices into rows of at most max_len tokens in all.

    First-fit decreasing over consecutive buffers of `buffer_size` items, so a stream packs with bounded
    memory and most rows come out full; the rows of each buffer are shuffled with `seed`, since FFD
    emits the longest items first. Indices inside a row keep their input order. Same input, same seed:
    same rows.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    bad = np.flatnonzero((lengths < 1) | (lengths > max_len))
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"item {i} has length {int(lengths[i])}; packing needs 1 <= length <= {max_len}")
    rng = np.random.default_rng(seed)
    rows: list[list[int]] = []
    for start in range(0, len(lengths), buffer_size):
        bins = _first_fit_decreasing(lengths[start : start + buffer_size], max_len)
        rows += [[start + i for i in bins[j]] for j in rng.permutation(len(bins)).tolist()]
    return rows


# --- collation ----------------------------------------------------------------------------------------


def _within_row_offsets(values: np.ndarray, per_row: np.ndarray) -> np.ndarray:
    """Exclusive running sum of `values` that restarts at every row (rows of `per_row` items each)."""
    running = np.cumsum(values) - values
    first_of_row = np.cumsum(per_row) - per_row
    return running - np.repeat(running[first_of_row], per_row)


def collate(
    rows: Sequence[Sequence[Example]],
    pad_id: int,
    *,
    packed: bool,
    max_len: int | None = None,
    pad_to_multiple_of: int = 1,
) -> dict[str, Any]:
    """Rows of examples laid out as padded tensors, before any objective.

    Returns `input_ids`, `word_ids` (offset per document, so unique within a row; -1 on specials and
    padding), `words` (per row, the documents' words in order: `words[r][word_ids[r, t]]`), and
    `document_ids` (packed: 1..k per row, 0 on padding) or `attention_mask` (one example per row).
    """
    if not rows:
        raise ValueError("collate needs at least one row")
    per_row = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    bad = np.flatnonzero(per_row < 1 if packed else per_row != 1)
    if len(bad):
        r = int(bad[0])
        wanted = "at least one example" if packed else "exactly one example (packed=False)"
        raise ValueError(f"rows[{r}] holds {int(per_row[r])} examples; each row needs {wanted}")
    examples = [e for row in rows for e in row]
    lengths = np.fromiter(map(len, examples), dtype=np.int64, count=len(examples))
    if any(len(e.word_ids) != len(e.input_ids) for e in examples):
        raise ValueError("collate: an example has input_ids and word_ids of different lengths")
    row_lengths = np.add.reduceat(lengths, np.cumsum(per_row) - per_row)
    too_long = np.flatnonzero(row_lengths > (max_len or row_lengths.max()))
    if len(too_long):
        r = int(too_long[0])
        raise ValueError(f"rows[{r}] holds {int(row_lengths[r])} tokens, more than max_len {max_len}")
    seq = -(-int(row_lengths.max()) // pad_to_multiple_of) * pad_to_multiple_of
    seq = min(seq, max_len) if max_len else seq

    col_start = _within_row_offsets(lengths, per_row)
    word_offset = _within_row_offsets(np.fromiter((len(e.words) for e in examples), np.int64), per_row)
    token_rank = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    at = (
        np.repeat(np.repeat(np.arange(len(rows)), per_row), lengths),
        np.repeat(col_start, lengths) + token_rank,
    )
    word_ids = np.concatenate([e.word_ids for e in examples])
    document = np.arange(len(examples)) - np.repeat(np.cumsum(per_row) - per_row, per_row) + 1

    input_ids = np.full((len(rows), seq), pad_id, dtype=np.int64)
    input_ids[at] = np.concatenate([e.input_ids for e in examples])
    row_word_ids = np.full_like(input_ids, -1)
    row_word_ids[at] = np.where(word_ids >= 0, word_ids + np.repeat(word_offset, lengths), -1)
    document_ids = np.zeros_like(input_ids)
    document_ids[at] = np.repeat(document, lengths)
    layout = "document_ids" if packed else "attention_mask"
    return {
        "input_ids": torch.from_numpy(input_ids),
        "word_ids": torch.from_numpy(row_word_ids),
        "words": [list(chain.from_iterable(e.words for e in row)) for row in rows],
        layout: torch.from_numpy(document_ids if packed else (document_ids > 0).astype(np.int64)),
    }


# --- objectives on packed rows ------------------------------------------------------------------------


@dataclass(frozen=True)
class Documents:
    """The documents of a batch: document d fills row[d], columns start[d] to start[d] + length[d].

    Built from `document_ids` (or an attention mask: one document per row), to run an objective that
    must see one document per row on a [documents, width] view and to write its result back.
    """

    row: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor

    @classmethod
    def of(cls, document_ids: torch.Tensor) -> Documents:
        real = document_ids != 0
        begins = real & (document_ids != F.pad(document_ids[:, :-1], (1, 0), value=0))
        row, start = begins.nonzero(as_tuple=True)
        run = begins.flatten().cumsum(0)[real.flatten()] - 1
        return cls(row, start, torch.bincount(run, minlength=len(row)))

    def by_length(self, min_width: int = 8) -> list[Documents]:
        """The documents in groups of similar length (widths up to the next power of two), so that
        short news titles are not padded to the width of a Wikipedia paragraph."""
        bucket = torch.log2(self.length.clamp(min=min_width).double()).ceil().long()
        return [
            Documents(*(t[bucket == b] for t in (self.row, self.start, self.length))) for b in bucket.unique()
        ]

    def index(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, columns, valid), each [documents, longest]: where the view's cells lie in the batch."""
        offset = torch.arange(int(self.length.max()))
        valid = offset < self.length[:, None]
        columns = torch.where(valid, self.start[:, None] + offset, self.start[:, None])
        return self.row[:, None].expand_as(columns), columns, valid


def pert_per_document(batch: Mapping[str, Any], generator: torch.Generator, *, rate: float) -> dict[str, Any]:
    """PERT on every document alone: its budget and its shuffle stay inside the document.

    Returns the permuted `input_ids`, and `labels` as column indices in the batch's own rows.
    """
    input_ids, word_ids = batch["input_ids"], batch["word_ids"]
    permuted = input_ids.clone()
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for group in Documents.of(batch.get("document_ids", batch.get("attention_mask"))).by_length():
        rows, columns, valid = group.index()
        view = {
            "input_ids": input_ids[rows, columns],
            "word_ids": word_ids[rows, columns].masked_fill(~valid, -1),
        }
        out = pert(view, generator, rate=rate)
        local = out["labels"]
        permuted[rows[valid], columns[valid]] = out["input_ids"][valid]
        labels[rows[valid], columns[valid]] = torch.where(
            local >= 0, local + group.start[:, None], IGNORE_INDEX
        )[valid]
    return {**batch, "input_ids": permuted, "labels": labels}


# --- the batch maker ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchConfig:
    """How examples become training batches. `sop`: rows are sentence-order pairs (`encode_pairs`),
    one per row, with the masking objective on top."""

    objective: Objective = "wwm"
    max_len: int = 512
    packing: bool = True
    rate: float = 0.15
    pad_to_multiple_of: int = 8
    pack_buffer: int = 4096
    seed: int = 0
    sop: bool = False

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"BatchConfig.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.max_len < 3 or self.pad_to_multiple_of < 1:
            raise ValueError(
                f"BatchConfig: max_len >= 3 and pad_to_multiple_of >= 1 needed, "
                f"got {self.max_len} and {self.pad_to_multiple_of}"
            )
        if self.sop and (self.packing or self.objective not in SOP_MASKINGS or self.max_len < 5):
            raise ValueError(
                f"BatchConfig.sop needs packing=False, an objective in {SOP_MASKINGS} and max_len >= 5, "
                f"got packing={self.packing}, objective={self.objective!r}, max_len={self.max_len}"
            )


class BatchMaker:
    """Examples → rows (packed or one per row) → model-ready batches for one objective.

    A batch holds `input_ids`, `document_ids` (packing) or `attention_mask`, and `labels` (masked LM
    targets; `mac` too) or `pointer_labels` (PERT: the column where each chosen position's original
    token now sits); with `config.sop` also `token_type_ids` and `sentence_order_label` (the rows are
    `SopExample`s). It goes straight into `PlmopsForMaskedLM` / `PlmopsForPreTraining(**batch)`.
    Randomness: the generator passed, else the maker's own, seeded by `config.seed`; an SOP batch
    draws its swaps first, then its masking. With DataLoader workers, give each worker its own seed
    (the maker is copied into every worker with its state).
    """

    def __init__(
        self,
        config: BatchConfig,
        vocab: VocabInfo,
        pad_id: int,
        similar: SimilarTokens | None = None,
        special: SpecialIds | None = None,
    ) -> None:
        if config.objective == "mac" and similar is None:
            raise ValueError("BatchMaker: objective 'mac' needs `similar` (a SimilarTokens)")
        if config.sop and special is None:
            raise ValueError("BatchMaker: sop needs `special` (the [CLS], [SEP] and [PAD] ids)")
        self.config = config
        self.vocab = vocab
        self.pad_id = pad_id
        self.similar = similar
        self.special = special
        self.generator = torch.Generator().manual_seed(config.seed)

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, config: BatchConfig, similar: SimilarTokens | None = None
    ) -> BatchMaker:
        if tokenizer.pad_token_id is None:
            raise ValueError("BatchMaker.from_tokenizer: the tokenizer has no [PAD] token")
        special = None
        if tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None:
            special = SpecialIds(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
        return cls(config, VocabInfo.from_tokenizer(tokenizer), tokenizer.pad_token_id, similar, special)

    def rows(self, examples: Sequence[Example | SopExample]) -> list[list[Example | SopExample]]:
        """Examples grouped into rows: packed by `pack`, or one per row in the order given.

        A pack buffer only mixes what it holds, so shuffle the examples first if the corpus is ordered.
        """
        if not self.config.packing:
            return [[e] for e in examples]
        lengths = np.fromiter(map(len, examples), dtype=np.int64, count=len(examples))
        groups = pack(
            lengths, self.config.max_len, buffer_size=self.config.pack_buffer, seed=self.config.seed
        )
        return [[examples[i] for i in group] for group in groups]

    def collate(
        self, rows: Sequence[Sequence[Example | SopExample]], generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """The padded batch before the objective (with `word_ids` and `words`). For SOP the pairs are
        laid out here, so the swaps draw from `generator` (else the maker's own)."""
        c = self.config
        if c.sop:
            return self._pairs(rows, self.generator if generator is None else generator)
        return collate(
            rows, self.pad_id, packed=c.packing, max_len=c.max_len, pad_to_multiple_of=c.pad_to_multiple_of
        )

    def _pairs(
        self, rows: Sequence[Sequence[Example | SopExample]], generator: torch.Generator
    ) -> dict[str, Any]:
        bad = [r for r, row in enumerate(rows) if len(row) != 1 or not isinstance(row[0], SopExample)]
        if not rows or bad:
            raise ValueError(f"BatchMaker (sop): every row must hold one SopExample; rows {bad[:5]} do not")
        c = self.config
        pairs = [(row[0].first, row[0].second) for row in rows]
        return sop(pairs, self.special, c.max_len, generator, pad_to_multiple_of=c.pad_to_multiple_of)

    def apply(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        """Run the objective on a collated batch; keep only what the model takes."""
        generator = self.generator if generator is None else generator
        c = self.config
        if c.objective == "pert":
            out = pert_per_document(batch, generator, rate=c.rate)
            targets = {"pointer_labels": out["labels"]}
        elif c.objective == "mac":
            out = mac(batch, self.similar, generator, rate=c.rate)
            targets = {"labels": out["labels"]}
        else:
            out = MASKERS[c.objective](batch, self.vocab, generator, rate=c.rate)
            targets = {"labels": out["labels"]}
        layout = "document_ids" if c.packing else "attention_mask"
        pair = {k: batch[k] for k in ("token_type_ids", "sentence_order_label") if k in batch}
        return {"input_ids": out["input_ids"], layout: batch[layout], **pair, **targets}

    def __call__(
        self, rows: Sequence[Sequence[Example | SopExample]], generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        generator = self.generator if generator is None else generator
        return self.apply(self.collate(rows, generator), generator)

    def encode(self, rows: Sequence[Mapping[str, Any]], tokenizer: Any) -> list[Example | SopExample]:
        """Corpus rows → this maker's examples: `encode_pairs` with sop, else `encode`."""
        return (encode_pairs if self.config.sop else encode)(rows, tokenizer, self.config.max_len)
