"""Word segmentation: token-for-token agreement with jieba, span invariants, worker pools, other scripts."""

from __future__ import annotations

import random

import jieba
import pyarrow as pa
import pytest
import rjieba

from plmops.platform.text.segment import (
    SPANS_TYPE,
    Segmenter,
    decode_spans,
    encode_spans,
    segment_batch,
    segment_words,
)

jieba.setLogLevel(60)


def words(text: str, lang: str) -> list[str]:
    return [text[a:b] for a, b in segment_words(text, lang)]


def jieba_words(text: str) -> list[str]:
    return [w for w in jieba.cut(text, HMM=True) if not w.isspace()]


def assert_tiles(text: str, spans: list[tuple[int, int]]) -> None:
    """Ordered, disjoint spans within the text covering exactly its non-whitespace characters."""
    covered = [False] * len(text)
    prev_end = 0
    for start, end in spans:
        assert prev_end <= start < end <= len(text), (start, end)
        covered[start:end] = [True] * (end - start)
        prev_end = end
    assert covered == [not ch.isspace() for ch in text], text[:80]


@pytest.fixture(scope="module")
def zh_sample(shared_data) -> list[str]:
    """2,000 lines: 1,000 Wikipedia paragraphs and 1,000 news titles, seeded."""
    rng = random.Random(0)
    lines = []
    for name in ("cmrc2018_dev_trial_contexts.txt", "tnews_unlabeled_titles.txt"):
        text = shared_data(f"raw_zh_corpus/{name}").read_text(encoding="utf-8")
        lines += rng.sample([line for line in text.splitlines() if line.strip()], 1000)
    return lines


@pytest.fixture(scope="module")
def minority_sample(shared_data) -> list[tuple[str, str]]:
    ug = shared_data("minority/ud_uyghur/ug_udt-ud-test.sentences.txt").read_text(encoding="utf-8")
    kk = shared_data("minority/ud_kazakh/kk_ktb-ud-test.sentences.txt").read_text(encoding="utf-8")
    yue = shared_data("minority/ud_cantonese/yue_hk-ud-test.sentences.txt").read_text(encoding="utf-8")
    return (
        [(t, "ug") for t in ug.splitlines()[:300]]
        + [(t, "kk") for t in kk.splitlines()[:300]]
        + [(t, "yue") for t in yue.splitlines()[:300]]
    )


def test_identical_to_jieba_on_real_corpus(zh_sample: list[str]) -> None:
    spans = segment_batch(zh_sample, ["zh"] * len(zh_sample))
    for line, line_spans in zip(zh_sample, spans):
        assert [line[a:b] for a, b in line_spans] == jieba_words(line), line[:80]


@pytest.mark.parametrize(
    "text",
    [
        "河南建业1-2失利。",  # rjieba's HMM keeps "1-2" whole; jieba splits it
        "Spotify 对 R.Kelly 进行推荐“封杀”",  # likewise "R.Kelly"
        "不扯淡新闻｜常在雨中跑",  # an HMM near-tie that rjieba's tables break the other way
        "发布于2018.5.8，售价2.4km",
        "我来到北京清华大学",
        "㐀𠀀 ext-A/B 字符鿿",  # outside jieba's Han range: blocks end there
        " 前后 有\t空格\r\n的  文本 ",
    ],
)
def test_matches_jieba_where_plain_rjieba_does_not(text: str) -> None:
    assert words(text, "zh") == jieba_words(text)


def test_identical_to_jieba_with_odd_characters(zh_sample: list[str]) -> None:
    """Real titles with ASCII punctuation, odd whitespace and characters beyond jieba's Han range mixed in."""
    rng = random.Random(0)
    extras = list("abcXYZ0123456789.-_%+#&,， \u3000\t\r\n。！？“”()（）㐀𠀀鿖鿿ÅéИ")
    texts = []
    for line in zh_sample[1000:1500]:
        chars = list(line)
        for _ in range(rng.randint(1, 8)):
            chars.insert(rng.randint(0, len(chars)), rng.choice(extras) * rng.randint(1, 3))
        texts.append("".join(chars))
    for text, spans in zip(texts, segment_batch(texts, ["zh"] * len(texts))):
        assert [text[a:b] for a, b in spans] == jieba_words(text), repr(text)


def test_plain_rjieba_differs_on_these_inputs() -> None:
    """Guards the reason for the HMM replay: if rjieba ever matches jieba here, the replay can go."""
    text = "河南建业1-2失利，常在雨中跑"
    assert [w for w in rjieba.cut(text, True) if not w.isspace()] != jieba_words(text)


def test_zh_spans_tile_text(zh_sample: list[str]) -> None:
    texts = zh_sample[:200] + ["  前后 有\t空格\r\n的  文本 ", "", "㐀𠀀 ext-A/B 字符"]
    for text, spans in zip(texts, segment_batch(texts, ["zh"] * len(texts))):
        assert_tiles(text, spans)


def test_minority_spans_tile_text(minority_sample: list[tuple[str, str]]) -> None:
    texts, langs = zip(*minority_sample)
    for text, spans in zip(texts, segment_batch(texts, langs)):
        assert_tiles(text, spans)


def test_workers_match_in_process(zh_sample: list[str], minority_sample: list[tuple[str, str]]) -> None:
    texts = zh_sample[:400] + [t for t, _ in minority_sample]
    langs = ["zh"] * 400 + [lang for _, lang in minority_sample]
    expected = segment_batch(texts, langs, workers=1)
    with Segmenter(workers=2, chunk_chars=20_000) as segmenter:
        assert segmenter(texts, langs) == expected
        assert segmenter(texts[::-1], langs[::-1]) == expected[::-1]  # the pool is reused
        assert decode_spans(segmenter.column(texts, langs)) == expected


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        # Tibetan: a syllable keeps its tsheg, shad is its own span.
        ("བོད་ཡིག་ནི་ཡིན། ང་རང་", "bo", ["བོད་", "ཡིག་", "ནི་", "ཡིན", "།", "ང་", "རང་"]),
        ("༄༅། །བཀྲ་ཤིས་", "bo", ["༄", "༅", "།", "།", "བཀྲ་", "ཤིས་"]),
        # Uyghur: Arabic comma and full stop are their own spans.
        ("ئاسماننى كۆپكۈك، دەريا.", "ug", ["ئاسماننى", "كۆپكۈك", "،", "دەريا", "."]),
        # Arabic harakat (combining marks) stay inside their word.
        ("كِتَابٌ جَدِيدٌ", "ug", ["كِتَابٌ", "جَدِيدٌ"]),
        # Traditional Mongolian with a free variation selector (U+180B) inside a word.
        ("ᠮᠣᠩᠭᠣᠯ ᠬᠡ\u180bᠯᠡ᠃", "mn", ["ᠮᠣᠩᠭᠣᠯ", "ᠬᠡ\u180bᠯᠡ", "᠃"]),
        ("Сәлем, әлем!", "kk", ["Сәлем", ",", "әлем", "!"]),
        ("안녕하세요, 세계.", "ko", ["안녕하세요", ",", "세계", "."]),
    ],
)
def test_other_scripts(text: str, lang: str, expected: list[str]) -> None:
    assert words(text, lang) == expected
    assert_tiles(text, segment_words(text, lang))


def test_bad_language_code_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown language code\(s\) \['xx'\]"):
        segment_words("abc", "xx")
    with pytest.raises(ValueError, match="2 texts but 1 language codes"):
        segment_batch(["a", "b"], ["en"])
    with pytest.raises(ValueError, match="workers must be >= 1"):
        Segmenter(workers=0)


def test_arrow_encoding_round_trips() -> None:
    texts, langs = ["我爱北京天安门", "", "hello world"], ["zh", "zh", "en"]
    spans = segment_batch(texts, langs)
    column = encode_spans(spans)
    assert column.type == SPANS_TYPE
    assert pa.table({"w": column}).column("w").type == pa.list_(pa.list_(pa.int32(), 2))
    assert decode_spans(column) == spans
