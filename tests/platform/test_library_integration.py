"""The library's pieces together, as the README shows them: tokenizer → batches → encoder → loss."""

from __future__ import annotations

import pytest
import torch

from plmops.platform.models import PlmopsConfig, PlmopsForPreTraining
from plmops.platform.pretraining import BatchConfig, BatchMaker, encode
from plmops.platform.pretraining.similar_words import load_cilin
from plmops.platform.pretraining.macbert import SimilarTokens
from plmops.platform.text.normalize import normalize_text
from plmops.platform.text.segment import segment_batch
from plmops.platform.tokenization import train_wordpiece


@pytest.fixture(scope="module")
def corpus_rows(shared_data):
    lines = shared_data("raw_zh_corpus/tnews_unlabeled_titles.txt").read_text(encoding="utf-8").splitlines()
    texts = [normalize_text(t) for t in lines[:400] if t.strip()]
    spans = segment_batch(texts, ["zh"] * len(texts))
    return [{"text": t, "word_offsets": s, "lang": "zh"} for t, s in zip(texts, spans)]


@pytest.fixture(scope="module")
def tokenizer(corpus_rows):
    return train_wordpiece([r["text"] for r in corpus_rows], vocab_size=3000, min_frequency=1)


@pytest.mark.parametrize("objective", ["wwm", "ngram", "mac", "pert"])
def test_corpus_rows_train_the_encoder(objective, corpus_rows, tokenizer, shared_data):
    examples = encode(corpus_rows, tokenizer, max_len=64)
    similar = None
    if objective == "mac":
        from plmops.platform.pretraining.masking import VocabInfo

        cilin = load_cilin(shared_data("cilin/cilin_ex.txt"))
        similar = SimilarTokens(cilin, lambda w: tokenizer(w, add_special_tokens=False)["input_ids"],
                                VocabInfo.from_tokenizer(tokenizer))
    maker = BatchMaker.from_tokenizer(tokenizer, BatchConfig(objective=objective, max_len=64, packing=True),
                                      similar=similar)
    batch = maker(maker.rows(examples)[:8], torch.Generator().manual_seed(0))
    config = PlmopsConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64, use_sop_head=False,
                          use_pointer_head=objective == "pert")
    model = PlmopsForPreTraining(config)
    out = model(**batch)  # the batch is model-ready, as the README shows
    assert torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    if objective == "mac":
        assert not (batch["input_ids"] == tokenizer.mask_token_id).any()
