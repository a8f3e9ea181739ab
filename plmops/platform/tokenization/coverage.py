"""How well a tokenizer covers each language: the numbers to compare before and after a vocabulary change.

* unk_rate: share of tokens that are [UNK]. WordPiece replaces a whole pre-token by one [UNK] when any
  character of it is unknown, so this is also roughly the share of words lost.
* tokens_per_word: tokens over `segment_words` words (jieba words for Chinese and Cantonese, syllables for
  Tibetan, regex words elsewhere). Read it together with unk_rate: an [UNK] word costs one token.
* chars_per_token: non-whitespace characters over tokens (whitespace never becomes a token).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from transformers import PreTrainedTokenizerFast

from plmops.platform.text.segment import Segmenter
from plmops.platform.tokenization.wordpiece import encode_ids


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def coverage_table(
    tokenizer: PreTrainedTokenizerFast,
    texts_by_lang: Mapping[str, Sequence[str]],
    segmenter: Segmenter | None = None,
) -> list[dict]:
    """One row per language: lang, texts, words, tokens, unk_rate, tokens_per_word, chars_per_token.

    Any fast tokenizer works (a saved folder loaded without plmops, too). Language codes are
    `segment_words`' (zh, yue, bo, mn, ug, kk, ...); pass an open `Segmenter` to reuse its worker pool.
    """
    if not texts_by_lang:
        raise ValueError("coverage_table: texts_by_lang is empty")
    owned = segmenter is None
    segmenter = Segmenter() if owned else segmenter
    rows = []
    try:
        for lang, texts in texts_by_lang.items():
            texts = list(texts)
            if not texts:
                raise ValueError(f"coverage_table: no texts for language {lang!r}")
            ids = encode_ids(tokenizer.backend_tokenizer, texts)
            words = len(segmenter.column(texts, [lang] * len(texts)).values)
            chars = sum(len("".join(t.split())) for t in texts)
            unknown = int(np.count_nonzero(ids == tokenizer.unk_token_id))
            rows.append(
                {
                    "lang": lang,
                    "texts": len(texts),
                    "words": words,
                    "tokens": int(ids.size),
                    "unk_rate": _ratio(unknown, ids.size),
                    "tokens_per_word": _ratio(ids.size, words),
                    "chars_per_token": _ratio(chars, ids.size),
                }
            )
    finally:
        if owned:
            segmenter.close()
    return rows


def format_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Rows of dicts (same keys) as a Markdown table; floats to three decimals."""
    if not rows:
        return ""
    keys = list(rows[0])

    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)
