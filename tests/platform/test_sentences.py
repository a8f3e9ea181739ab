"""Sentence splitting: hand-worked examples per script, and span invariants on real corpora."""

from __future__ import annotations

import json

import pytest

from plmops.platform.text.sentences import split_sentences


TERMINATORS = "。！？；…!?;.།༎༏༐༑᠃᠉؟۔"
CLOSERS = "\"'”’」』）)】》〉］] "


def ends_with_terminator(sentence: str) -> bool:
    return sentence.rstrip(CLOSERS)[-1] in TERMINATORS


def pieces(text: str) -> list[str]:
    return [text[a:b] for a, b in split_sentences(text)]


def assert_valid_spans(text: str, spans: list[tuple[int, int]]) -> None:
    """Ordered, disjoint, trimmed spans that together hold every non-whitespace character."""
    covered = [False] * len(text)
    prev_end = 0
    for start, end in spans:
        assert prev_end <= start < end <= len(text), (start, end, text[:80])
        assert not text[start].isspace() and not text[end - 1].isspace(), repr(text[start:end])
        covered[start:end] = [True] * (end - start)
        prev_end = end
    missed = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not missed, f"uncovered characters at {missed[:5]} in {text[:80]!r}"
    assert all(text[i].isspace() for i in range(len(text)) if not covered[i])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Chinese: full-width terminators, closing quotes kept, ellipsis runs, no terminator at the end.
        ("他说：“你好。”然后走了！真的？是的；好……  最后一句", ["他说：“你好。”", "然后走了！", "真的？", "是的；", "好……", "最后一句"]),
        ("（注：见上文。）接着说", ["（注：见上文。）", "接着说"]),
        ("「走吧！」他說。", ["「走吧！」", "他說。"]),
        # Chinese typed with half-width marks; a decimal point is not a terminator.
        ("好的;然后!再见?圆周率是3.14。", ["好的;", "然后!", "再见?", "圆周率是3.14。"]),
        # Tibetan: shad right after a syllable, double shad, a shad set off by a space after another.
        ("བོད་ཡིག་ཡིན།ང་རང་བོད་པ་ཡིན།། ཁྱེད་རང་༎", ["བོད་ཡིག་ཡིན།", "ང་རང་བོད་པ་ཡིན།།", "ཁྱེད་རང་༎"]),
        ("ཡིན། །ང་ཡིན།", ["ཡིན། །", "ང་ཡིན།"]),
        # Traditional Mongolian full stops; the Mongolian comma does not split.
        ("ᠮᠣᠩᠭᠣᠯ᠂ ᠬᠡᠯᠡ᠃ ᠰᠠᠢᠨ᠉", ["ᠮᠣᠩᠭᠣᠯ᠂ ᠬᠡᠯᠡ᠃", "ᠰᠠᠢᠨ᠉"]),
        # Arabic script: ؟ and ۔ split without a space, Latin marks before a space; Arabic comma does not.
        (
            "ئاسماننى كۆپكۈك، دەريا. نېمە؟بۇ! ياخشى۔تامام",
            ["ئاسماننى كۆپكۈك، دەريا.", "نېمە؟", "بۇ!", "ياخشى۔", "تامام"],
        ),
        # Latin/Cyrillic: space after the mark needed; initials and lowercase continuations do not split.
        (
            "Pi is 3.14! Really?  Yes; no. See www.x.org now.",
            ["Pi is 3.14!", "Really?", "Yes; no.", "See www.x.org now."],
        ),
        ("Қазір 2,2 трлн. теңге. Г. Марченко келді.", ["Қазір 2,2 трлн. теңге.", "Г. Марченко келді."]),
        ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
    ],
)
def test_hand_worked_examples(text: str, expected: list[str]) -> None:
    assert pieces(text) == expected
    assert_valid_spans(text, split_sentences(text))


@pytest.mark.parametrize("text", ["", "   \n\t ", "。", "  只有一句  "])
def test_degenerate_texts(text: str) -> None:
    spans = split_sentences(text)
    assert_valid_spans(text, spans)
    assert len(spans) == (0 if text.isspace() or not text else 1)


def test_rejects_non_text() -> None:
    with pytest.raises(TypeError, match="expected str, got bytes"):
        split_sentences(b"abc")  # type: ignore[arg-type]


def test_cmrc_contexts(shared_data) -> None:
    path = shared_data("raw_zh_corpus/cmrc2018_dev_trial_contexts.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    counts = []
    for line in lines:
        spans = split_sentences(line)
        assert_valid_spans(line, spans)
        counts.append(len(spans))
        for a, b in spans[:-1]:
            assert ends_with_terminator(line[a:b]), line[a:b]
    assert sum(counts) > 5 * len(lines)  # Wikipedia paragraphs hold several sentences each


def test_tibetan_contexts(shared_data) -> None:
    path = shared_data("minority/tibetan_qa/tibetanqa_sample.jsonl")
    contexts = {json.loads(line)["context"] for line in path.read_text(encoding="utf-8").splitlines()}
    n_sentences = 0
    for text in contexts:
        spans = split_sentences(text)
        assert_valid_spans(text, spans)
        n_sentences += len(spans)
        for a, b in spans[:-1]:
            assert ends_with_terminator(text[a:b]), text[a:b]
    assert n_sentences > 5 * len(contexts)


def test_uyghur_sentences_mostly_stay_whole(shared_data) -> None:
    """UD gives one sentence per line: over-splitting (on ، or abbreviations) would show up here."""
    path = shared_data("minority/ud_uyghur/ug_udt-ud-test.sentences.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    whole = 0
    for line in lines:
        spans = split_sentences(line)
        assert_valid_spans(line, spans)
        whole += len(spans) == 1
    assert whole >= 0.9 * len(lines)
