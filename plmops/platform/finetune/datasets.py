"""Benchmark files as plain records, with every dropped or repaired record counted and placed.

    examples, report = read_split(spec, "train", data_root)   # spec: a TaskSpec (taskspec.py)
    print(report.summary())  # cmrc2018/train: 1807 examples; skipped empty_question 2 (...); noted ...

Real benchmark files have defects (CMRC answers whose offset misses the text, OCNLI rows without a
majority label, Weibo entities that open with I-). A reader that crashes on one bad record, or drops
records silently, makes results irreproducible; so each rule below either repairs a record and notes
it, or skips it and counts it with the first few places (file:line, or the JSON path):

- MRC: an `answer_start` that does not point at the answer text is moved to the nearest occurrence of
  the text (noted answer_relocated). An answer the context does not contain is dropped from a train
  split (skipped answer_not_found) and kept, with answer_start -1, in dev/test (noted
  answer_not_in_context), since evaluation compares text and every human reference counts. A question
  left without answers is skipped. Empty context or question, repeated question ids: skipped.
- Classification: a label outside the declared set is skipped (label_not_in_set), one the task excludes
  (OCNLI's "-") is skipped as excluded_label; missing or empty text fields are skipped.
- NER: a tag that is not O, B-T or I-T for a declared type T skips its sentence (bad_tag); an I-T that
  does not continue a T entity starts one, as conlleval reads it (noted bio_repaired).
- Any line that is not valid JSON or UTF-8 is skipped naming file:line. A missing file, or a whole-file
  JSON document (SQuAD, JSON array) that does not parse, is a DataError: there is nothing to skip to.

A split's `select` is applied to records before they are checked, so the counts describe only the
records the split takes. Selection by fraction ranks the distinct input texts (MRC: passages) by a
seeded hash and takes its share of them, so two parts of one file never share a passage or an
identical input, and their sizes are exact.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plmops.platform.finetune.taskspec import SPLITS, LabelFile, LabelRange, Select, Source, TaskSpec

DEFAULT_DATA_ROOT = Path("../shared/data")  # as `plmops demo --shared-data`: relative to the repository
MAX_PLACES = 5
LIMIT_SEED = 0

# Skipped: the record (or, for answer_*, the answer) is not in the output.
MALFORMED_JSON = "malformed_json"
UNDECODABLE = "undecodable"
MALFORMED_RECORD = "malformed_record"
MALFORMED_LINE = "malformed_line"
MISSING_FIELD = "missing_field"
EMPTY_TEXT = "empty_text"
EMPTY_CONTEXT = "empty_context"
EMPTY_QUESTION = "empty_question"
EMPTY_ANSWER = "empty_answer"
ANSWER_NOT_FOUND = "answer_not_found"
QUESTION_WITHOUT_ANSWER = "question_without_answer"
DUPLICATE_ID = "duplicate_id"
LABEL_NOT_IN_SET = "label_not_in_set"
EXCLUDED_LABEL = "excluded_label"
BAD_TAG = "bad_tag"
BAD_SPAN = "bad_span"
LENGTH_MISMATCH = "length_mismatch"
# Noted: the record is in the output, changed or flagged as said.
ANSWER_RELOCATED = "answer_relocated"
ANSWER_NOT_IN_CONTEXT = "answer_not_in_context"
BIO_REPAIRED = "bio_repaired"


class DataError(ValueError):
    """A data file cannot be read at all; the message names the file (and line where there is one)."""


@dataclass(frozen=True)
class MRCExample:
    qid: str
    context: str
    question: str
    answers: list[str]
    answer_starts: list[int]  # character offsets into context; -1: not in the context (dev/test only)
    title: str


@dataclass(frozen=True)
class ClassificationExample:
    uid: str
    text_a: str
    text_b: str | None
    label: str


@dataclass(frozen=True)
class TaggedSentence:
    uid: str
    tokens: list[str]
    tags: list[str]  # BIO: O, B-T, I-T


Example = MRCExample | ClassificationExample | TaggedSentence


@dataclass
class SkipReport:
    """What reading one split dropped (`skipped`) or kept but changed (`noted`), by reason."""

    where: str
    available: int = 0  # examples before the split's limit
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    noted: Counter[str] = field(default_factory=Counter)
    places: dict[str, list[str]] = field(default_factory=dict)  # reason -> first MAX_PLACES places

    def skip(self, reason: str, place: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        self._place(reason, place, detail)

    def note(self, reason: str, place: str, detail: str = "") -> None:
        self.noted[reason] += 1
        self._place(reason, place, detail)

    def _place(self, reason: str, place: str, detail: str) -> None:
        seen = self.places.setdefault(reason, [])
        if len(seen) < MAX_PLACES:
            seen.append(f"{place} ({detail})" if detail else place)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        kept = f"{self.kept} examples" + (
            f" (a sample of {self.available})" if self.kept < self.available else ""
        )
        parts = [f"{self.where}: {kept}"]
        for title, counts in (("skipped", self.skipped), ("noted", self.noted)):
            if counts:
                items = ", ".join(f"{r} {n} (first: {self.places[r][0]})" for r, n in sorted(counts.items()))
                parts.append(f"{title} {items}")
        return "; ".join(parts)


def bio_tags(entity_types: list[str]) -> list[str]:
    """The tag set of a NER task: O, then B-T and I-T for each declared type, in declaration order."""
    return ["O", *(f"{prefix}-{t}" for t in entity_types for prefix in ("B", "I"))]


def resolve_labels(spec: TaskSpec, data_root: str | Path = DEFAULT_DATA_ROOT) -> list[str]:
    """The task's labels in declaration order (entity types for NER, nothing for MRC)."""
    labels = spec.labels
    if labels is None or isinstance(labels, list):
        return list(labels or [])
    if isinstance(labels, LabelRange):
        return [str(i) for i in range(labels.first, labels.last + 1)]
    return _label_file(labels, Path(data_root))


def _label_file(labels: LabelFile, root: Path) -> list[str]:
    found: list[str] = []
    for item in _lines(_read_bytes(root / labels.from_file, labels.from_file), labels.from_file):
        if isinstance(item, _Bad):
            raise DataError(f"{item.place}: {item.detail}")
        number, text = item
        if not text.strip():
            continue
        found.append(text.strip() if labels.field is None else _label_field(text, labels, number))
    repeated = sorted({x for x in found if found.count(x) > 1})
    if not found or repeated:
        raise DataError(f"{labels.from_file}: " + (f"labels repeat: {repeated}" if repeated else "no labels"))
    return found


def _label_field(text: str, labels: LabelFile, number: int) -> str:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{labels.from_file}:{number}: not valid JSON: {exc.msg}") from exc
    if not isinstance(value, dict) or labels.field not in value:
        raise DataError(f"{labels.from_file}:{number}: no field {labels.field!r}")
    return str(value[labels.field])


def read_split(
    spec: TaskSpec, split: str, data_root: str | Path = DEFAULT_DATA_ROOT
) -> tuple[list[Example], SkipReport]:
    """The examples of one split of a task (its sources, selected, checked, then limited) and the report.

    A zero-shot task has no train or dev split of its own: read those of `training_task(spec)`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    sources = getattr(spec.splits, split)
    if sources is None:
        hint = (
            f"; it is zero-shot: read {spec.zero_shot_from}'s (training_task)" if spec.zero_shot_from else ""
        )
        raise ValueError(f"task {spec.name} has no {split} split{hint}")
    report = SkipReport(f"{spec.name}/{split}")
    labels = resolve_labels(spec, data_root)
    context = _Context(spec, split == "train", labels, set(labels), report, set())
    examples = [ex for source in sources for ex in _read_source(context, source, Path(data_root))]
    report.available = len(examples)
    examples = _sample(examples, getattr(spec.limit, split))
    report.kept = len(examples)
    return examples, report


def _sample(examples: list[Example], limit: int | None) -> list[Example]:
    """At most `limit` examples, a seeded sample kept in file order: files are often sorted by label,
    so the first `limit` would not be a fair subset."""
    if limit is None or len(examples) <= limit:
        return examples
    ranked = sorted(range(len(examples)), key=lambda i: _digest(LIMIT_SEED, str(i)))
    return [examples[i] for i in sorted(ranked[:limit])]


@dataclass
class _Context:
    spec: TaskSpec
    train: bool
    labels: list[str]
    label_set: set[str]
    report: SkipReport
    seen_ids: set[str]


@dataclass(frozen=True)
class _Record:
    place: str
    value: Any


@dataclass(frozen=True)
class _Bad:
    place: str
    reason: str
    raw: str
    detail: str = ""


Item = _Record | _Bad


def _read_source(ctx: _Context, source: Source, root: Path) -> list[Example]:
    fmt = source.format or ""
    fields = ctx.spec.field_map(fmt)
    items = list(_READERS[fmt](root, source, ctx))
    if source.select is not None:
        chosen = _selection(source.select, [_group_key(item, fmt, fields) for item in items])
        items = [item for item, keep in zip(items, chosen) if keep]
    convert = _CONVERTERS[fmt if ctx.spec.type in ("mrc", "ner") else "classification"]
    out: list[Example] = []
    for item in items:
        if isinstance(item, _Bad):
            ctx.report.skip(item.reason, item.place, item.detail)
        else:
            out.extend(convert(ctx, fields, item))
    return out


def _selection(select: Select, keys: list[str]) -> list[bool]:
    """Which records (given their group keys, in file order) the select takes.

    Distinct keys are ranked by a seeded hash, not by Python's RNG, so the split is the same on every
    Python version; the band's edges are rounded the same way for every part, so parts tile exactly.
    """
    if select.indices is not None:
        start, stop = select.indices
        return [start <= i < stop for i in range(len(keys))]
    low, high = select.band() or (0.0, 1.0)
    ranked = sorted(set(keys), key=lambda key: (_digest(select.seed, key), key))
    taken = set(ranked[round(low * len(ranked)) : round(high * len(ranked))])
    return [key in taken for key in keys]


def _digest(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()


def _group_key(item: Item, fmt: str, fields: dict[str, str | int]) -> str:
    """The input text a record is selected by: identical inputs, and an MRC passage's questions, go
    together. A bad record is selected by its raw text, so exactly one part counts it."""
    if isinstance(item, _Bad):
        return item.raw
    value = item.value
    if fmt == "squad":
        parts: list[Any] = [value[1].get("context")]
    elif fmt in ("bio_columns", "bio_pairs_files"):
        parts = [value.tokens]
    else:
        roles = (
            ("context",) if "context" in fields else ("text",) if "text" in fields else ("text_a", "text_b")
        )
        parts = [_field(value, fields[r]) if r in fields else None for r in roles]
    return json.dumps(parts, ensure_ascii=False, default=str)


# ---------------------------------------------------------------------------------------------
# Files into records.


def _read_bytes(path: Path, shown: str) -> bytes:
    """A file's bytes (gunzipped for .gz); `shown` is the path as the task declares it."""
    if not path.is_file():
        raise DataError(f"{shown}: no such file ({path})")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{shown}: cannot read: {exc}") from exc


def _lines(data: bytes, shown: str) -> Iterator[tuple[int, str] | _Bad]:
    """(line number, text) without line ends; a line that is not UTF-8 becomes a _Bad."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _Bad(f"{shown}:{number}", UNDECODABLE, raw.hex(), f"invalid UTF-8 at byte {exc.start}")


def _whole_json(path: Path, shown: str) -> Any:
    try:
        return json.loads(_read_bytes(path, shown).decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{shown}: not UTF-8 (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{shown}:{exc.lineno}: not valid JSON (column {exc.colno}): {exc.msg}") from exc


def _json_lines(root: Path, source: Source, ctx: _Context) -> Iterator[Item]:
    for item in _lines(_read_bytes(root / source.file, source.file), source.file):
        if isinstance(item, _Bad):
            yield item
            continue
        number, text = item
        if not text.strip():
            continue
        place = f"{source.file}:{number}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield _Bad(place, MALFORMED_JSON, text, f"column {exc.colno}: {exc.msg}")
            continue
        yield (
            _Record(place, value)
            if isinstance(value, dict)
            else _Bad(place, MALFORMED_RECORD, text, "not an object")
        )


def _json_array(root: Path, source: Source, ctx: _Context) -> Iterator[Item]:
    data = _whole_json(root / source.file, source.file)
    if not isinstance(data, list):
        raise DataError(f"{source.file}: expected a JSON array of records, got {type(data).__name__}")
    for i, value in enumerate(data):
        place = f"{source.file}:[{i}]"
        yield (
            _Record(place, value)
            if isinstance(value, dict)
            else _Bad(place, MALFORMED_RECORD, str(value), "not an object")
        )


def _squad(root: Path, source: Source, ctx: _Context) -> Iterator[Item]:
    """One record per paragraph: (title, paragraph)."""
    data = _whole_json(root / source.file, source.file)
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise DataError(f"{source.file}: not SQuAD: expected {{'data': [articles]}}")
    for i, article in enumerate(articles):
        place = f"{source.file}:data[{i}]"
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            yield _Bad(place, MALFORMED_RECORD, json.dumps(article, ensure_ascii=False), "no paragraphs list")
            continue
        title = str(article.get("title") or "")
        for j, paragraph in enumerate(paragraphs):
            where = f"{place}.paragraphs[{j}]"
            if isinstance(paragraph, dict):
                yield _Record(where, (title, paragraph))
            else:
                yield _Bad(
                    where, MALFORMED_RECORD, json.dumps(paragraph, ensure_ascii=False), "not an object"
                )


def _tsv(root: Path, source: Source, ctx: _Context) -> Iterator[Item]:
    for item in _lines(_read_bytes(root / source.file, source.file), source.file):
        if isinstance(item, _Bad):
            yield item
        elif item[1].strip():
            yield _Record(f"{source.file}:{item[0]}", item[1].split("\t"))


@dataclass(frozen=True)
class _Tagged:
    tokens: list[str]
    tags: list[str]
    places: list[str]  # where each tag was read


_SEGMENT_POSITION = re.compile(r"^(.+?)\d+$")


def _bio_columns(root: Path, source: Source, ctx: _Context) -> Iterator[Item]:
    """`token tag` per line (tab or spaces), a blank line after each sentence."""
    strip = ctx.spec.reader.strip_segment_position
    sentence: list[tuple[str, str]] = []  # (place, line)
    for item in _lines(_read_bytes(root / source.file, source.file), source.file):
        if isinstance(item, _Bad):
            yield item
        elif item[1].strip():
            sentence.append((f"{source.file}:{item[0]}", item[1]))
        elif sentence:
            yield _column_sentence(sentence, strip)
            sentence = []
    if sentence:
        yield _column_sentence(sentence, strip)


def _column_sentence(lines: list[tuple[str, str]], strip: bool) -> Item:
    tokens, tags = [], []
    for place, line in lines:
        parts = line.split()
        token = _SEGMENT_POSITION.match(parts[0]) if strip and len(parts) == 2 else None
        if len(parts) != 2 or (strip and token is None):
            detail = "expected `token tag`" if len(parts) != 2 else "token has no word-position number"
            return _Bad(place, MALFORMED_LINE, "\n".join(text for _, text in lines), f"{detail}: {line!r}")
        tokens.append(token.group(1) if token else parts[0])
        tags.append(parts[1])
    return _Record(lines[0][0], _Tagged(tokens, tags, [place for place, _ in lines]))


def _bio_pairs(root: Path, source: Source, ctx: _Context) -> Iterator[Item]:
    """Line n of `file` (space-separated tokens) is tagged by line n of `tags_file`."""
    tags_file = source.tags_file or ""
    token_lines = _content_lines(root / source.file, source.file)
    tag_lines = _content_lines(root / tags_file, tags_file)
    for n in range(max(len(token_lines), len(tag_lines))):
        place = f"{source.file}:{n + 1}"
        tokens_item = token_lines[n] if n < len(token_lines) else None
        tags_item = tag_lines[n] if n < len(tag_lines) else None
        bad = next((x for x in (tokens_item, tags_item) if isinstance(x, _Bad)), None)
        if bad is not None:
            yield bad
        elif tokens_item is None or tags_item is None:
            missing = tags_file if tags_item is None else source.file
            yield _Bad(place, LENGTH_MISMATCH, str(tokens_item or tags_item), f"no line {n + 1} in {missing}")
        else:
            yield _token_line(place, tokens_item[1], tags_item[1])


def _content_lines(path: Path, shown: str) -> list[tuple[int, str] | _Bad]:
    """The file's lines without the blank ones a final newline leaves."""
    lines = list(_lines(_read_bytes(path, shown), shown))
    while lines and not isinstance(lines[-1], _Bad) and not lines[-1][1].strip():
        lines.pop()
    return lines


def _token_line(place: str, token_text: str, tag_text: str) -> Item:
    tokens, tags = token_text.split(), tag_text.split()
    if not tokens:
        return _Bad(place, EMPTY_TEXT, token_text)
    if len(tokens) != len(tags):
        return _Bad(place, LENGTH_MISMATCH, token_text, f"{len(tokens)} tokens, {len(tags)} tags")
    return _Record(place, _Tagged(tokens, tags, [place] * len(tags)))


_READERS: dict[str, Callable[[Path, Source, _Context], Iterator[Item]]] = {
    "squad": _squad,
    "jsonl": _json_lines,
    "spans_jsonl": _json_lines,
    "json_array": _json_array,
    "tsv": _tsv,
    "bio_columns": _bio_columns,
    "bio_pairs_files": _bio_pairs,
}


# ---------------------------------------------------------------------------------------------
# Records into examples.

_ABSENT = object()


def _field(value: Any, key: str | int) -> Any:
    if isinstance(value, dict):
        return value.get(key, _ABSENT)
    return value[key] if isinstance(key, int) and 0 <= key < len(value) else _ABSENT


def _as_text(raw: Any, separator: str) -> str | None:
    """Text as read: strings, numbers (labels like 100), lists of strings joined (CSL keywords)."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return separator.join(raw)
    return None


def _text_field(ctx: _Context, fields: dict[str, str | int], role: str, value: Any, place: str) -> str | None:
    """The role's text, or None after counting why it is unusable."""
    key = fields[role]
    text = _as_text(_field(value, key), ctx.spec.reader.list_separator)
    if text is None:
        ctx.report.skip(MISSING_FIELD, place, f"{role} ({key!r}) missing or not text")
    elif not text.strip():
        ctx.report.skip(EMPTY_TEXT, place, role)
        return None
    return text


def _uid(value: Any, fields: dict[str, str | int], place: str) -> str:
    found = _field(value, fields["id"]) if "id" in fields else _ABSENT
    return place if found is _ABSENT or found is None else str(found)


def _classification(ctx: _Context, fields: dict[str, str | int], record: _Record) -> list[Example]:
    value, place = record.value, record.place
    text_a = _text_field(ctx, fields, "text_a", value, place)
    if text_a is None:
        return []
    text_b = None
    if ctx.spec.type == "pair_classification":
        text_b = _text_field(ctx, fields, "text_b", value, place)
        if text_b is None:
            return []
    label = _label(ctx, _as_text(_field(value, fields["label"]), ","), fields["label"], place)
    return [] if label is None else [ClassificationExample(_uid(value, fields, place), text_a, text_b, label)]


def _label(ctx: _Context, raw: str | None, key: str | int, place: str) -> str | None:
    if raw is None:
        ctx.report.skip(MISSING_FIELD, place, f"label ({key!r}) missing or not text")
        return None
    if raw in ctx.spec.reader.exclude_labels:
        ctx.report.skip(EXCLUDED_LABEL, place, repr(raw))
        return None
    label = raw
    if ctx.spec.reader.label_index:
        label = ctx.labels[int(raw)] if raw.isdigit() and int(raw) < len(ctx.labels) else None
    if label is None or label not in ctx.label_set:
        ctx.report.skip(LABEL_NOT_IN_SET, place, repr(raw))
        return None
    return label


def _squad_paragraph(ctx: _Context, fields: dict[str, str | int], record: _Record) -> list[Example]:
    title, paragraph = record.value
    qas = paragraph.get("qas")
    if not isinstance(qas, list):
        ctx.report.skip(MALFORMED_RECORD, record.place, "no qas list")
        return []
    out: list[Example] = []
    for k, qa in enumerate(qas):
        place = f"{record.place}.qas[{k}]"
        answers = qa.get("answers") if isinstance(qa, dict) else None
        if not isinstance(answers, list):
            ctx.report.skip(MISSING_FIELD, place, "answers")
            continue
        texts = [a.get("text") if isinstance(a, dict) else None for a in answers]
        starts = [a.get("answer_start") if isinstance(a, dict) else None for a in answers]
        example = _mrc_example(
            ctx, place, qa.get("id"), paragraph.get("context"), qa.get("question"), texts, starts, title
        )
        out += [example] if example else []
    return out


def _mrc_line(ctx: _Context, fields: dict[str, str | int], record: _Record) -> list[Example]:
    """One question per JSON line; `answer` and `answer_start` may be single values or lists."""
    value, place = record.value, record.place
    answer = _field(value, fields["answer"])
    if answer is _ABSENT:
        ctx.report.skip(MISSING_FIELD, place, f"answer ({fields['answer']!r})")
        return []
    texts = answer if isinstance(answer, list) else [answer]
    start = _field(value, fields["answer_start"])
    starts = start if isinstance(start, list) and len(start) == len(texts) else [start] * len(texts)
    title = _field(value, fields["title"])
    example = _mrc_example(
        ctx,
        place,
        _field(value, fields["id"]),
        _field(value, fields["context"]),
        _field(value, fields["question"]),
        texts,
        starts,
        "" if title is _ABSENT or title is None else str(title),
    )
    return [example] if example else []


def _mrc_example(
    ctx: _Context,
    place: str,
    qid: Any,
    context: Any,
    question: Any,
    texts: list[Any],
    starts: list[Any],
    title: str,
) -> MRCExample | None:
    report = ctx.report
    for name, text, empty in (("context", context, EMPTY_CONTEXT), ("question", question, EMPTY_QUESTION)):
        if not isinstance(text, str):
            report.skip(MISSING_FIELD, place, name)
            return None
        if not text.strip():
            report.skip(empty, place)
            return None
    answers, offsets = [], []
    for text, start in zip(texts, starts):
        if not isinstance(text, str) or not text.strip():
            report.skip(EMPTY_ANSWER, place)
            continue
        given = start if isinstance(start, int) and not isinstance(start, bool) else -1
        found = _locate(context, text, given)
        if found != given and found >= 0:
            report.note(ANSWER_RELOCATED, place, f"{text!r} from {given} to {found}")
        if found < 0 and ctx.train:
            report.skip(ANSWER_NOT_FOUND, place, repr(text))
            continue
        if found < 0:
            report.note(ANSWER_NOT_IN_CONTEXT, place, repr(text))
        answers.append(text)
        offsets.append(found)
    if not answers:
        report.skip(QUESTION_WITHOUT_ANSWER, place)
        return None
    qid = place if qid is None or qid is _ABSENT else str(qid)
    if qid in ctx.seen_ids:
        report.skip(DUPLICATE_ID, place, qid)
        return None
    ctx.seen_ids.add(qid)
    return MRCExample(qid, context, question, answers, offsets, title)


def _locate(context: str, text: str, start: int) -> int:
    """`start` if the text is there, else the occurrence nearest to it, else -1."""
    if start >= 0 and context.startswith(text, start):
        return start
    found, at = [], context.find(text)
    while at >= 0:
        found.append(at)
        at = context.find(text, at + 1)
    return min(found, key=lambda p: abs(p - max(start, 0))) if found else -1


def _tagged(ctx: _Context, fields: dict[str, str | int], record: _Record) -> list[Example]:
    sentence: _Tagged = record.value
    tags = _checked_bio(ctx, sentence.tags, sentence.places)
    return [] if tags is None else [TaggedSentence(record.place, sentence.tokens, tags)]


def _checked_bio(ctx: _Context, tags: list[str], places: list[str]) -> list[str] | None:
    """The tags with each I-T that opens an entity made B-T; None (counted) if a tag is not in the set."""
    allowed = set(bio_tags(ctx.labels))
    out: list[str] = []
    for tag, place in zip(tags, places):
        if tag not in allowed:
            ctx.report.skip(BAD_TAG, place, repr(tag))
            return None
        if tag.startswith("I-") and (not out or out[-1][2:] != tag[2:]):
            ctx.report.note(BIO_REPAIRED, place, f"{tag} opens an entity")
            tag = "B-" + tag[2:]
        out.append(tag)
    return out


def _spans(ctx: _Context, fields: dict[str, str | int], record: _Record) -> list[Example]:
    """Text with character spans [start, end, TYPE]: tokens are split at spaces, punctuation and span
    edges (a word-piece tokenizer splits there too), so every entity is a whole run of tokens."""
    value, place = record.value, record.place
    text = _text_field(ctx, fields, "text", value, place)
    raw_spans = _field(value, fields["spans"])
    if text is None:
        return []
    if not isinstance(raw_spans, list):
        ctx.report.skip(MISSING_FIELD, place, f"spans ({fields['spans']!r}) missing or not a list")
        return []
    spans = _checked_spans(ctx, text, raw_spans, place)
    if spans is None:
        return []
    tokens = _split_tokens(text, {edge for s, e, _ in spans for edge in (s, e)})
    tags = ["O"] * len(tokens)
    for start, end, kind in spans:
        inside = [i for i, (s, _) in enumerate(tokens) if start <= s < end]
        for n, i in enumerate(inside):
            tags[i] = ("B-" if n == 0 else "I-") + kind
    return [TaggedSentence(place, [text[s:e] for s, e in tokens], tags)]


def _checked_spans(ctx: _Context, text: str, raw: list[Any], place: str) -> list[tuple[int, int, str]] | None:
    spans: list[tuple[int, int, str]] = []
    for span in raw:
        ok = isinstance(span, list) and len(span) == 3 and all(type(x) is int for x in span[:2])
        if not ok or not 0 <= span[0] < span[1] <= len(text) or not text[span[0] : span[1]].strip():
            ctx.report.skip(BAD_SPAN, place, repr(span))
            return None
        if span[2] not in ctx.label_set:
            ctx.report.skip(BAD_TAG, place, f"entity type {span[2]!r}")
            return None
        spans.append((span[0], span[1], span[2]))
    spans.sort()
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        if start < end:
            ctx.report.skip(BAD_SPAN, place, f"spans overlap at {start}")
            return None
    return spans


def _split_tokens(text: str, cuts: set[int]) -> list[tuple[int, int]]:
    """(start, end) of each token: runs of non-space characters, cut at `cuts`, punctuation alone."""
    tokens: list[tuple[int, int]] = []
    start: int | None = None
    for i, ch in enumerate(text):
        if start is not None and (i in cuts or ch.isspace() or _is_punctuation(ch)):
            tokens.append((start, i))
            start = None
        if _is_punctuation(ch):
            tokens.append((i, i + 1))
        elif not ch.isspace() and start is None:
            start = i
    if start is not None:
        tokens.append((start, len(text)))
    return tokens


def _is_punctuation(ch: str) -> bool:
    """Unicode punctuation, and the ASCII symbols BERT's basic tokenizer also splits off ($, +, <...)."""
    return unicodedata.category(ch).startswith("P") or (
        ch.isascii() and not ch.isalnum() and not ch.isspace()
    )


_CONVERTERS: dict[str, Callable[[_Context, dict[str, str | int], _Record], list[Example]]] = {
    "squad": _squad_paragraph,
    "jsonl": _mrc_line,
    "classification": _classification,
    "bio_columns": _tagged,
    "bio_pairs_files": _tagged,
    "spans_jsonl": _spans,
}
