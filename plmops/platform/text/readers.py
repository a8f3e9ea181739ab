"""Source-format readers for corpus ingestion.

Every reader is a pure function of a binary stream: the caller opens a local file or an S3
object, and the same code runs for both. Readers never stop at a bad record; they yield a
`BadRecord` naming the problem and the place so ingestion can quarantine it and carry on.
Only a file that cannot be read any further ends early, with a final "invalid_file" record.
"""
from __future__ import annotations

import gzip
import io
import itertools
import json
import lzma
import re
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FORMATS = ("text", "jsonl", "squad", "clue", "parquet")

UNDECODABLE = "undecodable"
EMPTY = "empty"
TOO_LONG = "too_long"
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
INVALID_FILE = "invalid_file"

# Text fields of the CLUE / FewCLUE tasks (tnews, iflytek, afqmc, ocnli, cmnli, bustm, eprstmt, csl,
# csldcp, cluewsc). Labels, ids and keyword lists are deliberately absent.
CLUE_TEXT_FIELDS = ("sentence", "sentence1", "sentence2", "premise", "hypothesis", "text", "content", "abst")
# JSON lines with text_field "auto": the first of these present is the document (MRC-style files keep
# their passage in "context", e.g. TibetanQA).
JSONL_TEXT_FIELDS = ("text", "content", "context", "document", "body")

RAW_KEEP = 1024  # bytes of an over-long record kept for inspection
SNIFF_BYTES = 64 * 1024  # decompressed head used to detect a format, also the read buffer size

_GZIP_MAGIC = b"\x1f\x8b"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_BOM = b"\xef\xbb\xbf"
_EXTENSIONS = {".txt": "text", ".jsonl": "jsonl", ".parquet": "parquet"}
_SQUAD_DATA_KEY = re.compile(r'"data"\s*:\s*\[')
_DECOMPRESSION_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError)


@dataclass(frozen=True, slots=True)
class Record:
    """One document. `line` locates it for a human fixing the source.

    Text and JSON-lines formats: the 1-based line of the decompressed file where the record
    starts (the first line of a paragraph). SQuAD: the 1-based paragraph index in file order,
    counting duplicates. Parquet: the 1-based row index.
    """

    text: str
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record that was skipped, kept with enough context to quarantine and fix it.

    `line` follows `Record.line`; for "invalid_file" it is the line where reading broke
    (the text line of a SQuAD JSON syntax error, 0 when the file has no position at all).
    `raw` holds the offending bytes, only the first 1 KB for "too_long".
    """

    reason: str
    source: str
    line: int
    raw: bytes
    detail: str


@dataclass(frozen=True)
class ReaderOptions:
    """How to read one source.

    text_field: "auto" means "text" for jsonl and Parquet, and for clue every known CLUE text field
    present in a row (`CLUE_TEXT_FIELDS`), each as its own Record, because sentence pairs and
    premise/hypothesis pairs are separate texts, not one document. An explicit value may be a
    dotted path into nested objects ("meta.body") and, for JSON lines, a comma-separated list
    ("sentence1,sentence2") of fields that must all be present; each becomes its own Record.
    """

    format: str = "auto"
    text_field: str = "auto"
    paragraph_mode: bool = False
    max_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        if self.format != "auto" and self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; expected 'auto' or one of {FORMATS}")
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {self.max_bytes}")
        if not self.text_field.strip():
            raise ValueError("text_field must name a field or be 'auto'")


class _Line(NamedTuple):
    number: int
    text: str
    raw: bytes


class _RawReader(io.RawIOBase):
    """Lets io.BufferedReader (fast readline, peek) sit on anything with read(n): S3 bodies, GzipFile.

    read1 is preferred so a corrupt compressed stream still delivers every byte before the damage.
    """

    def __init__(self, inner: BinaryIO) -> None:
        self._read = getattr(inner, "read1", inner.read)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _buffered(stream: BinaryIO) -> io.BufferedReader:
    return io.BufferedReader(_RawReader(stream), buffer_size=SNIFF_BYTES)


def _strip_compression_suffix(name: str) -> tuple[str, str | None]:
    lower = name.lower()
    for suffix, kind in ((".gz", "gzip"), (".xz", "xz")):
        if lower.endswith(suffix):
            return lower[: -len(suffix)], kind
    return lower, None


def open_decompressed(stream: BinaryIO, name: str) -> io.BufferedReader:
    """Undo gzip / xz so readers see plain bytes, whatever the object is called.

    Magic bytes decide; a name ending in .gz / .xz whose content lacks that magic raises
    ValueError, since such a file is broken and reading it as text would yield garbage.
    """
    buffered = _buffered(stream)
    magic = buffered.peek(len(_XZ_MAGIC))[: len(_XZ_MAGIC)]
    actual = "gzip" if magic.startswith(_GZIP_MAGIC) else "xz" if magic.startswith(_XZ_MAGIC) else None
    _, claimed = _strip_compression_suffix(name)
    if claimed is not None and actual != claimed:
        raise ValueError(f"{name}: named as {claimed} but its first bytes {magic!r} are not {claimed} magic")
    if actual is None:
        return buffered
    inner = gzip.GzipFile(fileobj=buffered, mode="rb") if actual == "gzip" else lzma.LZMAFile(buffered)
    return _buffered(inner)


def detect_format(name: str, head: bytes) -> str:
    """Choose a reader from the file name, looking into `head` (decompressed leading bytes) for .json.

    CLUE ships JSON lines under .json while SQuAD/CMRC use one JSON object with a "data" list,
    so the extension alone cannot separate them.
    """
    stem, _ = _strip_compression_suffix(name)
    for extension, fmt in _EXTENSIONS.items():
        if stem.endswith(extension):
            return fmt
    if not stem.endswith(".json"):
        known = ", ".join(sorted([*_EXTENSIONS, ".json"]))
        raise ValueError(f"{name}: cannot detect the format from the extension; expected one of "
                         f"{known} (optionally + .gz/.xz) or set ReaderOptions.format")
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not text.startswith("{"):
        raise ValueError(f"{name}: .json must be a SQuAD object or JSON lines, "
                         f"but it starts with {text[:20]!r}")
    try:
        first = json.loads(text.partition("\n")[0])
    except json.JSONDecodeError:
        first = None
    if isinstance(first, dict):
        return "squad" if isinstance(first.get("data"), list) else "clue"
    if _SQUAD_DATA_KEY.search(text):
        return "squad"
    raise ValueError(f"{name}: cannot tell SQuAD JSON from JSON lines in its first {len(head)} bytes; "
                     "set ReaderOptions.format to 'squad' or 'clue'")


def read_records(stream: BinaryIO, source: str, options: ReaderOptions) -> Iterator[Record | BadRecord]:
    """Stream the documents of one source file, compressed or not.

    Text and JSON lines are read line by line, so memory stays bounded by max_bytes; SQuAD JSON
    and Parquet are loaded whole because their formats need it. Broken files come out as
    "invalid_file" records; only an undetectable format (format="auto") raises ValueError, since
    that is a configuration problem, not a data problem.
    """
    try:
        stream = open_decompressed(stream, source)
    except ValueError as exc:
        yield BadRecord(INVALID_FILE, source, 0, b"", str(exc))
        return
    fmt = options.format if options.format != "auto" else detect_format(source, stream.peek(SNIFF_BYTES))
    if fmt == "text":
        reader = _paragraphs if options.paragraph_mode else _text_lines
        yield from reader(stream, source, options.max_bytes)
    elif fmt in ("jsonl", "clue"):
        fields, mode = _resolve_fields(options.text_field, fmt)
        lines = _nonblank_lines(stream, source, options.max_bytes)
        yield from _json_lines(lines, source, fields, mode)
    elif fmt == "squad":
        yield from _squad(stream, source, options.max_bytes)
    else:
        field = "text" if options.text_field == "auto" else options.text_field
        yield from _parquet(stream, source, field, options.max_bytes)


# ---------------------------------------------------------------------------------------------
# Lines: the shared layer under text and JSON lines.


def _decoded_lines(stream: BinaryIO, source: str, max_bytes: int) -> Iterator[_Line | BadRecord]:
    """Yield lines without their LF / CRLF, decoded one by one so one bad line spoils nothing else.

    readline is capped, so an over-long line is skipped in slices instead of held in memory.
    """
    limit = max_bytes + 2  # room for the CRLF of a line of exactly max_bytes
    number = 0
    try:
        while chunk := stream.readline(limit):
            number += 1
            if len(chunk) == limit and not chunk.endswith(b"\n"):
                while (rest := stream.readline(limit)) and not rest.endswith(b"\n"):
                    pass
                yield BadRecord(TOO_LONG, source, number, chunk[:RAW_KEEP],
                                f"line {number}: longer than max_bytes={max_bytes}")
                continue
            raw = chunk.removesuffix(b"\n").removesuffix(b"\r")
            if number == 1:
                raw = raw.removeprefix(_BOM)
            if len(raw) > max_bytes:
                yield BadRecord(TOO_LONG, source, number, raw[:RAW_KEEP],
                                f"line {number}: {len(raw)} bytes, over max_bytes={max_bytes}")
                continue
            try:
                yield _Line(number, raw.decode("utf-8"), raw)
            except UnicodeDecodeError as exc:
                bad_bytes = raw[exc.start:exc.end]
                yield BadRecord(UNDECODABLE, source, number, raw,
                                f"line {number}: invalid UTF-8 at byte {exc.start} ({bad_bytes!r})")
    except _DECOMPRESSION_ERRORS as exc:
        yield BadRecord(INVALID_FILE, source, number + 1, b"",
                        f"line {number + 1}: compressed data is truncated or corrupt: {exc}")


def _nonblank_lines(stream: BinaryIO, source: str, max_bytes: int) -> Iterator[_Line | BadRecord]:
    for item in _decoded_lines(stream, source, max_bytes):
        if isinstance(item, _Line) and not item.text.strip():
            yield BadRecord(EMPTY, source, item.number, item.raw,
                            f"line {item.number}: empty or whitespace only")
        else:
            yield item


def _text_lines(stream: BinaryIO, source: str, max_bytes: int) -> Iterator[Record | BadRecord]:
    for item in _nonblank_lines(stream, source, max_bytes):
        yield Record(item.text, source, item.number) if isinstance(item, _Line) else item


def _is_blank(item: _Line | BadRecord) -> bool:
    return isinstance(item, _Line) and not item.text.strip()


def _paragraphs(stream: BinaryIO, source: str, max_bytes: int) -> Iterator[Record | BadRecord]:
    """Blank lines separate paragraphs; a bad line spoils its paragraph, so a paragraph cut off by a
    broken compressed file comes out as "invalid_file" rather than as a short document."""
    for blank, group in itertools.groupby(_decoded_lines(stream, source, max_bytes), key=_is_blank):
        if not blank:
            yield _join_paragraph(group, source, max_bytes)


def _join_paragraph(lines: Iterable[_Line | BadRecord], source: str, max_bytes: int) -> Record | BadRecord:
    """Join a paragraph's lines, stopping collecting (but still consuming) once it is known to be bad."""
    first = 0
    parts: list[_Line] = []
    size = -1  # n lines take n - 1 joining newlines
    problem: BadRecord | None = None
    for item in lines:
        number = item.line if isinstance(item, BadRecord) else item.number
        first = first or number
        if problem is not None:
            continue
        if isinstance(item, BadRecord):
            detail = f"paragraph at line {first}: {item.detail}"
            problem = BadRecord(item.reason, source, first, item.raw, detail)
            continue
        size += len(item.raw) + 1
        parts.append(item)
        if size > max_bytes:
            raw = b"\n".join(part.raw for part in parts)[:RAW_KEEP]
            problem = BadRecord(TOO_LONG, source, first, raw,
                                f"paragraph at line {first}: longer than max_bytes={max_bytes}")
    return problem or Record("\n".join(part.text for part in parts), source, first)


# ---------------------------------------------------------------------------------------------
# JSON lines (jsonl, CLUE).


def _resolve_fields(text_field: str, fmt: str) -> tuple[tuple[str, ...], str]:
    """Return the fields to read and how: "all" (each required, each a record), "each" (each one
    present is a record), or "first" (the first one present is the record)."""
    if text_field != "auto":
        return tuple(field.strip() for field in text_field.split(",")), "all"
    return (CLUE_TEXT_FIELDS, "each") if fmt == "clue" else (JSONL_TEXT_FIELDS, "first")


def _lookup(obj: dict, path: str) -> object:
    value: object = obj
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _json_lines(lines: Iterable[_Line | BadRecord], source: str, fields: tuple[str, ...],
                mode: str) -> Iterator[Record | BadRecord]:
    for line in lines:
        if isinstance(line, BadRecord):
            yield line
            continue
        try:
            obj = json.loads(line.text)
        except json.JSONDecodeError as exc:
            yield BadRecord(INVALID_JSON, source, line.number, line.raw,
                            f"line {line.number}: invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(obj, dict):
            yield BadRecord(INVALID_JSON, source, line.number, line.raw,
                            f"line {line.number}: expected a JSON object, got {type(obj).__name__}")
            continue
        yield from _json_fields(obj, line, source, fields, mode)


def _json_fields(obj: dict, line: _Line, source: str, fields: tuple[str, ...],
                 mode: str) -> Iterator[Record | BadRecord]:
    found = 0
    for field in fields:
        value = _lookup(obj, field)
        if not isinstance(value, str):
            if mode == "all":
                problem = "missing or null" if value is None else f"{type(value).__name__}, not a string"
                yield BadRecord(MISSING_FIELD, source, line.number, line.raw,
                                f"line {line.number}: field {field!r} is {problem}")
            continue
        found += 1
        if value.strip():
            yield Record(value, source, line.number)
        else:
            yield BadRecord(EMPTY, source, line.number, line.raw,
                            f"line {line.number}: field {field!r} is empty")
        if mode == "first":
            return
    if not found and mode != "all":
        yield BadRecord(MISSING_FIELD, source, line.number, line.raw,
                        f"line {line.number}: none of the text fields {', '.join(fields)} is a string")


def _checked(text: str, source: str, line: int, what: str, max_bytes: int) -> Record | BadRecord:
    """Apply the empty and size rules to a text taken out of a structured file."""
    if not text.strip():
        return BadRecord(EMPTY, source, line, text.encode(), f"{what}: empty or whitespace only")
    if len(text) * 4 > max_bytes:  # only then can UTF-8 exceed the limit, so encode only then
        raw = text.encode()
        if len(raw) > max_bytes:
            return BadRecord(TOO_LONG, source, line, raw[:RAW_KEEP],
                             f"{what}: {len(raw)} bytes, over max_bytes={max_bytes}")
    return Record(text, source, line)


def _read_whole(stream: BinaryIO, source: str) -> bytes | BadRecord:
    try:
        return stream.read()
    except _DECOMPRESSION_ERRORS as exc:
        return BadRecord(INVALID_FILE, source, 0, b"", f"compressed data is truncated or corrupt: {exc}")


# ---------------------------------------------------------------------------------------------
# SQuAD JSON (CMRC 2018, DRCD, TibetanQA): one object, loaded whole.


def _load_json_file(stream: BinaryIO, source: str) -> object:
    data = _read_whole(stream, source)
    if isinstance(data, BadRecord):
        return data
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return BadRecord(INVALID_FILE, source, line, data[exc.start: exc.start + RAW_KEEP],
                         f"line {line}: invalid UTF-8 at byte offset {exc.start}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        bad_line = text.split("\n")[exc.lineno - 1]
        return BadRecord(INVALID_FILE, source, exc.lineno, bad_line.encode()[:RAW_KEEP],
                         f"line {exc.lineno}: invalid JSON: {exc.msg} at column {exc.colno}")


def _squad(stream: BinaryIO, source: str, max_bytes: int) -> Iterator[Record | BadRecord]:
    """Yield each distinct paragraph context; questions repeat a context, the corpus needs it once."""
    doc = _load_json_file(stream, source)
    if isinstance(doc, BadRecord):
        yield doc
        return
    articles = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(articles, list):
        yield BadRecord(INVALID_FILE, source, 0, b"", "not SQuAD: expected a JSON object with a 'data' list")
        return
    seen: set[str] = set()
    index = 0
    for article_number, article in enumerate(articles, start=1):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            yield BadRecord(MISSING_FIELD, source, index + 1, b"",
                            f"article {article_number}: no 'paragraphs' list")
            continue
        for paragraph in paragraphs:
            index += 1
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                detail = f"paragraph {index} (article {article_number}): 'context' is missing or not a string"
                yield BadRecord(MISSING_FIELD, source, index, b"", detail)
            elif context not in seen:
                seen.add(context)
                yield _checked(context, source, index, f"paragraph {index}", max_bytes)


# ---------------------------------------------------------------------------------------------
# Parquet: loaded whole (S3 bodies cannot seek), decoded one row group batch at a time.


def _parquet(stream: BinaryIO, source: str, field: str, max_bytes: int) -> Iterator[Record | BadRecord]:
    data = _read_whole(stream, source)
    if isinstance(data, BadRecord):
        yield data
        return
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
    except pa.ArrowException as exc:
        yield BadRecord(INVALID_FILE, source, 0, data[:RAW_KEEP], f"not a readable Parquet file: {exc}")
        return
    top, *nested = field.split(".")
    if top not in parquet.schema_arrow.names:
        columns = ", ".join(parquet.schema_arrow.names)
        yield BadRecord(INVALID_FILE, source, 0, b"",
                        f"no column {top!r} in the Parquet file (columns: {columns})")
        return
    row = 0
    try:
        for batch in parquet.iter_batches(columns=[top]):
            for text in _string_column(batch.column(0), nested, field).to_pylist():
                row += 1
                if text is None:
                    yield BadRecord(MISSING_FIELD, source, row, b"", f"row {row}: {field!r} is null")
                else:
                    yield _checked(text, source, row, f"row {row}", max_bytes)
    except (pa.ArrowException, TypeError) as exc:
        yield BadRecord(INVALID_FILE, source, row + 1, b"", f"row {row + 1}: cannot read {field!r}: {exc}")


def _string_column(column: pa.Array, nested: list[str], field: str) -> pa.Array:
    for name in nested:
        column = pc.struct_field(column, name)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
            or pa.types.is_string_view(column.type)):
        raise TypeError(f"column {field!r} has type {column.type}, not string")
    return column
