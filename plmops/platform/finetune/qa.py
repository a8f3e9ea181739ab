"""Span-extraction MRC fine-tuning on top of mrc.py's windows and decoding.

Length policy (mrc.py's): a passage is cut into windows of `max_length` tokens sharing `doc_stride`
context tokens, so no context is lost; a question is cut to `max_query_length(max_length)` tokens
(counted as `truncated_questions`). A training window that does not hold the whole answer is trained
to point at [CLS]. Rows are windows; speeds are reported per question.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering, PreTrainedTokenizerBase

from plmops.platform.finetune.datasets import MRCExample
from plmops.platform.finetune.engine import INFERENCE_BATCH_FACTOR, Encoded, Rows, predict_rows
from plmops.platform.finetune.metrics import squad_scores
from plmops.platform.finetune.mrc import MRCFeatures, decode_spans, prepare_features
from plmops.platform.finetune.taskspec import HyperParameters

MAX_QUERY_LENGTH = 64  # the BERT SQuAD scripts' value, for 384-512-token windows
NO_SPAN = -1e4  # logit put where a window has no token (padding), which the decoder never picks


def max_query_length(max_length: int) -> int:
    """At most 64 question tokens, and at most a quarter of a (short, demo) window."""
    return max(1, min(MAX_QUERY_LENGTH, max_length // 4))


def encode_mrc(
    examples: Sequence[MRCExample], tokenizer: PreTrainedTokenizerBase, hparams: HyperParameters, train: bool
) -> Encoded:
    """One row per window; in training with `start_positions` / `end_positions` targets. `state` is the
    MRCFeatures that decoding needs."""
    features = prepare_features(
        examples,
        tokenizer,
        max_length=hparams.max_length,
        doc_stride=hparams.doc_stride,
        max_query_length=max_query_length(hparams.max_length),
        train=train,
    )
    lengths = features.attention_mask.sum(axis=1).tolist()
    targets = {}
    if train and features.start_positions is not None and features.end_positions is not None:
        targets = {
            "start_positions": features.start_positions.tolist(),
            "end_positions": features.end_positions.tolist(),
        }
    rows = Rows(
        [ids[:n].tolist() for ids, n in zip(features.input_ids, lengths)],
        [types[:n].tolist() for types, n in zip(features.token_type_ids, lengths)],
        targets,
    )
    counts = {
        "examples": len(examples),
        "windows": len(features),
        "truncated_questions": features.truncated_questions,
        "skipped": len(features.skipped),
    }
    return Encoded(rows, counts, features)


class MRCTask:
    """Extractive QA: predictions are answer strings (slices of the context), scored by CMRC EM/F1."""

    auto_model = AutoModelForQuestionAnswering

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, hparams: HyperParameters, labels: list[str]
    ) -> None:
        self.tokenizer, self.hparams = tokenizer, hparams

    def head_config(self) -> dict[str, Any]:
        return {}

    def encode(self, examples: Sequence[MRCExample], train: bool) -> Encoded:
        return encode_mrc(examples, self.tokenizer, self.hparams, train)

    def predict(self, model: torch.nn.Module, encoded: Encoded, examples: Sequence[MRCExample]) -> list[str]:
        features: MRCFeatures = encoded.state
        logits = predict_rows(
            model,
            encoded.rows,
            self.hparams.batch_size * INFERENCE_BATCH_FACTOR,
            self.tokenizer.pad_token_id,
            lambda out: torch.stack([out.start_logits, out.end_logits], dim=-1),
            per_token=True,
        )
        start = np.full(features.input_ids.shape, NO_SPAN)
        end = np.full(features.input_ids.shape, NO_SPAN)
        for row, values in enumerate(logits):
            start[row, : len(values)], end[row, : len(values)] = values[:, 0], values[:, 1]
        answers = decode_spans(
            start,
            end,
            features,
            examples,
            n_best=self.hparams.n_best,
            max_answer_length=self.hparams.max_answer_length,
        )
        return [answers[e.qid] for e in examples]

    def score(self, predictions: Sequence[str], examples: Sequence[MRCExample]) -> dict[str, float]:
        result = squad_scores(
            {e.qid: p for e, p in zip(examples, predictions)}, {e.qid: e.answers for e in examples}
        )
        return {"em": result["em"], "f1": result["f1"]}
