"""Training data stream: seeded shuffled order, rank slices, bit-for-bit resume, nothing lost or doubled."""

from __future__ import annotations

import io
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch

from plmops.platform.pretraining.batching import BatchConfig, encode, encode_pairs
from plmops.platform.pretraining.cino import corpus_vocab, group_vocab
from plmops.platform.text.corpus import CORPUS_SCHEMA
from plmops.platform.text.segment import encode_spans, segment_batch
from plmops.platform.training import MixedRows, ShuffledRows, StreamConfig, TrainingStream
from plmops.platform.training.data import Holdout, LanguageBatches, LanguageDraws, part_texts

MAX_LEN = 64
SHARD_ROWS = (150, 90, 120)  # uneven shards, several row groups each
ROW_GROUP = 32


def write_shard(path: Path, texts: list[str], lang: str, row_group: int = ROW_GROUP) -> list[dict]:
    """One Parquet shard with the corpus schema (word spans by the platform segmenter); its rows."""
    spans = segment_batch(texts, [lang] * len(texts))
    n, n_chars = len(texts), [len(t) for t in texts]
    table = pa.table(
        {
            "doc_id": [f"{path.stem}-{j:05d}" for j in range(n)],
            "text": texts,
            "lang": [lang] * n,
            "lang_score": pa.array([1.0] * n, pa.float32()),
            "source": [path.name] * n,
            "source_line": list(range(n)),
            "sentence_offsets": encode_spans([[(0, c)] for c in n_chars]),
            "word_offsets": encode_spans(spans),
            "n_chars": pa.array(n_chars, pa.int32()),
            "sha1": [""] * n,
        },
        schema=CORPUS_SCHEMA,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group)
    return [{"text": t, "word_offsets": s, "lang": lang} for t, s in zip(texts, spans)]


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> tuple[Path, list[str], list[dict]]:
    """A small corpus version (root, shard paths relative to it, rows): Wikipedia paragraphs longer than
    MAX_LEN among news titles, segmented by jieba, written with the corpus schema."""
    folder = shared_data("raw_zh_corpus")
    titles = (folder / "tnews_unlabeled_titles.txt").read_text(encoding="utf-8").splitlines()[:330]
    paragraphs = (folder / "cmrc2018_dev_trial_contexts.txt").read_text(encoding="utf-8").splitlines()[:30]
    texts = [t for pair in zip(titles[::11], paragraphs) for t in pair] + titles
    root = tmp_path_factory.mktemp("corpus") / "v1"
    paths, rows, start = [], [], 0
    for i, n in enumerate(SHARD_ROWS):
        paths.append(f"data/lang=zh/part-{i:05d}.parquet")
        rows += write_shard(root / paths[-1], texts[start : start + n], "zh")
        start += n
    return root, paths, rows


@pytest.fixture(scope="module")
def uyghur_shard(shared_data, corpus) -> str:
    """A Uyghur shard (UD sentences) beside the Chinese ones, for language mixing."""
    lines = shared_data("minority/ud_uyghur/ug_udt-ud-test.sentences.txt").read_text(encoding="utf-8")
    path = corpus[0] / "data/lang=ug/part-00000.parquet"
    write_shard(path, [line for line in lines.splitlines() if line.strip()][:200], "ug")
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    trainer = BertWordPieceTokenizer(handle_chinese_chars=True, lowercase=True)
    trainer.train_from_iterator([r["text"] for r in corpus[2]], vocab_size=2000)
    return BertTokenizerFast(tokenizer_object=trainer._tokenizer)


def shard_paths(corpus) -> list[str]:
    root, paths, _ = corpus
    return [str(root / p) for p in paths]


def stream(corpus, tokenizer, objective: str = "wwm", sop: bool = False, **config) -> TrainingStream:
    """The stream under test; `objective` "wwm+sop" means wwm on sentence-order pairs."""
    settings = {"batch_size": 8, "shuffle_buffer": 100, "chunk_rows": 64, "epochs": 2, "seed": 3, **config}
    masking, _, pairs = objective.partition("+")
    batch = BatchConfig(objective=masking, max_len=MAX_LEN, packing=not pairs, sop=bool(pairs))
    return TrainingStream.from_shards(shard_paths(corpus), tokenizer, batch, StreamConfig(**settings))


def refs(rows: ShuffledRows) -> list[tuple[int, int]]:
    return [ref for ref, _ in rows]


def assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.keys() == b.keys(), i
        for key in a:
            assert torch.equal(a[key], b[key]), (i, key)


def test_rows_are_seeded_shuffled_and_shard_order_changes_per_epoch(corpus):
    paths = shard_paths(corpus)
    first = refs(ShuffledRows(paths, seed=1, buffer_size=50, epochs=4))
    assert first == refs(ShuffledRows(paths, seed=1, buffer_size=50, epochs=4))
    assert first != refs(ShuffledRows(paths, seed=2, buffer_size=50, epochs=4))
    reader = ShuffledRows(paths, seed=1)
    assert len({tuple(reader.order(e).tolist()) for e in range(6)}) > 1
    one_epoch = refs(ShuffledRows(paths, seed=1, buffer_size=50, epochs=1))
    assert one_epoch != sorted(one_epoch, key=lambda r: (reader.order(0).tolist().index(r[0]), r[1]))
    # a buffer of one reads in the seeded shard order, file order within shards
    plain = refs(ShuffledRows(paths, seed=1, buffer_size=1, epochs=1))
    assert plain == [(int(s), r) for s in reader.order(0) for r in range(SHARD_ROWS[s])]


def test_rows_carry_the_shard_text_and_word_spans(corpus):
    _, _, rows = corpus
    starts = np.cumsum((0, *SHARD_ROWS))
    for (shard, row), got in ShuffledRows(shard_paths(corpus), seed=5, buffer_size=40, epochs=1):
        want = rows[starts[shard] + row]
        assert got["text"] == want["text"] and got["lang"] == "zh"
        assert got["word_offsets"] == [list(s) for s in want["word_offsets"]]


@pytest.mark.parametrize("world_size", [1, 3])
def test_ranks_read_disjoint_slices_covering_each_epoch(corpus, world_size):
    paths = shard_paths(corpus)
    per_rank = [
        refs(ShuffledRows(paths, seed=7, buffer_size=30, epochs=1, rank=r, world_size=world_size))
        for r in range(world_size)
    ]
    everything = [ref for part in per_rank for ref in part]
    assert len(everything) == len(set(everything)) == sum(SHARD_ROWS)
    assert set(everything) == {(s, r) for s, n in enumerate(SHARD_ROWS) for r in range(n)}
    assert max(map(len, per_rank)) - min(map(len, per_rank)) <= 1


def test_a_filesystem_reads_the_same_rows(corpus):
    root, paths, _ = corpus
    local = refs(ShuffledRows(shard_paths(corpus), seed=4, buffer_size=20, epochs=1))
    sub = pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem())
    assert refs(ShuffledRows(paths, sub, seed=4, buffer_size=20, epochs=1)) == local


def test_every_document_is_batched_once_per_epoch(corpus, tokenizer):
    _, _, rows = corpus
    batches = list(stream(corpus, tokenizer, epochs=1))
    assert all(len(b["input_ids"]) == 8 for b in batches[:-1]) and 1 <= len(batches[-1]["input_ids"]) <= 8
    assert all(b["input_ids"].shape[1] <= MAX_LEN for b in batches)
    documents = sum(int(b["document_ids"].amax(dim=1).sum()) for b in batches)
    assert documents == len(encode(rows, tokenizer, MAX_LEN))
    tokens = sum(int((b["document_ids"] > 0).sum()) for b in batches)
    assert tokens == sum(len(e) for e in encode(rows, tokenizer, MAX_LEN))
    assert {"input_ids", "document_ids", "labels"} == set(batches[0])


@pytest.mark.parametrize(
    "objective, where", [("wwm", (0.1, 0.55, 1.0)), ("pert", (0.55,)), ("wwm+sop", (0.1, 0.55, 1.0))]
)
def test_resuming_from_a_checkpoint_yields_the_same_batches_bit_for_bit(corpus, tokenizer, objective, where):
    whole = list(stream(corpus, tokenizer, objective))
    assert len(whole) > 40  # 0.1: within the first chunks; 0.55: reading epoch 2; 1.0: draining the buffer
    for k in (min(int(f * len(whole)), len(whole) - 1) for f in where):
        first = stream(corpus, tokenizer, objective)
        taken = list(islice(first, k))
        assert_same_batches(taken, whole[:k])
        saved = io.BytesIO()
        torch.save(first.state_dict(), saved)
        saved.seek(0)
        resumed = stream(corpus, tokenizer, objective)
        resumed.load_state_dict(torch.load(saved, weights_only=True))
        assert_same_batches(list(resumed), whole[k:])


def test_sop_stream_holds_every_window_of_every_document_once_per_epoch(corpus, tokenizer):
    _, _, rows = corpus
    batches = list(stream(corpus, tokenizer, "mlm+sop", epochs=1))
    assert {"input_ids", "attention_mask", "token_type_ids", "sentence_order_label", "labels"} == set(
        batches[0]
    )
    pairs = encode_pairs(rows, tokenizer, MAX_LEN)
    assert sum(len(b["input_ids"]) for b in batches) == len(pairs) > len(rows)  # paragraphs: several
    assert sum(int(b["attention_mask"].sum()) for b in batches) == sum(len(p) for p in pairs)
    labels = torch.cat([b["sentence_order_label"] for b in batches])
    uncut = sum(p.second is None for p in pairs)
    assert (
        int((labels == -100).sum()) == uncut and abs(float(labels[labels >= 0].float().mean()) - 0.5) < 0.08
    )
    # [CLS] A [SEP] is type 0 and B [SEP] type 1, whichever of the two segments comes first
    types = [
        (int(((t == 0) & (m == 1)).sum()) - 2, int(t.sum()) - 1)
        for b in batches
        for t, m in zip(b["token_type_ids"], b["attention_mask"])
    ]
    want = [(len(p.first.input_ids), len(p.second.input_ids)) for p in pairs if p.second is not None]
    assert sorted(sorted(t) for t in types if t[1] >= 0) == sorted(sorted(w) for w in want)


def mix(corpus, uyghur_shard: str, **probs: float) -> MixedRows:
    streams = {
        "zh": ShuffledRows(shard_paths(corpus), seed=1, buffer_size=50),
        "ug": ShuffledRows([uyghur_shard], seed=1, buffer_size=50),
    }
    return MixedRows(streams, probs, seed=9)


def test_language_mix_follows_the_probabilities_and_resumes(corpus, uyghur_shard):
    def take(rows: MixedRows, n: int) -> list:
        return [(ref, row["text"], row["lang"]) for ref, row in islice(rows, n)]

    whole = take(mix(corpus, uyghur_shard, zh=0.3, ug=0.7), 3000)
    assert all(ref[0] == lang for ref, _, lang in whole)
    share = sum(lang == "ug" for _, _, lang in whole) / len(whole)
    assert abs(share - 0.7) < 0.03  # 3.5 standard deviations
    first = mix(corpus, uyghur_shard, zh=0.3, ug=0.7)
    assert take(first, 1234) == whole[:1234]
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    resumed = mix(corpus, uyghur_shard, zh=0.3, ug=0.7)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    assert take(resumed, 1766) == whole[1234:]


def test_a_mixed_stream_resumes_bit_for_bit(corpus, uyghur_shard, tokenizer):
    def make() -> TrainingStream:
        rows = mix(corpus, uyghur_shard, zh=0.5, ug=0.5)
        config = BatchConfig(objective="mlm", max_len=MAX_LEN)
        return TrainingStream(rows, tokenizer, config, batch_size=8, chunk_rows=64)

    whole = list(islice(make(), 30))
    first = make()
    assert_same_batches(list(islice(first, 17)), whole[:17])
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    assert_same_batches(list(islice(resumed, 13)), whole[17:])


def test_state_is_small_indices_not_texts(corpus, tokenizer):
    it = stream(corpus, tokenizer, shuffle_buffer=100)
    assert len(list(islice(it, 20))) == 20
    state = it.state_dict()
    assert state["rows"]["buffer"].shape == (100, 2)
    saved = io.BytesIO()
    torch.save(state, saved)
    assert len(saved.getvalue()) < 20_000


def test_bad_shards_and_foreign_states_are_named(corpus, tmp_path, tokenizer):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"content": ["x"]}), bad)
    with pytest.raises(ValueError, match=r"bad\.parquet.*word_offsets"):
        ShuffledRows([str(bad)])
    with pytest.raises(ValueError, match="rank"):
        ShuffledRows(shard_paths(corpus), rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        StreamConfig(batch_size=0)
    with pytest.raises(ValueError, match="sum to 1"):
        MixedRows({"zh": ShuffledRows(shard_paths(corpus))}, {"zh": 0.5})
    state = ShuffledRows(shard_paths(corpus), rank=0, world_size=2).state_dict()
    with pytest.raises(ValueError, match="rank"):
        ShuffledRows(shard_paths(corpus), rank=1, world_size=2).load_state_dict(state)


# --- CINO fast MLM: one language per batch -----------------------------------------------------------


@pytest.fixture(scope="module")
def zh_ug_tokenizer(corpus, uyghur_shard):
    """A WordPiece over both languages, so the Uyghur rows get ids of their own."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    texts = [r["text"] for r in corpus[2]] + [t for texts in part_texts([uyghur_shard]) for t in texts]
    trainer = BertWordPieceTokenizer(handle_chinese_chars=True, lowercase=True)
    trainer.train_from_iterator(texts, vocab_size=3000)
    return BertTokenizerFast(tokenizer_object=trainer._tokenizer)


FAST_PROBS = {"zh": 0.3, "ug": 0.7}


def language_paths(corpus, uyghur_shard: str) -> dict[str, list[str]]:
    return {"zh": shard_paths(corpus), "ug": [uyghur_shard]}


@pytest.fixture(scope="module")
def subsets(corpus, uyghur_shard, zh_ug_tokenizer) -> dict[str, torch.Tensor]:
    paths = language_paths(corpus, uyghur_shard)
    return {lang: corpus_vocab(part_texts(p), zh_ug_tokenizer) for lang, p in paths.items()}


def fast_batches(corpus, uyghur_shard, tokenizer, subsets) -> LanguageBatches:
    rows = {
        lang: ShuffledRows(p, seed=1, buffer_size=50)
        for lang, p in language_paths(corpus, uyghur_shard).items()
    }
    config = BatchConfig(objective="mlm", max_len=MAX_LEN)
    return LanguageBatches.from_rows(
        rows, FAST_PROBS, subsets, tokenizer, config, batch_size=4, chunk_rows=32, seed=9
    )


def test_corpus_vocab_is_every_id_the_training_rows_use(corpus, uyghur_shard, zh_ug_tokenizer):
    paths, split = shard_paths(corpus), Holdout(0.2, seed=4)
    train = [row["text"] for _, row in ShuffledRows(paths, buffer_size=1, epochs=1, holdout=split)]
    held = [
        row["text"] for _, row in ShuffledRows(paths, buffer_size=1, epochs=1, holdout=split, part="held_out")
    ]
    assert sorted(t for texts in part_texts(paths, holdout=split) for t in texts) == sorted(train)
    assert sorted(t for texts in part_texts(paths, holdout=split, part="held_out") for t in texts) == sorted(
        held
    )
    rows = [row for _, row in ShuffledRows(paths, buffer_size=1, epochs=1, holdout=split)]
    ids = [e.input_ids for e in encode(rows, zh_ug_tokenizer, MAX_LEN)]
    want = group_vocab(ids, len(zh_ug_tokenizer), zh_ug_tokenizer.all_special_ids)
    assert torch.equal(corpus_vocab(part_texts(paths, holdout=split), zh_ug_tokenizer), want)


def test_fast_mlm_batches_hold_one_language_and_its_vocab_subset(
    corpus, uyghur_shard, zh_ug_tokenizer, subsets
):
    from plmops.platform.models import PlmopsConfig, PlmopsForMaskedLM

    assert len(subsets["ug"]) < len(subsets["zh"]) < len(zh_ug_tokenizer)
    batches = list(islice(fast_batches(corpus, uyghur_shard, zh_ug_tokenizer, subsets), 600))
    langs = []
    for batch in batches:
        (lang,) = [lang for lang, ids in subsets.items() if torch.equal(batch["vocab_subset"], ids)]
        langs.append(lang)
        labels, real = batch["labels"], batch["document_ids"] > 0
        kept = batch["input_ids"][real & (labels == -100)]  # tokens the masking left alone
        assert torch.isin(kept, subsets[lang]).all()  # every row of the batch is of that language
        assert torch.isin(labels[labels != -100], subsets[lang]).all()  # the head can score every label
    assert langs == list(islice(LanguageDraws(FAST_PROBS, seed=9), 600))
    assert abs(langs.count("ug") / len(langs) - FAST_PROBS["ug"]) < 0.07  # 3.7 standard deviations
    config = PlmopsConfig(
        vocab_size=len(zh_ug_tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=MAX_LEN,
    )
    model = PlmopsForMaskedLM(config)
    out = model(**batches[0])
    assert out.logits.shape == (int((batches[0]["labels"] != -100).sum()), len(batches[0]["vocab_subset"]))


def test_fast_mlm_batches_resume_bit_for_bit(corpus, uyghur_shard, zh_ug_tokenizer, subsets):
    whole = list(islice(fast_batches(corpus, uyghur_shard, zh_ug_tokenizer, subsets), 80))
    first = fast_batches(corpus, uyghur_shard, zh_ug_tokenizer, subsets)
    assert_same_batches(list(islice(first, 37)), whole[:37])
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    resumed = fast_batches(corpus, uyghur_shard, zh_ug_tokenizer, subsets)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    assert_same_batches(list(islice(resumed, 43)), whole[37:])
    with pytest.raises(ValueError, match="saved languages"):
        LanguageBatches({"zh": stream(corpus, zh_ug_tokenizer, "mlm")}, {"zh": 1.0}, subsets).load_state_dict(
            first.state_dict()
        )
    with pytest.raises(ValueError, match="no vocab subset for"):
        LanguageBatches({"kk": stream(corpus, zh_ug_tokenizer, "mlm")}, {"kk": 1.0}, subsets)
