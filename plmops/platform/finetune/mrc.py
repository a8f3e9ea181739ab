"""Span-extraction MRC (SQuAD format: CMRC 2018, TibetanQA): windows in, answer strings out.

A context longer than the model's window is cut into overlapping windows; each window is
`[CLS] question [SEP] context slice [SEP]`. Training labels are token positions of the answer in
the window, or the [CLS] position (0) when the window does not hold the whole answer, so the model
learns to point at [CLS] there. At prediction time every window of a question proposes spans, and
the best one over all windows is mapped back to the original context through character offsets:
the answer text is then a slice of the context, never a detokenised string, so [UNK] characters,
lowercasing and WordPiece splits cannot alter it.

`doc_stride` follows transformers' `stride`: it is the number of context tokens two consecutive
windows share (the original BERT scripts called the step between window starts the stride).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

CLS_INDEX = 0
CONTEXT_SEQUENCE = 1  # sequence id of the context in a (question, context) pair

Offset = tuple[int, int]


class MRCExampleLike(Protocol):
    """Any record with these attributes (e.g. `plmops.platform.finetune.datasets.MRCExample`).

    `answer_starts[i]` is the character offset of `answers[i]` in `context`; an empty `answers`
    means the question has no answer in the context.
    """

    @property
    def qid(self) -> str: ...
    @property
    def context(self) -> str: ...
    @property
    def question(self) -> str: ...
    @property
    def answers(self) -> Sequence[str]: ...
    @property
    def answer_starts(self) -> Sequence[int]: ...


@dataclass
class MRCFeatures:
    """One row per window; `example_index` points back into the examples list given to
    `prepare_features`, which `decode_spans` needs again (same list, same order)."""

    input_ids: np.ndarray  # [windows, seq] int64, padded to the longest window
    attention_mask: np.ndarray  # [windows, seq]
    token_type_ids: np.ndarray  # [windows, seq]
    example_index: np.ndarray  # [windows] int64
    offset_mapping: list[list[Offset | None]]  # character span of context tokens, None elsewhere
    start_positions: np.ndarray | None = None  # [windows], training only; CLS_INDEX = not in window
    end_positions: np.ndarray | None = None
    truncated_questions: int = 0
    dropped_windows: int = 0  # windows without the answer left out on request
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (example index, why)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @cached_property
    def context_mask(self) -> np.ndarray:
        """[windows, seq] bool: True where a token belongs to the context, i.e. may bound an answer."""
        mask = np.zeros(self.input_ids.shape, dtype=bool)
        for row, offsets in enumerate(self.offset_mapping):
            mask[row, : len(offsets)] = [o is not None for o in offsets]
        return mask

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for `PlmopsForQuestionAnswering` / `BertForQuestionAnswering`; the
        labels are included when the features were built for training."""
        inputs = {
            "input_ids": torch.from_numpy(self.input_ids),
            "attention_mask": torch.from_numpy(self.attention_mask),
            "token_type_ids": torch.from_numpy(self.token_type_ids),
        }
        if self.start_positions is not None and self.end_positions is not None:
            inputs["start_positions"] = torch.from_numpy(self.start_positions)
            inputs["end_positions"] = torch.from_numpy(self.end_positions)
        return inputs


@dataclass(frozen=True)
class SpanCandidate:
    """A proposed answer: `context[start_char:end_char] == text`; `score` is start + end logit."""

    text: str
    score: float
    start_char: int
    end_char: int
    window: int


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------


def prepare_features(
    examples: Sequence[MRCExampleLike],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 512,
    doc_stride: int = 128,
    max_query_length: int = 64,
    train: bool = True,
    *,
    keep_windows_without_answer: bool = True,
) -> MRCFeatures:
    """Tokenise (question, context) pairs into overlapping windows.

    Questions over `max_query_length` tokens are cut (counted in `truncated_questions`) so every
    window keeps room for context. Records that cannot be used are skipped and listed in `skipped`
    with the reason: non-text fields always; in training also answers that cannot be found in the
    context (an answer whose offset is wrong is re-located at its nearest verbatim occurrence).
    `keep_windows_without_answer=False` drops training windows that miss the answer of an
    answerable question (counted in `dropped_windows`).
    """
    _check_lengths(tokenizer, max_length, doc_stride, max_query_length)
    kept, spans, skipped = [], [], []
    for index, example in enumerate(examples):
        reason = _invalid_reason(example, train)
        span = None
        if reason is None and train:
            span, reason = _answer_span(example)
        if reason is not None:
            skipped.append((index, reason))
            continue
        kept.append(index)
        spans.append(span)
    questions, truncated = _truncate_questions(
        tokenizer, [examples[i].question for i in kept], max_query_length
    )
    features = _tokenize(
        tokenizer, kept, questions, [examples[i].context for i in kept], max_length, doc_stride
    )
    features.truncated_questions, features.skipped = truncated, skipped
    if train:
        _label(features, dict(zip(kept, spans)), keep_windows_without_answer)
    return features


def _check_lengths(
    tokenizer: PreTrainedTokenizerBase, max_length: int, doc_stride: int, max_query_length: int
) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"prepare_features: {type(tokenizer).__name__} is not a fast tokenizer; offsets need one"
        )
    if max_query_length < 1 or doc_stride < 0:
        raise ValueError(
            f"prepare_features: need max_query_length >= 1 and doc_stride >= 0, "
            f"got {max_query_length} and {doc_stride}"
        )
    room = max_length - max_query_length - tokenizer.num_special_tokens_to_add(pair=True)
    if doc_stride >= room:
        raise ValueError(
            f"prepare_features: doc_stride {doc_stride} must be below the {room} context tokens a "
            f"window holds with a full question (max_length {max_length} - max_query_length "
            f"{max_query_length} - special tokens), or windows would not advance"
        )


def _invalid_reason(example: Any, train: bool) -> str | None:
    for name in ("qid", "context", "question"):
        if not isinstance(getattr(example, name, None), str):
            return f"{name} is missing or not a string"
    if not train:
        return None
    answers, starts = getattr(example, "answers", None), getattr(example, "answer_starts", None)
    if answers is None or starts is None or len(answers) != len(starts):
        return "answers and answer_starts are missing or differ in length"
    if not all(isinstance(a, str) for a in answers) or not all(
        isinstance(s, (int, np.integer)) for s in starts
    ):
        return "answers must be strings and answer_starts integers"
    return None


def _answer_span(example: MRCExampleLike) -> tuple[Offset | None, str | None]:
    """Character span of the first answer that can be placed in the context, whitespace trimmed.

    Returns (None, None) for an unanswerable question (no answers), (None, reason) when answers
    exist but none is found.
    """
    context, listed = example.context, list(zip(example.answers, example.answer_starts))
    for text, start in listed:
        stripped = text.strip()
        if not stripped:
            continue
        start += len(text) - len(text.lstrip())
        if context[start : start + len(stripped)] != stripped:
            start = _nearest_occurrence(context, stripped, start)
        if start >= 0:
            return (start, start + len(stripped)), None
    if not listed:
        return None, None
    return None, f"none of its {len(listed)} answer(s) occurs in the context"


def _nearest_occurrence(context: str, text: str, near: int) -> int:
    best, at = -1, context.find(text)
    while at >= 0:
        if best < 0 or abs(at - near) < abs(best - near):
            best = at
        at = context.find(text, at + 1)
    return best


def _truncate_questions(
    tokenizer: PreTrainedTokenizerBase, questions: list[str], limit: int
) -> tuple[list[str], int]:
    """Cut each question's text before its token number `limit` + 1 (a text cut, so offsets stay
    exact).

    A cut can re-tokenise differently (a word that was [UNK] as a whole may split), hence the loop;
    every round shortens the text, so it ends.
    """
    out = list(questions)
    pending = list(range(len(out)))
    while pending:
        encoded = tokenizer([out[i] for i in pending], add_special_tokens=False, return_offsets_mapping=True)
        over = [(i, o) for i, o in zip(pending, encoded["offset_mapping"]) if len(o) > limit]
        for i, offsets in over:
            out[i] = out[i][: min(offsets[limit][0], len(out[i]) - 1)].rstrip()
        pending = [i for i, _ in over]
    return out, sum(cut != whole for cut, whole in zip(out, questions))


def _tokenize(
    tokenizer: PreTrainedTokenizerBase,
    kept: list[int],
    questions: list[str],
    contexts: list[str],
    max_length: int,
    doc_stride: int,
) -> MRCFeatures:
    if not kept:
        empty = np.zeros((0, 0), dtype=np.int64)
        return MRCFeatures(empty, empty.copy(), empty.copy(), np.zeros(0, dtype=np.int64), [])
    encoded = tokenizer(
        questions,
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        padding="longest",
    )
    offsets = []
    for row, row_offsets in enumerate(encoded["offset_mapping"]):
        sequence_ids = encoded.sequence_ids(row)
        offsets.append(
            [tuple(o) if s == CONTEXT_SEQUENCE else None for o, s in zip(row_offsets, sequence_ids)]
        )
    kept_array = np.asarray(kept, dtype=np.int64)
    return MRCFeatures(
        input_ids=np.asarray(encoded["input_ids"], dtype=np.int64),
        attention_mask=np.asarray(encoded["attention_mask"], dtype=np.int64),
        token_type_ids=np.asarray(encoded["token_type_ids"], dtype=np.int64),
        example_index=kept_array[np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)],
        offset_mapping=offsets,
    )


def _label(features: MRCFeatures, spans: dict[int, Offset | None], keep_windows_without_answer: bool) -> None:
    positions = [
        _window_positions(offsets, spans[int(e)])
        for offsets, e in zip(features.offset_mapping, features.example_index)
    ]
    starts = np.asarray([p[0] for p in positions], dtype=np.int64)
    ends = np.asarray([p[1] for p in positions], dtype=np.int64)
    features.start_positions, features.end_positions = starts, ends
    if keep_windows_without_answer:
        return
    answerable = np.asarray([spans[int(e)] is not None for e in features.example_index], dtype=bool)
    keep = ~answerable | (starts != CLS_INDEX)
    _select_windows(features, keep)
    features.dropped_windows = int((~keep).sum())


def _window_positions(offsets: list[Offset | None], span: Offset | None) -> tuple[int, int]:
    """Token indices of the first and last token overlapping the answer, or CLS twice when the
    window does not contain every character of it."""
    if span is None:
        return CLS_INDEX, CLS_INDEX
    tokens = [(i, o) for i, o in enumerate(offsets) if o is not None]
    if not tokens or tokens[0][1][0] > span[0] or tokens[-1][1][1] < span[1]:
        return CLS_INDEX, CLS_INDEX
    start = next((i for i, o in tokens if o[1] > span[0]), None)
    end = next((i for i, o in reversed(tokens) if o[0] < span[1]), None)
    if start is None or end is None or start > end:  # the answer lies wholly on dropped characters
        return CLS_INDEX, CLS_INDEX
    return start, end


def _select_windows(features: MRCFeatures, keep: np.ndarray) -> None:
    for name in (
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "example_index",
        "start_positions",
        "end_positions",
    ):
        setattr(features, name, getattr(features, name)[keep])
    features.offset_mapping = [o for o, k in zip(features.offset_mapping, keep) if k]
    features.__dict__.pop("context_mask", None)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def decode_spans(
    start_logits: np.ndarray | torch.Tensor,
    end_logits: np.ndarray | torch.Tensor,
    features: MRCFeatures,
    examples: Sequence[MRCExampleLike],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """The best answer per question ("" when no window offers a valid span)."""
    nbest = decode_nbest(start_logits, end_logits, features, examples, n_best, max_answer_length)
    return {qid: (candidates[0].text if candidates else "") for qid, candidates in nbest.items()}


def decode_nbest(
    start_logits: np.ndarray | torch.Tensor,
    end_logits: np.ndarray | torch.Tensor,
    features: MRCFeatures,
    examples: Sequence[MRCExampleLike],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, list[SpanCandidate]]:
    """Up to `n_best` distinct spans per question over all its windows, best first.

    A span is valid when both ends are context tokens, start <= end and it is at most
    `max_answer_length` tokens long; its score is start logit + end logit. Per window only the
    `n_best` highest start and end logits are paired, as in the reference SQuAD scripts.
    Every example gets an entry, empty when it has no window or no valid span.
    """
    if n_best < 1 or max_answer_length < 1:
        raise ValueError(
            f"decode: need n_best >= 1 and max_answer_length >= 1, got {n_best}, {max_answer_length}"
        )
    start, end = _logits(start_logits, features, "start_logits"), _logits(end_logits, features, "end_logits")
    windows, starts, ends, scores = _valid_pairs(start, end, features.context_mask, n_best, max_answer_length)
    owners = features.example_index[windows]
    order = np.lexsort((-scores, owners))
    bounds = np.searchsorted(owners[order], np.arange(len(examples) + 1))
    result: dict[str, list[SpanCandidate]] = {}
    for index, example in enumerate(examples):
        if example.qid in result:
            raise ValueError(f"decode: question id {example.qid!r} occurs twice (again at example {index})")
        picked = order[bounds[index] : bounds[index + 1]]
        result[example.qid] = _distinct_spans(
            example.context, features, windows[picked], starts[picked], ends[picked], scores[picked], n_best
        )
    return result


def _logits(logits: np.ndarray | torch.Tensor, features: MRCFeatures, name: str) -> np.ndarray:
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    array = np.asarray(logits, dtype=np.float64)
    if array.shape != features.input_ids.shape:
        raise ValueError(
            f"decode: {name} has shape {array.shape}, the features have {features.input_ids.shape} "
            f"(windows, tokens); pass the logits of exactly these features, in order"
        )
    return array


def _valid_pairs(
    start: np.ndarray, end: np.ndarray, mask: np.ndarray, k: int, max_answer_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(window, start token, end token, score) of every valid pair among each window's top-k
    starts x top-k ends."""
    k = min(k, start.shape[1])
    start = np.where(mask, start, -np.inf)
    end = np.where(mask, end, -np.inf)
    top_starts = np.argsort(-start, axis=1, kind="stable")[:, :k]
    top_ends = np.argsort(-end, axis=1, kind="stable")[:, :k]
    pair_scores = (
        np.take_along_axis(start, top_starts, axis=1)[:, :, None]
        + np.take_along_axis(end, top_ends, axis=1)[:, None, :]
    )
    length = top_ends[:, None, :] - top_starts[:, :, None] + 1
    valid = np.isfinite(pair_scores) & (length >= 1) & (length <= max_answer_length)
    windows, a, b = np.nonzero(valid)
    return windows, top_starts[windows, a], top_ends[windows, b], pair_scores[windows, a, b]


def _distinct_spans(
    context: str,
    features: MRCFeatures,
    windows: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    scores: np.ndarray,
    n_best: int,
) -> list[SpanCandidate]:
    """Best-first candidates with one entry per character span (overlapping windows propose the
    same span more than once)."""
    seen: set[Offset] = set()
    out: list[SpanCandidate] = []
    for window, s, e, score in zip(windows.tolist(), starts.tolist(), ends.tolist(), scores.tolist()):
        offsets = features.offset_mapping[window]
        span = (offsets[s][0], offsets[e][1])
        if span in seen:
            continue
        seen.add(span)
        out.append(SpanCandidate(context[span[0] : span[1]], float(score), span[0], span[1], window))
        if len(out) == n_best:
            break
    return out
