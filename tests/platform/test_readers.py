"""Tests for plmops.platform.text.readers: every format, compression, and each kind of bad input."""
from __future__ import annotations

import gzip
import io
import json
import lzma
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plmops.platform.text.readers import (
    EMPTY,
    INVALID_FILE,
    INVALID_JSON,
    MISSING_FIELD,
    RAW_KEEP,
    TOO_LONG,
    UNDECODABLE,
    BadRecord,
    ReaderOptions,
    Record,
    detect_format,
    open_decompressed,
    read_records,
)


def read(data: bytes, name: str, **options) -> list[Record | BadRecord]:
    return list(read_records(io.BytesIO(data), name, ReaderOptions(**options)))


def read_path(path: Path, **options) -> list[Record | BadRecord]:
    with path.open("rb") as stream:
        return list(read_records(stream, path.name, ReaderOptions(**options)))


def summary(items: list[Record | BadRecord]) -> list[tuple]:
    """(line, text) for records and (line, reason) for bad records, to compare streams compactly."""
    return [(i.line, i.text) if isinstance(i, Record) else (i.line, i.reason) for i in items]


class ReadOnlyBody:
    """Mimics an S3 StreamingBody: read(n) only, no peek, read1, seek or readline."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._inner.read(size)


# ------------------------------------------------------------------------------------------- text


def test_text_lines_handle_bom_crlf_blank_and_undecodable_lines():
    data = "\ufeff第一行\r\n".encode() + b"bad \xff\xfe line\r\n" + "\r\n  \u3000 \r\n第五行\r\n最后".encode()
    items = read(data, "corpus.txt")
    assert summary(items) == [(1, "第一行"), (2, UNDECODABLE), (3, EMPTY), (4, EMPTY), (5, "第五行"), (6, "最后")]
    bad = items[1]
    assert bad.raw == b"bad \xff\xfe line" and bad.source == "corpus.txt"
    assert bad.detail.startswith("line 2: invalid UTF-8 at byte 4")


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n")),
                      max_size=30),
       crlf=st.booleans())
def test_text_line_numbers_match_the_file_for_any_lines(lines, crlf):
    data = ("\r\n" if crlf else "\n").join(lines).encode()
    items = read(data, "x.txt")
    expected = [(n, text if text.strip() else EMPTY) for n, text in enumerate(lines, start=1)]
    if lines and lines[-1] == "":  # a trailing newline ends the last line, it does not start a new one
        expected.pop()
    assert summary(items) == expected


def test_paragraph_mode_joins_lines_and_reports_first_line():
    data = b"p1 a\r\np1 b\r\n\r\n \r\n\r\np2 a\r\np2 \xff\r\n\r\np3\r\n"
    items = read(data, "doc.txt", paragraph_mode=True)
    assert summary(items) == [(1, "p1 a\np1 b"), (6, UNDECODABLE), (9, "p3")]
    assert items[1].detail == "paragraph at line 6: line 7: invalid UTF-8 at byte 3 (b'\\xff')"


def test_over_long_lines_are_skipped_and_keep_only_1kb():
    long_line = "长" * 2000  # 6000 bytes
    data = f"short\n{long_line}\nafter\n".encode() + b"z" * 50_000
    items = read(data, "big.txt", max_bytes=5000)
    assert summary(items) == [(1, "short"), (2, TOO_LONG), (3, "after"), (4, TOO_LONG)]
    assert items[1].raw == long_line.encode()[:RAW_KEEP]
    assert len(items[3].raw) == RAW_KEEP and "line 4" in items[3].detail


def test_max_bytes_is_inclusive_and_ignores_the_line_terminator():
    data = b"a" * 10 + b"\r\n" + b"b" * 11 + b"\r\n" + b"d" * 11 + b"\n" + b"c" * 10
    expected = [(1, "a" * 10), (2, TOO_LONG), (3, TOO_LONG), (4, "c" * 10)]
    assert summary(read(data, "edge.txt", max_bytes=10)) == expected


def test_paragraph_over_max_bytes_is_too_long_but_next_paragraph_survives():
    data = b"x" * 6 + b"\n" + b"y" * 6 + b"\n\nok\n"
    items = read(data, "p.txt", paragraph_mode=True, max_bytes=12)
    assert summary(items) == [(1, TOO_LONG), (4, "ok")]


# ------------------------------------------------------------------------------------ JSON lines


def test_jsonl_reports_each_bad_line_and_keeps_going():
    lines = [
        json.dumps({"text": "好的"}, ensure_ascii=False),
        '{"text": "broken",',
        json.dumps({"title": "no text field"}),
        json.dumps({"text": 42}),
        json.dumps(["a", "list"]),
        json.dumps({"text": "   "}),
        "",
        json.dumps({"text": "末尾"}, ensure_ascii=False),
    ]
    items = read("\r\n".join(lines).encode(), "rows.jsonl")
    assert summary(items) == [(1, "好的"), (2, INVALID_JSON), (3, MISSING_FIELD), (4, MISSING_FIELD),
                              (5, INVALID_JSON), (6, EMPTY), (7, EMPTY), (8, "末尾")]
    assert items[1].detail == ("line 2: invalid JSON: "
                               "Expecting property name enclosed in double quotes at column 19")
    assert items[1].raw == lines[1].encode()
    fields = "text, content, context, document, body"
    assert items[2].detail == f"line 3: none of the text fields {fields} is a string"
    assert items[3].detail == f"line 4: none of the text fields {fields} is a string"
    assert items[4].detail == "line 5: expected a JSON object, got list"


def test_jsonl_dotted_field_reads_nested_objects():
    data = b'{"meta": {"body": "inner"}}\n{"meta": "flat"}\n'
    items = read(data, "n.jsonl", text_field="meta.body")
    assert summary(items) == [(1, "inner"), (2, MISSING_FIELD)]


def test_clue_auto_yields_each_text_field_as_its_own_record():
    rows = [{"sentence1": "前提", "sentence2": "假设", "label": "neutral"},
            {"sentence": "标题", "keywords": "a,b"},
            {"label": "0", "id": 3},
            {"abst": "摘要", "keyword": ["k"]}]
    data = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
    items = read(data, "dev.json")  # auto-detected as clue
    assert summary(items) == [(1, "前提"), (1, "假设"), (2, "标题"), (3, MISSING_FIELD), (4, "摘要")]
    assert "none of the text fields sentence, sentence1" in items[3].detail


def test_explicit_field_list_requires_every_field():
    data = b'{"q": "a", "c": "b"}\n{"q": "only"}\n'
    items = read(data, "x.jsonl", text_field="q,c")
    assert summary(items) == [(1, "a"), (1, "b"), (2, "only"), (2, MISSING_FIELD)]


# ------------------------------------------------------------------------------------------ SQuAD


def squad_bytes(contexts: list) -> bytes:
    paragraphs = [{"context": c, "qas": []} for c in contexts]
    return json.dumps({"version": "1", "data": [{"title": "t", "paragraphs": paragraphs}]},
                      ensure_ascii=False, indent=2).encode()


def test_squad_dedupes_contexts_and_numbers_paragraphs():
    items = read(squad_bytes(["甲", "乙", "甲", None, " ", "丙"]), "qa.json")
    assert summary(items) == [(1, "甲"), (2, "乙"), (4, MISSING_FIELD), (5, EMPTY), (6, "丙")]


def test_squad_article_without_paragraphs_does_not_stop_the_rest():
    doc = {"data": [{"title": "no paragraphs"}, {"paragraphs": [{"context": "ok"}]}]}
    items = read(json.dumps(doc).encode(), "qa.json", format="squad")
    assert summary(items) == [(1, MISSING_FIELD), (1, "ok")]
    assert items[0].detail == "article 1: no 'paragraphs' list"


def test_broken_squad_is_an_invalid_file_naming_the_line():
    data = squad_bytes(["one", "two"]).replace(b'"two"', b'"two" oops', 1)
    [bad] = read(data, "broken.json", format="squad")
    expected_line = data[: data.index(b"oops")].count(b"\n") + 1
    assert (bad.reason, bad.line) == (INVALID_FILE, expected_line)
    assert bad.detail.startswith(f"line {expected_line}: invalid JSON:") and b"oops" in bad.raw


def test_squad_with_invalid_utf8_or_wrong_shape_is_invalid_file():
    [bad] = read(b'{"data": [\n"\xff"]}', "x.json", format="squad")
    assert (bad.reason, bad.line) == (INVALID_FILE, 2) and "invalid UTF-8" in bad.detail
    [bad] = read(b'{"version": 1}', "x.json", format="squad")
    assert bad.reason == INVALID_FILE and "'data' list" in bad.detail


# ---------------------------------------------------------------------------------------- Parquet


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=2)  # several row groups, so rows are counted across them
    return sink.getvalue()


def test_parquet_rows_nulls_and_nested_fields(tmp_path):
    table = pa.table({"text": ["一", None, "", "四", "五"],
                      "meta": [{"body": "b1"}, {"body": None}, None, {"body": "b4"}, {"body": "b5"}]})
    path = tmp_path / "corpus.parquet"
    path.write_bytes(parquet_bytes(table))
    assert summary(read_path(path)) == [(1, "一"), (2, MISSING_FIELD), (3, EMPTY), (4, "四"), (5, "五")]
    assert summary(read_path(path, text_field="meta.body")) == [
        (1, "b1"), (2, MISSING_FIELD), (3, MISSING_FIELD), (4, "b4"), (5, "b5")]


def test_parquet_whole_file_problems_are_invalid_file():
    data = parquet_bytes(pa.table({"body": ["x"], "n": [1]}))
    [missing] = read(data, "a.parquet")
    assert missing.reason == INVALID_FILE
    assert "no column 'text'" in missing.detail and "(columns: body, n)" in missing.detail
    [wrong_type] = read(data, "a.parquet", text_field="n")
    assert wrong_type.reason == INVALID_FILE and "type int64, not string" in wrong_type.detail
    [corrupt] = read(data[: len(data) // 2], "a.parquet")
    assert corrupt.reason == INVALID_FILE and "not a readable Parquet file" in corrupt.detail


# ------------------------------------------------------------------------------------ compression


def test_xz_and_gz_are_read_by_name_and_by_magic(tmp_path):
    text = "一\n二\r\n三\n".encode()
    (tmp_path / "a.txt.xz").write_bytes(lzma.compress(text))
    (tmp_path / "b.txt").write_bytes(gzip.compress(text))  # misnamed: the magic bytes still win
    for name in ("a.txt.xz", "b.txt"):
        assert summary(read_path(tmp_path / name)) == [(1, "一"), (2, "二"), (3, "三")]


def test_gz_from_a_stream_with_only_read():
    data = gzip.compress("\n".join(f"行{i}" for i in range(1, 5001)).encode())
    items = list(read_records(ReadOnlyBody(data), "s3://bucket/k.txt.gz", ReaderOptions()))
    assert len(items) == 5000 and items[-1] == Record("行5000", "s3://bucket/k.txt.gz", 5000)


def test_truncated_gz_yields_the_intact_prefix_then_invalid_file():
    lines = [f"第{i}行 {'字' * (i % 40)}" for i in range(1, 20_001)]
    data = gzip.compress("\n".join(lines).encode())
    cut = data[: len(data) * 2 // 3]
    complete_lines = zlib.decompressobj(wbits=31).decompress(cut).count(b"\n")  # all that survived the cut
    *records, bad = read(cut, "cut.txt.gz")
    assert len(records) == complete_lines and all(isinstance(r, Record) for r in records)
    assert [(r.line, r.text) for r in records] == list(enumerate(lines[: len(records)], start=1))
    assert (bad.reason, bad.line) == (INVALID_FILE, len(records) + 1) and "truncated" in bad.detail


def test_truncated_gz_in_paragraph_mode_reports_the_cut_paragraph():
    paragraphs = [f"段{i}第一行\n段{i}第二行" for i in range(1, 3001)]
    data = gzip.compress("\n\n".join(paragraphs).encode())
    cut = data[: len(data) // 2]
    complete_lines = zlib.decompressobj(wbits=31).decompress(cut).count(b"\n")
    *records, bad = read(cut, "cut.txt.gz", paragraph_mode=True)
    assert [r.text for r in records] == paragraphs[: len(records)] and len(records) > 100
    cut_paragraph_start = 3 * len(records) + 1  # two lines and a blank per paragraph
    assert (bad.reason, bad.line) == (INVALID_FILE, cut_paragraph_start)
    assert f"line {complete_lines + 1}: compressed data is truncated" in bad.detail


def test_name_claiming_compression_without_magic_is_invalid_file():
    [bad] = read(b"plain text\n", "fake.jsonl.gz")
    assert bad.reason == INVALID_FILE and "fake.jsonl.gz" in bad.detail and "gzip" in bad.detail
    with pytest.raises(ValueError, match="fake.txt.xz"):
        open_decompressed(io.BytesIO(b"plain"), "fake.txt.xz")


# ---------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(("name", "head", "expected"), [
    ("a.txt", b"", "text"),
    ("dir/A.TXT.GZ", b"", "text"),
    ("s3://b/k.jsonl.xz", b"", "jsonl"),
    ("x.parquet", b"PAR1", "parquet"),
    ("train.json", b'{"sentence1": "a", "label": "0"}\n{"sentence1"', "clue"),
    ("one.json", b'{"data": [{"paragraphs": []}]}', "squad"),
    ("pretty.json.gz", b'\xef\xbb\xbf{\n  "version": "v1.0",\n  "data": [\n    {', "squad"),
])
def test_detect_format(name, head, expected):
    assert detect_format(name, head) == expected


@pytest.mark.parametrize(("name", "head", "message"), [
    ("notes.csv", b"a,b", "notes.csv: cannot detect the format"),
    ("list.json", b'["a", "b"]', "list.json: .json must be"),
    ("long.json", b'{"sentence": "' + b"x" * 100, "long.json: cannot tell SQuAD JSON from JSON lines"),
])
def test_detect_format_names_the_file_when_it_cannot_decide(name, head, message):
    with pytest.raises(ValueError, match=message):
        detect_format(name, head)


def test_reader_options_reject_bad_values():
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        ReaderOptions(format="csv")
    with pytest.raises(ValueError, match="max_bytes"):
        ReaderOptions(max_bytes=0)


# ------------------------------------------------------------------------------------ shared data


def test_shared_tnews_titles_one_record_per_line(shared_data):
    path = shared_data("raw_zh_corpus/tnews_unlabeled_titles.txt")
    lines = path.read_text(encoding="utf-8").split("\n")
    items = read_path(path)
    expected = [(n, t) for n, t in enumerate(lines, start=1) if t.strip()]
    assert [(r.line, r.text) for r in items if isinstance(r, Record)] == expected
    assert len(expected) > 19_000


def test_shared_cmrc_trial_yields_each_distinct_context(shared_data):
    path = shared_data("cmrc2018/cmrc2018_trial.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    contexts = [p["context"] for article in doc["data"] for p in article["paragraphs"]]
    items = read_path(path)
    assert all(isinstance(r, Record) for r in items)
    assert [r.text for r in items] == list(dict.fromkeys(contexts))
    assert 0 < len(items) <= len(contexts)


def test_shared_ocnli_dev_as_clue_json_lines(shared_data):
    path = shared_data("clue/ocnli/dev.json")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    items = read_path(path)
    expected = [(n, row[f]) for n, row in enumerate(rows, start=1) for f in ("sentence1", "sentence2")]
    assert summary(items) == expected


def test_shared_mongolian_ner_jsonl_gz(shared_data):
    path = shared_data("minority/mongolian_cyrillic_ner/NER_v1.0.jsonl.gz")
    rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
    items = read_path(path)
    assert all(isinstance(r, Record) for r in items)
    assert [r.text for r in items] == [row["text"] for row in rows] and len(items) > 10_000


def test_jsonl_auto_takes_the_first_common_text_field():
    lines = [
        json.dumps({"context": "段落", "question": "问题"}, ensure_ascii=False),
        json.dumps({"text": "正文", "context": "不取"}, ensure_ascii=False),
    ]
    items = read("\n".join(lines).encode(), "mrc.jsonl")
    assert summary(items) == [(1, "段落"), (2, "正文")]
