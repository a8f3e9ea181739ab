"""Sentence and sentence-pair classification: `[CLS] a [SEP] (b [SEP])` in, one label out.

Truncation policy: an input over `max_length` tokens (specials included) is cut with the tokenizer's
`longest_first` strategy, which removes tokens one at a time from the end of whichever text is longer
at that moment, so a long premise is shortened before a short hypothesis loses anything. Every
example that had to be cut is counted (`truncated`), never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from plmops.platform.finetune.datasets import ClassificationExample
from plmops.platform.finetune.engine import INFERENCE_BATCH_FACTOR, Encoded, Rows, predict_rows
from plmops.platform.finetune.metrics import accuracy, macro_f1
from plmops.platform.finetune.taskspec import HyperParameters

TRUNCATION = "longest_first"


def encode_classification(
    examples: Sequence[ClassificationExample],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    label2id: dict[str, int],
) -> Encoded:
    """Rows with a `labels` target; counts `truncated` examples (see the module's policy)."""
    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b for e in examples] if any(e.text_b is not None for e in examples) else None
    if texts_b is not None and any(b is None for b in texts_b):
        raise ValueError("either every example has a text_b (a pair task) or none does")
    full = tokenizer(texts_a, texts_b, truncation=False, verbose=False)["input_ids"]
    cut = tokenizer(
        texts_a, texts_b, truncation=TRUNCATION, max_length=max_length, return_token_type_ids=True
    )
    rows = Rows(
        [list(ids) for ids in cut["input_ids"]],
        [list(types) for types in cut["token_type_ids"]],
        {"labels": [label2id[e.label] for e in examples]},
    )
    return Encoded(rows, {"examples": len(examples), "truncated": sum(len(ids) > max_length for ids in full)})


class ClassificationTask:
    """Classification and pair classification with labels in declaration order (ids 0..n-1)."""

    auto_model = AutoModelForSequenceClassification

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, hparams: HyperParameters, labels: list[str]
    ) -> None:
        self.tokenizer, self.hparams, self.labels = tokenizer, hparams, labels
        self.label2id = {label: i for i, label in enumerate(labels)}

    def head_config(self) -> dict[str, Any]:
        return {
            "num_labels": len(self.labels),
            "id2label": dict(enumerate(self.labels)),
            "label2id": dict(self.label2id),
            "problem_type": "single_label_classification",
        }

    def encode(self, examples: Sequence[ClassificationExample], train: bool) -> Encoded:
        return encode_classification(examples, self.tokenizer, self.hparams.max_length, self.label2id)

    def predict(self, model: torch.nn.Module, encoded: Encoded, examples: Sequence[Any]) -> list[str]:
        ids = predict_rows(
            model,
            encoded.rows,
            self.hparams.batch_size * INFERENCE_BATCH_FACTOR,
            self.tokenizer.pad_token_id,
            lambda out: out.logits.argmax(-1),
            per_token=False,
        )
        return [self.labels[int(i)] for i in ids]

    def score(
        self, predictions: Sequence[str], examples: Sequence[ClassificationExample]
    ) -> dict[str, float]:
        gold = [e.label for e in examples]
        return {"accuracy": accuracy(predictions, gold), "macro_f1": macro_f1(predictions, gold, self.labels)}
