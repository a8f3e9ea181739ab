"""Batch maker: encoding with word ids, windows, packing, objectives on packed rows, the model on a batch."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plmops.platform.models import PlmopsConfig, PlmopsForMaskedLM, PlmopsForPreTraining
from plmops.platform.pretraining import IGNORE_INDEX, SimilarTokens, choose, load_cilin, word_ids_from_offsets
from plmops.platform.pretraining.batching import (
    BatchConfig,
    BatchMaker,
    Documents,
    Example,
    SopExample,
    collate,
    encode,
    encode_pairs,
    pack,
)
from plmops.platform.text.segment import segment_batch

MAX_LEN = 64
OBJECTIVES = ("mlm", "wwm", "ngram", "mac", "pert")


@pytest.fixture(scope="module")
def rows(shared_data) -> list[dict]:
    """300 news titles and 20 Wikipedia paragraphs (longer than MAX_LEN), as corpus rows."""
    folder = shared_data("raw_zh_corpus")
    titles = (folder / "tnews_unlabeled_titles.txt").read_text(encoding="utf-8").splitlines()[:300]
    paragraphs = (folder / "cmrc2018_dev_trial_contexts.txt").read_text(encoding="utf-8").splitlines()[:20]
    texts = paragraphs + titles
    spans = segment_batch(texts, ["zh"] * len(texts))
    return [{"text": t, "word_offsets": s, "lang": "zh"} for t, s in zip(texts, spans)]


@pytest.fixture(scope="module")
def tokenizer(rows):
    """A small Chinese WordPiece (CJK split per character) trained on the rows themselves."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    trainer = BertWordPieceTokenizer(handle_chinese_chars=True, lowercase=True)
    trainer.train_from_iterator([r["text"] for r in rows], vocab_size=3000)
    return BertTokenizerFast(tokenizer_object=trainer._tokenizer)


@pytest.fixture(scope="module")
def examples(rows, tokenizer) -> list[Example]:
    return encode(rows, tokenizer, MAX_LEN)


@pytest.fixture(scope="module")
def similar(shared_data, tokenizer) -> SimilarTokens:
    from plmops.platform.pretraining import VocabInfo

    cilin = load_cilin(shared_data("cilin/cilin_ex.txt"))
    return SimilarTokens(
        cilin, lambda w: tokenizer(w, add_special_tokens=False).input_ids, VocabInfo.from_tokenizer(tokenizer)
    )


def maker(tokenizer, similar=None, **config) -> BatchMaker:
    return BatchMaker.from_tokenizer(tokenizer, BatchConfig(max_len=MAX_LEN, **config), similar)


def specials(tokenizer) -> torch.Tensor:
    return torch.tensor(tokenizer.all_special_ids)


# --- encoding -----------------------------------------------------------------------------------------


def test_word_ids_follow_the_given_word_spans(tokenizer):
    rows = [
        {"text": "我爱北京天安门", "word_offsets": [[0, 1], [1, 2], [2, 4], [4, 7]]},
        {"text": "  ", "word_offsets": []},  # no token: no example
        {"text": "北京", "word_offsets": [[0, 2]], "lang": "zh"},
    ]
    first, second = encode(rows, tokenizer, MAX_LEN)
    assert first.word_ids.tolist() == [-1, 0, 1, 2, 2, 3, 3, 3, -1]
    assert first.words == ("我", "爱", "北京", "天安门")
    assert first.input_ids[0] == tokenizer.cls_token_id and first.input_ids[-1] == tokenizer.sep_token_id
    assert (second.row, second.lang, second.word_ids.tolist()) == (2, "zh", [-1, 0, 0, -1])


def test_tokens_of_a_jieba_word_share_one_id_and_spell_that_word(rows, tokenizer, examples):
    title = next(e for e in examples if "邻居" in e.words)
    pieces: dict[int, list[str]] = {}
    for token, wid in zip(tokenizer.convert_ids_to_tokens(title.input_ids.tolist()), title.word_ids.tolist()):
        pieces.setdefault(wid, []).append(token)
    neighbour = title.words.index("邻居")
    assert pieces[neighbour] == ["邻", "居"]
    assert pieces.pop(-1) == ["[CLS]", "[SEP]"]
    spelled = Counter()
    for example in examples:
        tokens = tokenizer.convert_ids_to_tokens(example.input_ids.tolist())
        for wid in set(example.word_ids.tolist()) - {-1}:
            parts = [t.removeprefix("##") for t, w in zip(tokens, example.word_ids) if w == wid]
            if "[UNK]" not in parts:
                spelled["".join(parts) == example.words[wid].lower()] += 1
    assert spelled[True] > 5000 and spelled[False] == 0


def test_long_documents_are_cut_into_windows_at_word_boundaries(rows, tokenizer, examples):
    assert max(len(e) for e in examples) == MAX_LEN
    for r in range(20):  # the Wikipedia paragraphs
        enc = tokenizer(rows[r]["text"], add_special_tokens=False, return_offsets_mapping=True)
        full_words = np.array(word_ids_from_offsets(enc["offset_mapping"], rows[r]["word_offsets"]))
        windows = sorted((e for e in examples if e.row == r), key=lambda e: e.token_start)
        assert len(windows) > 1
        assert np.concatenate([w.input_ids[1:-1] for w in windows]).tolist() == enc["input_ids"]
        for window in windows:
            assert (
                window.input_ids[0] == tokenizer.cls_token_id
                and window.input_ids[-1] == tokenizer.sep_token_id
            )
            cut = window.token_start
            assert cut == 0 or full_words[cut] != full_words[cut - 1]  # no word is split
            local = window.word_ids[1:-1]
            assert (
                local.min() == 0
                and (local + full_words[cut]).tolist() == full_words[cut : cut + len(local)].tolist()
            )


def test_encode_names_the_bad_row(tokenizer):
    good = {"text": "北京", "word_offsets": [[0, 2]]}
    with pytest.raises(ValueError, match=r"rows\[1\]: token 0 at chars \(0, 1\) lies in no word"):
        encode([good, {"text": "天安门", "word_offsets": [[1, 3]]}], tokenizer, MAX_LEN)
    with pytest.raises(ValueError, match=r"rows\[1\]: word span \(0, 9\) lies outside its text"):
        encode([good, {"text": "天安门", "word_offsets": [[0, 9]]}], tokenizer, MAX_LEN)
    with pytest.raises(ValueError, match=r"rows\[0\] needs a str 'text'"):
        encode([{"text": "北京"}], tokenizer, MAX_LEN)
    with pytest.raises(ValueError, match="max_len must leave room"):
        encode([good], tokenizer, 2)


# --- packing ------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=300), st.integers(40, 100), st.integers(1, 64))
def test_pack_places_every_item_once_within_max_len(lengths, max_len, buffer_size):
    rows = pack(lengths, max_len, buffer_size=buffer_size, seed=3)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= max_len for row in rows)
    assert all(row == sorted(row) for row in rows)
    assert all(
        min(row) // buffer_size == max(row) // buffer_size for row in rows
    )  # a row stays in its buffer
    assert pack(lengths, max_len, buffer_size=buffer_size, seed=3) == rows


def test_pack_is_nearly_optimal_and_seeded(examples):
    lengths = [len(e) for e in examples]
    rows = pack(lengths, MAX_LEN)
    assert len(rows) <= math.ceil(1.02 * sum(lengths) / MAX_LEN) + 1  # FFD: within a few % of the bound
    shuffled = pack(lengths, MAX_LEN, seed=1)
    assert shuffled != rows and sorted(map(tuple, shuffled)) == sorted(map(tuple, rows))
    with pytest.raises(ValueError, match=r"item 1 has length 65; packing needs 1 <= length <= 64"):
        pack([3, 65], MAX_LEN)


def test_packed_rows_hold_every_document_once_with_its_words(tokenizer, examples):
    packer = maker(tokenizer)
    rows = packer.rows(examples)
    batch = collate(rows, tokenizer.pad_token_id, packed=True, max_len=MAX_LEN)
    ids, word_ids, documents = batch["input_ids"], batch["word_ids"], batch["document_ids"]
    assert ids.shape == (len(rows), MAX_LEN)
    seen = Counter()
    for r, row in enumerate(rows):
        runs = torch.unique_consecutive(documents[r]).tolist()
        assert runs == list(range(1, len(row) + 1)) + ([0] if runs[-1] == 0 else [])
        assert (ids[r, documents[r] == 0] == tokenizer.pad_token_id).all()
        for d, example in enumerate(row, start=1):
            inside = documents[r] == d
            assert ids[r, inside].tolist() == example.input_ids.tolist()
            texts = [batch["words"][r][w] if w >= 0 else None for w in word_ids[r, inside].tolist()]
            assert texts == [example.words[w] if w >= 0 else None for w in example.word_ids.tolist()]
            seen[(example.row, example.token_start)] += 1
        owners = {w: set(documents[r, word_ids[r] == w].tolist()) for w in word_ids[r].unique().tolist()}
        assert all(len(docs) == 1 for w, docs in owners.items() if w >= 0)  # word ids unique within a row
    assert len(seen) == len(examples) and set(seen.values()) == {1}
    real = sum(len(e) for e in examples)
    packed_padding = 1 - real / ids.numel()
    unpacked_padding = 1 - real / (len(examples) * MAX_LEN)
    assert packed_padding < 0.05 and unpacked_padding > 0.3


def test_unpacked_rows_pad_to_the_longest_and_refuse_two_examples(tokenizer, examples):
    plain = maker(tokenizer, packing=False, pad_to_multiple_of=8)
    rows = plain.rows(examples[20:28])  # titles
    batch = plain(rows)
    longest = max(len(e) for e in examples[20:28])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (8, -(-longest // 8) * 8)
    assert batch["attention_mask"].sum(1).tolist() == [len(e) for e in examples[20:28]]
    with pytest.raises(ValueError, match=r"rows\[0\] holds 2 examples; each row needs exactly one"):
        plain.collate([examples[20:22]])
    with pytest.raises(ValueError, match=r"rows\[0\] holds \d+ tokens, more than max_len 64"):
        maker(tokenizer).collate([examples[:3]])


# --- objectives on packed rows ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packed(tokenizer, examples) -> dict:
    return maker(tokenizer).collate(maker(tokenizer).rows(examples)[:48])


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objectives_on_packed_rows_spare_specials_and_are_seeded(tokenizer, similar, packed, objective):
    batcher = maker(tokenizer, similar, objective=objective)
    out = batcher.apply(packed, torch.Generator().manual_seed(5))
    target = "pointer_labels" if objective == "pert" else "labels"
    assert set(out) == {"input_ids", "document_ids", target}
    labelled = out[target] != IGNORE_INDEX
    structural = packed["word_ids"] < 0  # [CLS], [SEP], padding
    assert labelled.any() and not (labelled & structural).any()
    kinds = torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id])
    assert torch.isin(packed["input_ids"][structural], kinds).all()
    assert torch.equal(out["input_ids"][structural], packed["input_ids"][structural])
    if objective != "pert":  # PERT only moves tokens, an [UNK] among them
        written = out["input_ids"][out["input_ids"] != packed["input_ids"]]
        forbidden = specials(tokenizer)[specials(tokenizer) != tokenizer.mask_token_id]
        assert not torch.isin(written, forbidden).any()
    assert torch.equal(out["document_ids"], packed["document_ids"])
    again = batcher.apply(packed, torch.Generator().manual_seed(5))
    other = batcher.apply(packed, torch.Generator().manual_seed(6))
    assert all(torch.equal(out[k], again[k]) for k in out) and not torch.equal(out[target], other[target])


@pytest.mark.parametrize("objective", ["wwm", "ngram", "mac"])
def test_word_objectives_take_whole_words_of_one_document(tokenizer, similar, packed, objective):
    out = maker(tokenizer, similar, objective=objective).apply(packed, torch.Generator().manual_seed(0))
    labelled, word_ids = out["labels"] != IGNORE_INDEX, packed["word_ids"]
    for r in range(len(word_ids)):
        for w in word_ids[r, labelled[r]].unique().tolist():
            assert labelled[r, word_ids[r] == w].all()  # the whole word, never part of it


def test_ngram_units_never_span_two_documents(packed):
    selection = choose(packed["word_ids"], "ngram", 0.5, torch.Generator().manual_seed(0))
    units, documents = selection.units, packed["document_ids"]
    spans = 0
    for r in range(len(units)):
        for u in units[r].unique().tolist():
            if u >= 0:
                assert documents[r, units[r] == u].unique().numel() == 1
                spans += int(packed["word_ids"][r, units[r] == u].unique().numel() > 1)
    assert spans > 100  # there are real multi-word n-grams


def test_mac_replaces_words_by_similar_words_of_the_right_document_word(tokenizer, similar, packed):
    out = maker(tokenizer, similar, objective="mac").apply(packed, torch.Generator().manual_seed(0))
    assert not (out["input_ids"] == tokenizer.mask_token_id).any()
    hits = 0
    for r in range(len(packed["input_ids"])):
        changed = (out["input_ids"][r] != packed["input_ids"][r]) & (packed["word_ids"][r] >= 0)
        for w in packed["word_ids"][r, changed].unique().tolist():
            new = tokenizer.decode(out["input_ids"][r, packed["word_ids"][r] == w]).replace(" ", "")
            hits += new in similar.source.similar(packed["words"][r][w])
    assert hits > 20


def test_pert_shuffles_inside_each_document(tokenizer, packed):
    out = maker(tokenizer, objective="pert").apply(packed, torch.Generator().manual_seed(0))
    labels, documents = out["pointer_labels"], packed["document_ids"]
    rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
    targets = labels[rows, cols]
    assert torch.equal(documents[rows, targets], documents[rows, cols])
    assert torch.equal(out["input_ids"][rows, targets], packed["input_ids"][rows, cols])
    assert (targets != cols).float().mean() > 0.8  # about 90% move, 10% stay
    untouched = labels == IGNORE_INDEX
    assert torch.equal(out["input_ids"][untouched], packed["input_ids"][untouched])
    moved_rows = Counter(rows.tolist())
    assert len(moved_rows) == len(labels) and min(moved_rows.values()) > 2


def test_documents_view_recovers_every_document(packed):
    docs = Documents.of(packed["document_ids"])
    assert docs.length.sum() == (packed["document_ids"] > 0).sum()
    assert sorted(torch.cat([g.length for g in docs.by_length()]).tolist()) == sorted(docs.length.tolist())
    rows, cols, valid = docs.index()
    assert (packed["document_ids"][rows[valid], cols[valid]] > 0).all()
    assert (packed["word_ids"][rows[:, 0], cols[:, 0]] == -1).all()  # each document opens with [CLS]


def test_a_maker_draws_from_its_own_seeded_generator(tokenizer, examples):
    rows = maker(tokenizer).rows(examples)[:8]
    first, second = maker(tokenizer, seed=1), maker(tokenizer, seed=1)
    a, b = first(rows), second(rows)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(first(rows)["labels"], a["labels"])  # the next batch draws anew


def test_config_and_maker_refuse_bad_settings(tokenizer, examples):
    with pytest.raises(ValueError, match="objective must be one of"):
        BatchConfig(objective="span")
    with pytest.raises(ValueError, match="objective 'mac' needs `similar`"):
        maker(tokenizer, objective="mac")
    with pytest.raises(ValueError, match="sop needs packing=False.*got packing=True"):
        BatchConfig(sop=True)
    with pytest.raises(ValueError, match="sop needs .*objective='pert'"):
        BatchConfig(sop=True, packing=False, objective="pert")
    with pytest.raises(ValueError, match=r"one SopExample; rows \[0\]"):
        sop_maker(tokenizer)([[examples[0]]])


# --- sentence-order pairs ----------------------------------------------------------------------------

TERMINATORS = "。！？；…"


@pytest.fixture(scope="module")
def pairs(rows, tokenizer) -> list[SopExample]:
    return encode_pairs(rows, tokenizer, MAX_LEN)


def sop_maker(tokenizer, similar=None, **config) -> BatchMaker:
    return maker(tokenizer, similar, packing=False, sop=True, **config)


def test_pairs_are_consecutive_windows_of_each_document_cut_between_words(rows, tokenizer, pairs):
    assert {p.row for p in pairs} == set(range(len(rows)))
    for r in (0, 7, 19, 20, 150):  # paragraphs (several windows each) and titles
        enc = tokenizer(rows[r]["text"], add_special_tokens=False, return_offsets_mapping=True)
        full_words = np.array(word_ids_from_offsets(enc["offset_mapping"], rows[r]["word_offsets"]))
        windows = sorted((p for p in pairs if p.row == r), key=lambda p: p.token_start)
        tokens = [np.concatenate([w.first.input_ids, w.second.input_ids]) for w in windows]
        assert np.concatenate(tokens).tolist() == enc["input_ids"]  # nothing lost, nothing repeated
        for window in windows:
            assert len(window) <= MAX_LEN and window.second is not None
            cut = window.token_start + len(window.first.input_ids)
            assert full_words[cut] != full_words[cut - 1]  # the segments meet between two words
            first_words, second_words = len(window.first.words), len(window.second.words)
            start = full_words[window.token_start]
            span = rows[r]["word_offsets"][start : start + first_words + second_words]
            assert [*window.first.words, *window.second.words] == [rows[r]["text"][a:b] for a, b in span]
            assert window.first.word_ids[0] == 0 and window.second.word_ids[0] == 0


def test_pairs_cut_at_a_sentence_end_when_one_lies_in_the_middle(tokenizer, pairs, rows):
    hand = {
        "text": "今天天气很好。我们去公园散步吧。",
        "word_offsets": [
            [0, 2],
            [2, 4],
            [4, 5],
            [5, 6],
            [6, 7],
            [7, 9],
            [9, 10],
            [10, 12],
            [12, 14],
            [14, 15],
            [15, 16],
        ],
    }
    (pair,) = encode_pairs([hand], tokenizer, MAX_LEN)
    assert "".join(pair.first.words) == "今天天气很好。"
    assert "".join(pair.second.words) == "我们去公园散步吧。"
    # At 256 tokens a Wikipedia window nearly always holds a sentence end in its middle half (at
    # MAX_LEN = 64 many of its sentences are longer than a window); a title is cut near its middle.
    paragraphs = encode_pairs(rows[:20], tokenizer, 256)
    ends = [p.first.words[-1][-1] in TERMINATORS for p in paragraphs]
    assert len(ends) > 40 and sum(ends) > 0.9 * len(ends)
    title_cuts = [len(p.first.input_ids) / (len(p) - 3) for p in pairs if p.row >= 20 and p.second]
    assert 0.4 < float(np.median(title_cuts)) < 0.6


def test_a_document_of_one_word_is_a_single_segment_with_no_order_target(tokenizer):
    rows = [{"text": "北京", "word_offsets": [[0, 2]]}, {"text": " ", "word_offsets": []}]
    (alone,) = encode_pairs(rows, tokenizer, MAX_LEN)
    assert alone.second is None and len(alone) == len(alone.first.input_ids) + 2
    batch = sop_maker(tokenizer, objective="mlm")([[alone]])
    assert batch["sentence_order_label"].tolist() == [IGNORE_INDEX]
    assert batch["token_type_ids"].eq(0).all()


def test_sop_batches_swap_half_the_pairs_and_mark_the_segments(tokenizer, pairs):
    batcher = sop_maker(tokenizer, objective="wwm", seed=4)
    rows = batcher.rows(pairs)
    assert all(len(row) == 1 for row in rows)
    labels, checked = [], 0
    for start in [*range(0, len(rows), 16)] * 2:  # every pair twice: the swaps are drawn anew
        chunk = rows[start : start + 16]
        batch = batcher(chunk)
        assert set(batch) == {
            "input_ids",
            "attention_mask",
            "token_type_ids",
            "sentence_order_label",
            "labels",
        }
        restored = torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])
        for r, ((p,), label) in enumerate(zip(chunk, batch["sentence_order_label"].tolist())):
            a, b = (p.second, p.first) if label == 1 else (p.first, p.second)
            n = len(p)
            want = [
                tokenizer.cls_token_id,
                *a.input_ids,
                tokenizer.sep_token_id,
                *b.input_ids,
                tokenizer.sep_token_id,
            ]
            assert restored[r, :n].tolist() == want
            assert batch["token_type_ids"][r].tolist() == [0] * (len(a.input_ids) + 2) + [1] * (
                len(b.input_ids) + 1
            ) + [0] * (batch["input_ids"].shape[1] - n)
            assert batch["attention_mask"][r].sum() == n
            checked += 1
        labels += batch["sentence_order_label"].tolist()
    assert checked == 2 * len(rows) > 900 and abs(np.mean(labels) - 0.5) < 0.06  # 3.7 standard deviations
    first, again = (sop_maker(tokenizer, objective="wwm", seed=4)(rows[:16]) for _ in range(2))
    assert all(torch.equal(first[k], again[k]) for k in first)  # the seed decides swaps and masks


@pytest.mark.parametrize("objective", ["wwm", "mac"])
def test_masking_on_sop_rows_takes_whole_words_of_the_right_segment(tokenizer, similar, pairs, objective):
    batcher = sop_maker(tokenizer, similar, objective=objective, seed=2)
    rows = batcher.rows(pairs[:64])
    collated = batcher.collate(rows, torch.Generator().manual_seed(9))
    out = batcher.apply(collated, torch.Generator().manual_seed(10))
    word_ids, chosen = collated["word_ids"], out["labels"] != IGNORE_INDEX
    assert chosen.any() and (word_ids[chosen] >= 0).all()  # never [CLS], [SEP] or padding
    for r in range(len(rows)):
        tokens = tokenizer.convert_ids_to_tokens(collated["input_ids"][r].tolist())
        for wid in set(word_ids[r].tolist()) - {-1}:
            at = word_ids[r] == wid
            assert chosen[r][at].all() or not chosen[r][at].any()  # whole words
            parts = [t.removeprefix("##") for t, w in zip(tokens, at.tolist()) if w]
            if "[UNK]" not in parts:
                assert "".join(parts) == collated["words"][r][wid].lower()  # the word the id names
    if objective == "mac":  # words become similar words of the word in their slot, swapped rows too
        assert not (out["input_ids"][chosen] == tokenizer.mask_token_id).any()
        similar_rows = set()
        for r in range(len(rows)):
            for wid in set(word_ids[r][chosen[r]].tolist()):
                at = word_ids[r] == wid
                new = "".join(
                    t.removeprefix("##") for t in tokenizer.convert_ids_to_tokens(out["input_ids"][r][at])
                )
                if new != collated["words"][r][wid] and new in similar.source.similar(
                    collated["words"][r][wid]
                ):
                    similar_rows.add(r)
        swapped = set(torch.nonzero(collated["sentence_order_label"] == 1).flatten().tolist())
        assert len(similar_rows) >= 20 and similar_rows & swapped


# --- the model on a made batch ------------------------------------------------------------------------


def tiny(tokenizer, **overrides) -> PlmopsConfig:
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 48}
    return PlmopsConfig(vocab_size=len(tokenizer), max_position_embeddings=MAX_LEN, **sizes, **overrides)


def test_masked_lm_trains_on_a_packed_batch_and_its_loss_equals_one_document_per_row(tokenizer, examples):
    torch.manual_seed(0)
    model = PlmopsForMaskedLM(tiny(tokenizer))
    batcher = maker(tokenizer, objective="wwm")
    batch = batcher(batcher.rows(examples)[:8])
    model(**batch).loss.backward()
    assert model.get_parameter("bert.encoder.layer.0.attention.self.query.weight").grad.abs().sum() > 0

    rows, cols, valid = Documents.of(batch["document_ids"]).index()
    separate = {
        "input_ids": batch["input_ids"][rows, cols].masked_fill(~valid, tokenizer.pad_token_id),
        "attention_mask": valid.long(),
        "labels": batch["labels"][rows, cols].masked_fill(~valid, IGNORE_INDEX),
    }
    model.eval()
    with torch.no_grad():
        packed_out, separate_out = model(**batch), model(**separate)
    assert torch.allclose(packed_out.loss, separate_out.loss, atol=1e-5)
    assert torch.allclose(packed_out.logits, separate_out.logits, atol=1e-4)


def test_pretraining_pointer_loss_on_a_packed_pert_batch(tokenizer, examples):
    torch.manual_seed(0)
    model = PlmopsForPreTraining(tiny(tokenizer, use_pointer_head=True, use_sop_head=False))
    batcher = maker(tokenizer, objective="pert")
    out = model(**batcher(batcher.rows(examples)[:8]))
    assert out.mlm_loss is None and out.pointer_loss < 2 * math.log(
        MAX_LEN
    )  # every target is a same-document key
    out.loss.backward()
    assert model.get_parameter("cls.pointer.query.weight").grad.abs().sum() > 0


def test_pretraining_takes_an_sop_batch_as_it_is(tokenizer, pairs):
    torch.manual_seed(0)
    model = PlmopsForPreTraining(tiny(tokenizer, use_sop_head=True))
    batch = sop_maker(tokenizer, objective="wwm")(
        [[p] for p in pairs[:15]]
        + [[encode_pairs([{"text": "北京", "word_offsets": [[0, 2]]}], tokenizer, 8)[0]]]
    )
    assert batch["sentence_order_label"][-1] == IGNORE_INDEX
    out = model(**batch)
    assert out.seq_relationship_logits.shape == (16, 2) and out.mlm_loss is not None
    expected = torch.nn.functional.cross_entropy(
        out.seq_relationship_logits[:15], batch["sentence_order_label"][:15]
    )
    assert torch.allclose(out.sop_loss, expected)  # the uncut row is left out of the order loss
    out.loss.backward()
    assert model.get_parameter("cls.seq_relationship.weight").grad.abs().sum() > 0
