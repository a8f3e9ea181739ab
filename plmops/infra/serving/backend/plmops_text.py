"""Raw text to model tensors and model outputs back to answers: the logic of the Triton Python models.

This file is copied next to each preprocess/postprocess `model.py` in a model repository and runs in
the serving environment, which has numpy, tokenizers and onnxruntime but neither torch, transformers
nor plmops: it imports nothing else. It follows the fine-tuning code's policies so that a served model
answers as `plmops.platform.finetune` predicts:

* classification: `longest_first` truncation to `max_length` (classification.py);
* question answering: questions cut to `max_query_length` tokens by cutting their text, passages cut
  into windows sharing `doc_stride` tokens, the best span over all windows among each window's top
  `n_best` starts x ends (mrc.py);
* token classification: one tag per pre-tokenised word, read at its first sub-token (ner.py), decoded
  into entities with CoNLL's lenient rules (metrics.entity_spans). A text over `max_length` tokens is
  cut, not split into windows: words past the cut get no tag.

`truncation="reject"` turns every cut above into an error naming the text, for clients that must
never get an answer computed on part of their input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding, Tokenizer

TASKS = ("sequence-classification", "token-classification", "question-answering")
TRUNCATION_POLICIES = ("truncate", "reject")
CONTEXT_SEQUENCE = 1  # sequence id of the passage in a (question, passage) pair


class InputError(ValueError):
    """A request the client must fix; the message names the input tensor and the item."""


def decode_texts(values: np.ndarray, name: str) -> list[str]:
    """UTF-8 texts from a BYTES tensor of shape [n]; an invalid byte is reported by item and offset."""
    if values.ndim != 1 or values.shape[0] == 0:
        raise InputError(f"{name} must be a non-empty 1-D list of texts, got shape {list(values.shape)}")
    texts = []
    for i, value in enumerate(values.tolist()):
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise InputError(
                f"{name}[{i}] is not valid UTF-8: byte {raw[err.start]:#04x} at offset {err.start} ({err.reason})"
            ) from None
    return texts


@dataclass(frozen=True)
class TextPolicy:
    """How texts become model rows; `max_rows` is the model step's max_batch_size."""

    task: str
    max_length: int
    truncation: str = "truncate"
    doc_stride: int = 128
    max_query_length: int = 64
    max_rows: int = 32

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.truncation not in TRUNCATION_POLICIES:
            raise ValueError(f"unknown truncation policy {self.truncation!r}; expected one of {TRUNCATION_POLICIES}")
        if self.max_length < 4 or self.max_rows < 1:
            raise ValueError(f"need max_length >= 4 and max_rows >= 1, got {self.max_length}, {self.max_rows}")


class Preprocessor:
    """Tokenises one request's texts into padded int64 rows plus what the postprocess step needs."""

    def __init__(self, tokenizer_file: str, policy: TextPolicy, pad_token: str = "[PAD]") -> None:
        self.policy = policy
        self._plain = Tokenizer.from_file(tokenizer_file)
        self._plain.no_truncation()
        self._plain.no_padding()
        pad_id = self._plain.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"{tokenizer_file}: the pad token {pad_token!r} is not in the vocabulary")
        self.pad_id = pad_id
        self._cut = Tokenizer.from_str(self._plain.to_str())
        if policy.task == "question-answering":
            self._check_windows()
            self._cut.enable_truncation(policy.max_length, stride=policy.doc_stride, strategy="only_second")
        else:
            self._cut.enable_truncation(policy.max_length, strategy="longest_first")

    def _check_windows(self) -> None:
        room = self.policy.max_length - self.policy.max_query_length - self._plain.num_special_tokens_to_add(True)
        if not 0 <= self.policy.doc_stride < room:
            raise ValueError(
                f"doc_stride {self.policy.doc_stride} must be below the {room} passage tokens a window holds "
                f"(max_length {self.policy.max_length} - max_query_length {self.policy.max_query_length} - specials)"
            )

    def encode_classification(self, texts: list[str], pairs: list[str] | None, name: str) -> dict[str, np.ndarray]:
        inputs: list = texts if pairs is None else list(zip(texts, pairs))
        full = self._plain.encode_batch(inputs)
        over = [len(e.ids) > self.policy.max_length for e in full]
        self._refuse_cut(over, [len(e.ids) for e in full], name)
        encodings = [self._cut.encode(*_pair(x)) if cut else e for x, e, cut in zip(inputs, full, over)]
        return {**self._stack(encodings), "TRUNCATED": np.asarray(over, dtype=bool)}

    def encode_tokens(self, texts: list[str], name: str) -> dict[str, np.ndarray]:
        full = self._plain.encode_batch(texts)
        over = [len(e.ids) > self.policy.max_length for e in full]
        self._refuse_cut(over, [len(e.ids) for e in full], name)
        encodings = [self._cut.encode(t) if cut else e for t, e, cut in zip(texts, full, over)]
        arrays = self._stack(encodings)
        arrays["OFFSETS"] = _offsets(encodings, arrays["input_ids"].shape, lambda e, t: e.word_ids[t] is not None)
        words = np.full(arrays["input_ids"].shape, -1, dtype=np.int64)
        for row, encoding in enumerate(encodings):
            words[row, : len(encoding.ids)] = [-1 if w is None else w for w in encoding.word_ids]
        return {**arrays, "WORD_IDS": words, "TRUNCATED": np.asarray(over, dtype=bool)}

    def encode_qa(self, questions: list[str], contexts: list[str], name: str) -> dict[str, np.ndarray]:
        cut_questions = self._truncate_questions(questions)
        over = [cut != whole for cut, whole in zip(cut_questions, questions)]
        if self.policy.truncation == "reject" and any(over):
            raise InputError(
                f"{name}[{over.index(True)}] has more than {self.policy.max_query_length} tokens, the most a "
                "question may have (truncation policy 'reject')"
            )
        windows, owners = [], []
        for index, (question, context) in enumerate(zip(cut_questions, contexts)):
            encoding = self._cut.encode(question, context)
            for window in (encoding, *encoding.overflowing):
                windows.append(window)
                owners.append(index)
        if len(windows) > self.policy.max_rows:
            raise InputError(
                f"the {len(contexts)} passages of this request make {len(windows)} windows of "
                f"{self.policy.max_length} tokens, over the model's {self.policy.max_rows} rows per batch: "
                "send fewer or shorter passages per request"
            )
        arrays = self._stack(windows)
        arrays["OFFSETS"] = _offsets(windows, arrays["input_ids"].shape, _in_context)
        return {**arrays, "ROW_OWNER": np.asarray(owners, dtype=np.int64), "TRUNCATED": np.asarray(over, dtype=bool)}

    def _refuse_cut(self, over: list[bool], lengths: list[int], name: str) -> None:
        if self.policy.truncation == "reject" and any(over):
            i = over.index(True)
            raise InputError(
                f"{name}[{i}] has {lengths[i]} tokens, over the model's maximum of {self.policy.max_length} "
                "(truncation policy 'reject')"
            )

    def _truncate_questions(self, questions: list[str]) -> list[str]:
        """Cut each question's text before its token number `max_query_length` + 1; a cut can tokenise
        differently (a word that was [UNK] whole may split), hence the loop, which always shortens."""
        limit, out = self.policy.max_query_length, list(questions)
        pending = list(range(len(out)))
        while pending:
            encodings = self._plain.encode_batch([out[i] for i in pending], add_special_tokens=False)
            over = [(i, e.offsets) for i, e in zip(pending, encodings) if len(e.offsets) > limit]
            for i, offsets in over:
                out[i] = out[i][: min(offsets[limit][0], len(out[i]) - 1)].rstrip()
            pending = [i for i, _ in over]
        return out

    def _stack(self, encodings: Sequence[Encoding]) -> dict[str, np.ndarray]:
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = encoding.ids, encoding.attention_mask, encoding.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _pair(item: str | tuple[str, str]) -> tuple[str, ...]:
    return (item,) if isinstance(item, str) else item


def _in_context(encoding: Encoding, token: int) -> bool:
    return encoding.sequence_ids[token] == CONTEXT_SEQUENCE


def _offsets(encodings: Sequence[Encoding], shape: tuple[int, ...], keep) -> np.ndarray:
    """[rows, tokens, 2] character spans of the tokens `keep` selects, -1 elsewhere (specials, padding)."""
    offsets = np.full((*shape, 2), -1, dtype=np.int64)
    for row, encoding in enumerate(encodings):
        for token, span in enumerate(encoding.offsets):
            if keep(encoding, token):
                offsets[row, token] = span
    return offsets


# ---------------------------------------------------------------------------------------------- outputs


def classify(logits: np.ndarray, id2label: Sequence[str]) -> dict[str, np.ndarray]:
    """Label of the highest logit, its softmax probability, and all probabilities."""
    values = logits.astype(np.float64)
    exp = np.exp(values - values.max(axis=1, keepdims=True))
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    best = values.argmax(axis=1)
    return {
        "LABEL": _bytes([id2label[i] for i in best]),
        "SCORE": probabilities[np.arange(len(best)), best].astype(np.float32),
        "PROBABILITIES": probabilities.astype(np.float32),
    }


def tag(
    logits: np.ndarray, offsets: np.ndarray, word_ids: np.ndarray, texts: Sequence[str], id2label: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per text: TAGS, a JSON list of [start, end, tag] per word, and ENTITIES, a JSON list of
    {"type", "start", "end", "text"} (character offsets, `end` exclusive)."""
    predicted = logits.argmax(axis=-1)
    tags_out, entities_out = [], []
    for row, text in enumerate(texts):
        words = _word_tags(predicted[row], offsets[row], word_ids[row], id2label)
        tags_out.append(json.dumps([[s, e, t] for s, e, t in words], ensure_ascii=False))
        entities = [
            {"type": kind, "start": words[a][0], "end": words[b - 1][1], "text": text[words[a][0] : words[b - 1][1]]}
            for kind, a, b in entity_spans([t for _, _, t in words])
        ]
        entities_out.append(json.dumps(entities, ensure_ascii=False))
    return {"TAGS": _bytes(tags_out), "ENTITIES": _bytes(entities_out)}


def _word_tags(
    predicted: np.ndarray, offsets: np.ndarray, word_ids: np.ndarray, id2label: Sequence[str]
) -> list[tuple[int, int, str]]:
    """(start, end, tag) per word in order: the tag at its first sub-token, the span over all of them."""
    words: dict[int, list] = {}
    for token, word in enumerate(word_ids.tolist()):
        if word < 0:
            continue
        start, end = offsets[token].tolist()
        if word in words:
            words[word][1] = end
        else:
            words[word] = [start, end, id2label[int(predicted[token])]]
    return [tuple(words[w]) for w in sorted(words)]


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first word, end word) per entity, CoNLL's lenient rules: an entity closes after E-/S-,
    before B-/S-/O or on a change of type; an I-/E- not continuing an open entity starts one."""
    spans: list[tuple[str, int, int]] = []
    start: int | None = None
    prev_prefix, prev_type = "O", ""
    for i, value in enumerate([*tags, "O"]):
        prefix, _, kind = value.partition("-") if value != "O" else ("O", "", "")
        if prefix not in ("O", "B", "I", "E", "S") or (prefix != "O" and not kind):
            prefix, kind = "O", ""  # a label outside the BIOES scheme tags no entity
        if start is not None and (prev_prefix in "ES" or prefix in "BSO" or kind != prev_type):
            spans.append((prev_type, start, i))
            start = None
        if start is None and prefix != "O":
            start = i
        prev_prefix, prev_type = prefix, kind
    return spans


def best_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    owners: np.ndarray,
    contexts: Sequence[str],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, np.ndarray]:
    """The best answer per passage over all its windows: ANSWER (a slice of the passage, "" when no
    window offers a valid span), ANSWER_START / ANSWER_END (character offsets, -1 for none), SCORE
    (start + end logit)."""
    mask = offsets[:, :, 0] >= 0
    start = np.where(mask, start_logits.astype(np.float64), -np.inf)
    end = np.where(mask, end_logits.astype(np.float64), -np.inf)
    k = min(n_best, start.shape[1])
    top_starts = np.argsort(-start, axis=1, kind="stable")[:, :k]
    top_ends = np.argsort(-end, axis=1, kind="stable")[:, :k]
    scores = (
        np.take_along_axis(start, top_starts, axis=1)[:, :, None]
        + np.take_along_axis(end, top_ends, axis=1)[:, None, :]
    )
    length = top_ends[:, None, :] - top_starts[:, :, None] + 1
    valid = np.isfinite(scores) & (length >= 1) & (length <= max_answer_length)
    windows, a, b = np.nonzero(valid)  # in (window, start rank, end rank) order: ties keep the first
    found = []
    for index, context in enumerate(contexts):
        picked = np.flatnonzero(owners[windows] == index)
        if not len(picked):
            found.append(("", -1, -1, -np.inf))
            continue
        pair_scores = scores[windows[picked], a[picked], b[picked]]
        best = picked[int(np.argmax(pair_scores))]
        row = windows[best]
        first, last = int(offsets[row, top_starts[row, a[best]], 0]), int(offsets[row, top_ends[row, b[best]], 1])
        found.append((context[first:last], first, last, float(pair_scores.max())))
    answers, starts, ends, best_scores = zip(*found)
    return {
        "ANSWER": _bytes(answers),
        "ANSWER_START": np.asarray(starts, dtype=np.int64),
        "ANSWER_END": np.asarray(ends, dtype=np.int64),
        "SCORE": np.asarray(best_scores, dtype=np.float32),
    }


def _bytes(values: Sequence[str]) -> np.ndarray:
    return np.asarray([v.encode("utf-8") for v in values], dtype=np.object_)


def model_parameters(args: dict) -> dict[str, str]:
    """The string parameters of a model's config.pbtxt, from the `args` Triton passes to initialize()."""
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
