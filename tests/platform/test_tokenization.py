"""Tokenizers on the shared corpora: conventions, reload, per-language coverage, extension, pruning.

`python -m tests.platform.test_tokenization` prints the coverage tables of docs/tokenization.md.
"""

from __future__ import annotations

import copy
import gzip
import json
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import pre_tokenizers
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertTokenizerFast

from plmops.platform.models import PlmopsConfig, PlmopsForMaskedLM
from plmops.platform.tokenization import (
    SPECIAL_TOKENS,
    PlmopsTokenizer,
    coverage_table,
    extend_vocabulary,
    format_table,
    prune_vocabulary,
    rank_pieces,
    resize_embeddings,
    spell,
    train_pieces,
    train_wordpiece,
    vocab_list,
    with_vocab,
)

Corpus = dict[str, tuple[list[str], list[str]]]  # language -> (training texts, held-out texts)


@dataclass(frozen=True)
class Sizes:
    """How much of each corpus to read: small for the tests, everything for the documented tables."""

    train_lines: int | None = 1500
    held_lines: int = 200
    tibetan_contexts: int | None = 300
    zh_vocab: int = 3000
    multilingual_vocab: int = 8000
    pieces_per_language: int = 800


TEST_SIZES = Sizes()


def _lines(path: Path, n: int | None = None) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [line.strip() for line in islice(f, n) if line.strip()]


def _split(texts: list[str], held: int, limit: int | None) -> tuple[list[str], list[str]]:
    """The last `held` texts are held out; training takes up to `limit` of the others."""
    return texts[:-held][:limit], texts[-held:]


def load_corpus(get: Callable[[str], Path], sizes: Sizes = TEST_SIZES) -> Corpus:
    """Chinese (news titles + Wikipedia paragraphs), Cantonese, Uyghur, Kazakh, Tibetan, Mongolian."""
    held, limit = sizes.held_lines, sizes.train_lines
    titles = _split(_lines(get("raw_zh_corpus/tnews_unlabeled_titles.txt")), held, limit)
    paragraphs = _split(
        _lines(get("raw_zh_corpus/cmrc2018_dev_trial_contexts.txt")), held // 20, limit and limit // 20
    )
    with get("minority/tibetan_qa/tibetanqa_sample.jsonl").open(encoding="utf-8") as f:
        tibetan = list(dict.fromkeys(json.loads(line)["context"] for line in f))
    with gzip.open(get("minority/mongolian_cyrillic_ner/NER_v1.0.jsonl.gz"), "rt", encoding="utf-8") as f:
        mongolian = [json.loads(line)["text"] for line in f]
    uyghur = "minority/ud_uyghur/ug_udt-ud-"
    kazakh = [_lines(get(f"minority/ud_kazakh/kk_ktb-ud-{part}.sentences.txt")) for part in ("train", "test")]
    return {
        "zh": (titles[0] + paragraphs[0], titles[1] + paragraphs[1]),
        "yue": _split(_lines(get("minority/ud_cantonese/yue_hk-ud-test.sentences.txt")), held, limit),
        "ug": (
            _lines(get(uyghur + "train.sentences.txt"), limit),
            _lines(get(uyghur + "test.sentences.txt"), held),
        ),
        "kk": _split(kazakh[0] + kazakh[1], held, limit),
        "bo": _split(tibetan, held // 2, sizes.tibetan_contexts),
        "mn": _split(mongolian, held, limit),
    }


def held_out(corpus: Corpus, *langs: str) -> dict[str, list[str]]:
    return {lang: corpus[lang][1] for lang in langs or corpus}


def train_multilingual(corpus: Corpus, sizes: Sizes = TEST_SIZES) -> PlmopsTokenizer:
    return train_wordpiece((t for train, _ in corpus.values() for t in train), sizes.multilingual_vocab)


@dataclass(frozen=True)
class Extension:
    """A Chinese-only tokenizer, the same with only the new scripts' characters, and with all new pieces."""

    chinese: PlmopsTokenizer
    letters: PlmopsTokenizer
    extended: PlmopsTokenizer
    added: list[str]


def _is_character(piece: str) -> bool:
    return len(piece.removeprefix("##")) == 1


def extend_chinese(corpus: Corpus, sizes: Sizes = TEST_SIZES) -> Extension:
    """CINO's recipe on our data: Chinese vocabulary + Tibetan pieces + Uyghur pieces."""
    chinese = train_wordpiece(corpus["zh"][0], sizes.zh_vocab)
    with_tibetan, added_bo = extend_vocabulary(chinese, corpus["bo"][0], sizes.pieces_per_language)
    extended, added_ug = extend_vocabulary(with_tibetan, corpus["ug"][0], sizes.pieces_per_language)
    added = added_bo + added_ug
    letters = with_vocab(chinese, vocab_list(chinese) + [p for p in added if _is_character(p)])
    return Extension(chinese, letters, extended, added)


def _by_lang(rows: list[dict]) -> dict[str, dict]:
    return {row["lang"]: row for row in rows}


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(shared_data) -> Corpus:
    return load_corpus(shared_data)


@pytest.fixture(scope="module")
def multilingual(corpus: Corpus) -> PlmopsTokenizer:
    return train_multilingual(corpus)


@pytest.fixture(scope="module")
def extension(corpus: Corpus) -> Extension:
    return extend_chinese(corpus)


def _tiny_model(vocab_size: int) -> PlmopsForMaskedLM:
    torch.manual_seed(0)
    config = PlmopsConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    model = PlmopsForMaskedLM(config).eval()
    with torch.no_grad():  # a trained-looking bias, so that slicing and averaging it are visible
        model.cls.predictions.bias.normal_()
    return model


# --- the trained tokenizer -----------------------------------------------------------------------


def test_specials_come_first_and_accents_survive(multilingual: PlmopsTokenizer) -> None:
    assert multilingual.convert_ids_to_tokens(list(range(5))) == list(SPECIAL_TOKENS)
    normalizer = multilingual.backend_tokenizer.normalizer
    # Cyrillic й (и + breve), Arabic harakat, Tibetan vowel signs and subjoined letters, all combining.
    text = "Йод бِسْمِ བོད་སྐད།"
    assert normalizer.normalize_str(text) == text.lower()
    assert "й" in multilingual.tokenize("Йод")[0]


def test_reloads_with_autotokenizer_and_encodes_identically(
    multilingual: PlmopsTokenizer, corpus: Corpus, tmp_path: Path
) -> None:
    multilingual.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(reloaded, BertTokenizerFast) and isinstance(reloaded, PlmopsTokenizer)
    assert reloaded.strip_accents is False and reloaded.do_lower_case is True
    for texts in held_out(corpus).values():
        sample = texts[:50]
        assert reloaded(sample)["input_ids"] == multilingual(sample)["input_ids"]


def test_offsets_point_at_each_token_text(multilingual: PlmopsTokenizer, corpus: Corpus) -> None:
    normalize = multilingual.backend_tokenizer.normalizer.normalize_str
    for lang, texts in held_out(corpus).items():
        sample = texts[:40]
        batch = multilingual(sample, return_offsets_mapping=True)
        for text, ids, offsets in zip(sample, batch["input_ids"], batch["offset_mapping"]):
            tokens = multilingual.convert_ids_to_tokens(ids)
            assert (tokens[0], tokens[-1], offsets[0], offsets[-1]) == ("[CLS]", "[SEP]", (0, 0), (0, 0))
            for token, (start, end) in zip(tokens[1:-1], offsets[1:-1]):
                if token != "[UNK]":
                    # The normaliser pads CJK characters with spaces (that is how BERT splits them).
                    assert normalize(text[start:end]).strip() == token.removeprefix("##"), (
                        lang,
                        token,
                        start,
                    )


def test_cjk_is_split_per_character(multilingual: PlmopsTokenizer, corpus: Corpus) -> None:
    for lang in ("zh", "yue"):
        for text in corpus[lang][1][:100]:
            encoding = multilingual(text, return_offsets_mapping=True, add_special_tokens=False)
            for start, end in encoding["offset_mapping"]:
                if any(unicodedata.name(c, "").startswith("CJK UNIFIED") for c in text[start:end]):
                    assert end - start == 1, text[start:end]


def test_tibetan_syllables_keep_their_tsheg(multilingual: PlmopsTokenizer, corpus: Corpus) -> None:
    pre = multilingual.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    assert [piece for piece, _ in pre("བོད་ཡིག་ནི།")] == ["བོད་", "ཡིག་", "ནི", "།"]
    tokens = [t for text in corpus["bo"][1][:20] for t in multilingual.tokenize(text)]
    assert "་" not in tokens and tokens.count("[UNK]") < 0.01 * len(tokens)
    # Everywhere else the pre-tokeniser is BERT's.
    bert = pre_tokenizers.BertPreTokenizer()
    normalize = multilingual.backend_tokenizer.normalizer.normalize_str
    for lang, texts in held_out(corpus, "zh", "yue", "ug", "kk", "mn").items():
        for text in texts[:100]:
            assert pre(normalize(text)) == bert.pre_tokenize_str(normalize(text)), lang


def test_every_language_is_covered(multilingual: PlmopsTokenizer, corpus: Corpus) -> None:
    rows = _by_lang(coverage_table(multilingual, held_out(corpus)))
    assert set(rows) == {"zh", "yue", "ug", "kk", "bo", "mn"}
    for lang, row in rows.items():
        assert row["unk_rate"] < 0.05, (lang, row)
        assert 1.0 <= row["tokens_per_word"] < 3.0, (lang, row)
    # Tibetan syllables are mostly single pieces: fewer tokens than BERT's syllable + tsheg would give.
    assert rows["bo"]["tokens_per_word"] < 1.5


# --- extension -----------------------------------------------------------------------------------


def test_spell_is_greedy_longest_match() -> None:
    vocab = {"ab", "a", "##b", "##c", "##bc"}
    assert spell("abc", vocab) == ["ab", "##c"]
    assert spell("##bc", vocab) == ["##bc"]
    assert spell("abd", vocab) is None


def test_rank_puts_missing_characters_first_then_savings() -> None:
    old = {"a", "##b", "##c", "##d"}
    candidates = ["ab", "x", "abcd", "##y"]
    uses = np.array([10, 1, 5, 3])
    # x and ##y: characters, by use; abcd saves 5 * (4 - 1) = 15 tokens, ab 10 * (2 - 1) = 10.
    assert rank_pieces(candidates, uses, old) == ["##y", "x", "abcd", "ab"]


def test_extension_lowers_unknowns_and_fragmentation(extension: Extension, corpus: Corpus) -> None:
    held = held_out(corpus, "bo", "ug")
    before, letters, after = (
        _by_lang(coverage_table(tok, held))
        for tok in (extension.chinese, extension.letters, extension.extended)
    )
    for lang in held:
        # The Chinese vocabulary cannot spell these scripts: most of their words are [UNK] ...
        assert before[lang]["unk_rate"] > 0.5
        # ... and the added pieces cover them.
        assert after[lang]["unk_rate"] < 0.01
        # Fragmentation: far fewer tokens per word than spelling the new scripts letter by letter.
        assert after[lang]["tokens_per_word"] < 0.75 * letters[lang]["tokens_per_word"]
    assert len(extension.extended) == len(extension.chinese) + len(extension.added)


def test_extension_keeps_old_ids_and_chinese_tokenisation(extension: Extension, corpus: Corpus) -> None:
    old, new = extension.chinese, extension.extended
    assert vocab_list(new)[: len(old)] == vocab_list(old)
    texts = [t for t in corpus["zh"][1] if old.unk_token_id not in old(t)["input_ids"]]
    assert texts and new(texts)["input_ids"] == old(texts)["input_ids"]


def test_resize_keeps_old_rows_and_averages_new_ones(
    extension: Extension, corpus: Corpus, tmp_path: Path
) -> None:
    chinese, letters = extension.chinese, extension.letters
    model = _tiny_model(len(chinese))
    mean_row = model.bert.embeddings.word_embeddings.weight.detach().mean(0)
    characters = vocab_list(letters)[len(chinese) :]
    resize_embeddings(model, chinese, letters, characters)
    # Characters the Chinese vocabulary lacks have no sub-pieces: they start at the mean row.
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight[len(chinese)], mean_row)

    words = [p for p in extension.added if not _is_character(p)]
    full = with_vocab(letters, vocab_list(letters) + words)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    resize_embeddings(model, letters, full, words)
    weight, bias = model.bert.embeddings.word_embeddings.weight, model.cls.predictions.bias
    n = len(letters)
    assert weight.shape[0] == bias.shape[0] == model.config.vocab_size == len(full)
    assert model.cls.predictions.decoder.weight is weight and model.cls.predictions.decoder.bias is bias
    assert torch.equal(weight[:n], before["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(bias[:n], before["cls.predictions.bias"])
    old_ids = {p: i for i, p in enumerate(vocab_list(letters))}
    for offset, piece in enumerate(words[:50]):
        parts = [old_ids[p] for p in spell(piece, old_ids)]
        torch.testing.assert_close(
            weight[n + offset], before["bert.embeddings.word_embeddings.weight"][parts].mean(0)
        )
        torch.testing.assert_close(bias[n + offset], before["cls.predictions.bias"][parts].mean())

    batch = full(
        held_out(corpus, "bo", "ug")["ug"][:4],
        padding=True,
        truncation=True,
        max_length=64,
        return_tensors="pt",
    )
    assert batch["input_ids"].max() >= n  # the new pieces are used
    logits = model(**batch).logits
    assert logits.shape[-1] == len(full) and torch.isfinite(logits).all()
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(AutoModelForMaskedLM.from_pretrained(tmp_path).eval()(**batch).logits, logits)


def test_resize_refuses_mismatched_vocabularies(extension: Extension) -> None:
    model = _tiny_model(len(extension.chinese))
    with pytest.raises(ValueError, match="not old_tokenizer's \\+ added_pieces"):
        resize_embeddings(model, extension.chinese, extension.extended, extension.added[:-1])
    letters = extension.letters
    grown = with_vocab(letters, vocab_list(letters) + ["ཀཀཀ"])
    with pytest.raises(ValueError, match="embedding rows"):
        resize_embeddings(model, letters, grown, ["ཀཀཀ"])


# --- pruning -------------------------------------------------------------------------------------


def test_pruning_keeps_outputs_identical_and_shrinks(multilingual: PlmopsTokenizer, corpus: Corpus) -> None:
    texts = corpus["ug"][1][:60] + corpus["zh"][1][:60]
    original = _tiny_model(len(multilingual))
    model, pruned, report = prune_vocabulary(copy.deepcopy(original), multilingual, texts)
    kept = torch.from_numpy(report.kept_ids)
    assert report.vocab_before == len(multilingual) and report.vocab_after == len(pruned) < len(multilingual)
    dropped = (report.vocab_before - report.vocab_after) * (model.config.hidden_size + 1)  # row + bias
    assert report.params_before - report.params_after == dropped
    assert pruned.convert_ids_to_tokens(list(range(5))) == list(SPECIAL_TOKENS)
    assert model.config.vocab_size == len(pruned)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight

    for start in range(0, len(texts), 30):
        chunk = texts[start : start + 30]
        old = multilingual(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
        new = pruned(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
        assert torch.equal(kept[new["input_ids"]], old["input_ids"])
        want = original(**old, output_hidden_states=True)
        got = model(**new, output_hidden_states=True)
        for a, b in zip(want.hidden_states, got.hidden_states):
            assert torch.equal(a, b)
        torch.testing.assert_close(got.logits, want.logits[..., kept], rtol=0, atol=1e-6)


def test_pruning_refuses_mismatched_input(multilingual: PlmopsTokenizer) -> None:
    with pytest.raises(ValueError, match="embedding rows"):
        prune_vocabulary(_tiny_model(len(multilingual) - 1), multilingual, ["text"])
    with pytest.raises(TypeError, match="expected a WordPiece BertTokenizer, got str"):
        prune_vocabulary(_tiny_model(len(multilingual)), "bert-base-chinese", ["text"])


# --- bad input -----------------------------------------------------------------------------------


def test_training_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="no text to train on"):
        train_wordpiece([], vocab_size=100)
    with pytest.raises(ValueError, match="no text to train on"):
        train_wordpiece([" ", ""], vocab_size=100)
    with pytest.raises(TypeError, match="text 1 is int"):
        train_wordpiece(["文本", 3], vocab_size=100)
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece(["文本"], vocab_size=5)
    with pytest.raises(ValueError, match="n_pieces"):
        extend_vocabulary(train_wordpiece(["文本"], vocab_size=100), ["ཀ"], 0)


def _labelled(label: str, tokenizer: PlmopsTokenizer, texts: dict[str, list[str]]) -> list[dict]:
    return [{"tokenizer": label, **row} for row in coverage_table(tokenizer, texts)]


def _bert_pre_tokenized(corpus: Corpus, sizes: Sizes) -> BertTokenizerFast:
    """The multilingual vocabulary as plain BERT would build it: the tsheg split off as punctuation."""
    plain = BertTokenizerFast(strip_accents=False)
    backend = train_pieces(
        plain, (t for train, _ in corpus.values() for t in train), sizes.multilingual_vocab
    )
    vocab = backend.get_vocab()
    return with_vocab(plain, sorted(vocab, key=vocab.__getitem__))


def _prune_rows(corpus: Corpus, tokenizer: PlmopsTokenizer) -> list[dict]:
    """Vocabulary and parameters of a BERT-base-shaped encoder pruned to each language's training text."""
    base = PlmopsForMaskedLM(PlmopsConfig(vocab_size=len(tokenizer)))
    rows = []
    for lang in ("zh", "ug", "bo"):
        _, _, report = prune_vocabulary(copy.deepcopy(base), tokenizer, corpus[lang][0])
        rows.append(
            {
                "pruned to": f"{lang} training text",
                "vocab": f"{report.vocab_before} -> {report.vocab_after}",
                "parameters": f"{report.params_before:,} -> {report.params_after:,}",
            }
        )
    return rows


def _report(get: Callable[[str], Path], sizes: Sizes) -> str:
    corpus = load_corpus(get, sizes)
    multilingual = train_multilingual(corpus, sizes)
    extension = extend_chinese(corpus, sizes)
    minority = held_out(corpus, "bo", "ug")
    tibetan = held_out(corpus, "bo")
    sections = {
        f"Multilingual WordPiece ({len(multilingual)} pieces) on held-out text": coverage_table(
            multilingual, held_out(corpus)
        ),
        "Tibetan: tsheg kept with its syllable (ours) or split off (BERT's pre-tokeniser)": _labelled(
            "ours", multilingual, tibetan
        )
        + _labelled("bert", _bert_pre_tokenized(corpus, sizes), tibetan),
        f"Chinese-only ({len(extension.chinese)} pieces), with the new letters only, and extended by "
        f"{len(extension.added)} Tibetan + Uyghur pieces": _labelled("chinese", extension.chinese, minority)
        + _labelled("letters", extension.letters, minority)
        + _labelled("extended", extension.extended, minority),
        "Pruning the multilingual vocabulary (BERT-base shape)": _prune_rows(corpus, multilingual),
    }
    return "\n\n".join(f"{title}:\n\n{format_table(rows)}" for title, rows in sections.items())


if __name__ == "__main__":
    from tests.conftest import _shared_data_root

    documented = Sizes(None, 300, None, 21128 // 2, 21128, 3000)
    print(_report(lambda relative: _shared_data_root() / relative, documented))
