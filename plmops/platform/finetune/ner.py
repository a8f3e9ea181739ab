"""Named-entity recognition: word-level BIO tags over a sub-word tokenizer.

Alignment: a word's tag labels its first sub-token; its other sub-tokens and the special tokens get
IGNORE_INDEX, so the loss sees one decision per word, and at prediction time the first sub-token's
label is the word's tag. Scores are computed on the words as read, never on sub-tokens.

Length policy: a sentence whose sub-tokens do not fit `max_length` is cut into consecutive runs of
whole words that do; each run is a row of its own and the word tags are joined again (counted as
`split_sentences`). No word is lost, though an entity across a cut may be broken. A single word
longer than a whole window keeps only its first pieces (counted as `truncated_words`; its tag
survives). A word the tokenizer turns into no token at all (a lone zero-width or control character)
has no position to carry a label: it is predicted O and counted as `words_without_tokens`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import AutoModelForTokenClassification, PreTrainedTokenizerBase

from plmops.platform.finetune.datasets import TaggedSentence, bio_tags
from plmops.platform.finetune.engine import IGNORE_INDEX, INFERENCE_BATCH_FACTOR, Encoded, Rows, predict_rows
from plmops.platform.finetune.metrics import entity_f1
from plmops.platform.finetune.taskspec import HyperParameters

WordIds = Sequence[int | None]  # per token: the index of its word in the sentence, None for specials


def align_labels(word_ids: WordIds, tags: Sequence[str], label2id: Mapping[str, int]) -> list[int]:
    """Per token: the id of its word's tag on the word's first sub-token, IGNORE_INDEX elsewhere."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE_INDEX if word is None or word == previous else label2id[tags[word]])
        previous = word
    return labels


def word_tags(
    rows: Sequence[tuple[WordIds, Sequence[int]]], n_words: int, id2label: Sequence[str]
) -> list[str]:
    """A sentence's word tags from its rows' (word ids, predicted label id per token); a word with no
    first sub-token in any row is tagged O."""
    tags = ["O"] * n_words
    for word_ids, predicted in rows:
        previous = None
        for word, label in zip(word_ids, predicted):
            if word is not None and word != previous:
                tags[word] = id2label[int(label)]
            previous = word
    return tags


def chunk_words(tokens_per_word: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """[start, end) word ranges, in order and covering every word, each within `budget` sub-tokens
    unless it is a single word over it."""
    chunks, start, used = [], 0, 0
    for i, count in enumerate(tokens_per_word):
        if used + count > budget and i > start:
            chunks.append((start, i))
            start, used = i, 0
        used += count
    chunks.append((start, len(tokens_per_word)))
    return chunks


def encode_ner(
    sentences: Sequence[TaggedSentence],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    label2id: Mapping[str, int],
) -> Encoded:
    """Rows with per-token `labels`; `state` lists each row's (sentence index, word ids) to map back."""
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    pieces = tokenizer([s.tokens for s in sentences], is_split_into_words=True, add_special_tokens=False)
    chunks: list[tuple[int, int, int]] = []  # (sentence, first word, end word)
    counts = Counter[str]()
    for k, sentence in enumerate(sentences):
        per_word = Counter(w for w in pieces.word_ids(k) if w is not None)
        sizes = [per_word.get(i, 0) for i in range(len(sentence.tokens))]
        spans = chunk_words(sizes, budget)
        counts["split_sentences"] += len(spans) > 1
        counts["words_without_tokens"] += sizes.count(0)
        counts["truncated_words"] += sum(sizes[a] > budget for a, b in spans if b - a == 1)
        chunks += [(k, a, b) for a, b in spans]
    encoded = tokenizer(
        [sentences[k].tokens[a:b] for k, a, b in chunks],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        return_token_type_ids=True,
    )
    state, labels = [], []
    for row, (k, a, _) in enumerate(chunks):
        word_ids = [None if w is None else w + a for w in encoded.word_ids(row)]
        state.append((k, word_ids))
        labels.append(align_labels(word_ids, sentences[k].tags, label2id))
    rows = Rows(
        [list(ids) for ids in encoded["input_ids"]],
        [list(types) for types in encoded["token_type_ids"]],
        {"labels": labels},
    )
    return Encoded(rows, {"examples": len(sentences), **counts}, state)


class NERTask:
    """Token classification over the tags O, B-T, I-T of the declared entity types (bio_tags order)."""

    auto_model = AutoModelForTokenClassification

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, hparams: HyperParameters, labels: list[str]
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(f"NER needs a fast tokenizer (word ids), got {type(tokenizer).__name__}")
        self.tokenizer, self.hparams = tokenizer, hparams
        self.tags = bio_tags(labels)
        self.label2id = {tag: i for i, tag in enumerate(self.tags)}

    def head_config(self) -> dict[str, Any]:
        return {
            "num_labels": len(self.tags),
            "id2label": dict(enumerate(self.tags)),
            "label2id": dict(self.label2id),
        }

    def encode(self, examples: Sequence[TaggedSentence], train: bool) -> Encoded:
        return encode_ner(examples, self.tokenizer, self.hparams.max_length, self.label2id)

    def predict(
        self, model: torch.nn.Module, encoded: Encoded, examples: Sequence[TaggedSentence]
    ) -> list[list[str]]:
        predicted = predict_rows(
            model,
            encoded.rows,
            self.hparams.batch_size * INFERENCE_BATCH_FACTOR,
            self.tokenizer.pad_token_id,
            lambda out: out.logits.argmax(-1),
            per_token=True,
        )
        by_sentence: list[list[tuple[WordIds, Sequence[int]]]] = [[] for _ in examples]
        for (k, word_ids), labels in zip(encoded.state, predicted):
            by_sentence[k].append((word_ids, labels))
        return [word_tags(rows, len(s.tokens), self.tags) for rows, s in zip(by_sentence, examples)]

    def score(self, predictions: Sequence[list[str]], examples: Sequence[TaggedSentence]) -> dict[str, float]:
        result = entity_f1(predictions, [s.tags for s in examples])
        return {name: result[name] for name in ("precision", "recall", "f1")}
