"""Corpus building blocks: the document batch, the stages over it, shard planning and the manifest.

Each stage is a pure function over a `DocBatch` (columns as lists), so the Prefect tasks that call them
stay thin and the same code runs in tests without any orchestration. Counts of dropped documents are
returned beside the batch, keyed "<stage>.<reason>", so nothing disappears uncounted.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plmops.platform.text.config import IngestConfig
from plmops.platform.text.dedup import MinHasher, exact_duplicates, near_duplicates, text_sha1
from plmops.platform.text.langid import identify_languages
from plmops.platform.text.normalize import normalize_text
from plmops.platform.text.readers import BadRecord, Record
from plmops.platform.text.segment import SPANS_TYPE
from plmops.platform.text.sentences import split_sentences

OFFSETS = SPANS_TYPE  # list<[start, end] int32>: character offsets, half-open

CORPUS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("text", pa.string()),
        ("lang", pa.string()),
        ("lang_score", pa.float32()),
        ("source", pa.string()),
        ("source_line", pa.int64()),
        ("sentence_offsets", OFFSETS),
        ("word_offsets", OFFSETS),
        ("n_chars", pa.int32()),
        ("sha1", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("reason", pa.string()),
        ("source", pa.string()),
        ("line", pa.int64()),
        ("detail", pa.string()),
        ("raw", pa.binary()),
    ]
)


@dataclass
class DocBatch:
    """Documents as parallel columns; optional columns fill in as stages run."""

    doc_id: list[str]
    text: list[str]
    source: list[str]
    source_line: list[int]
    lang: list[str] = field(default_factory=list)
    lang_score: list[float] = field(default_factory=list)
    sentence_offsets: list[list[tuple[int, int]]] = field(default_factory=list)  # pairs: tuples or lists
    sha1: list[str] = field(default_factory=list)
    signature: np.ndarray | None = None  # (n, num_perm) uint32 MinHash signatures

    def __len__(self) -> int:
        return len(self.doc_id)

    def take(self, keep: np.ndarray) -> DocBatch:
        """The rows where `keep` is True, every filled column alike."""
        index = np.flatnonzero(keep)
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "signature":
                out[f.name] = None if value is None else value[index]
            else:
                out[f.name] = [value[i] for i in index] if value else []
        return DocBatch(**out)


def doc_id(source_digest: str, ordinal: int) -> str:
    """Stable id: the n-th record of the same bytes has the same id wherever the file lives.

    The record's number, not its line: one JSON line may hold several texts (CLUE sentence pairs).
    """
    return f"{source_digest[:12]}-{ordinal:09d}"


def version_id(input_digests: Sequence[tuple[str, str]], config: IngestConfig) -> str:
    """Hash of the inputs' content and the config: the same inputs and config give the same version.

    Source names are left out so that moving a file (or re-uploading it to S3) keeps the version.
    """
    payload = json.dumps(
        {"inputs": sorted(d for _, d in input_digests), "config": config.identity()}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --- stages -------------------------------------------------------------------------------------


def normalize_records(
    records: Sequence[Record], ordinals: Sequence[int], source_digests: dict[str, str], config: IngestConfig
) -> tuple[DocBatch, Counter]:
    """Stage 1: normalise text; a record that normalises to nothing is dropped and counted."""
    batch = DocBatch([], [], [], [])
    drops: Counter = Counter()
    for rec, ordinal in zip(records, ordinals):
        text = normalize_text(rec.text, to_simplified=config.to_simplified)
        if not text:
            drops["normalize.empty_after_normalize"] += 1
            continue
        batch.doc_id.append(doc_id(source_digests[rec.source], ordinal))
        batch.text.append(text)
        batch.source.append(rec.source)
        batch.source_line.append(rec.line)
    return batch, drops


def identify(batch: DocBatch, config: IngestConfig) -> tuple[DocBatch, Counter]:
    """Stage 2: language and score per document; optionally keep only configured languages."""
    results = identify_languages(batch.text)
    batch = replace(batch, lang=[r[0] for r in results], lang_score=[float(r[1]) for r in results])
    if config.languages is None:
        return batch, Counter()
    wanted = set(config.languages)
    keep = np.array([lang in wanted for lang in batch.lang], dtype=bool)
    return batch.take(keep), Counter({"langid.unwanted_language": int((~keep).sum())})


def split_and_filter(batch: DocBatch, config: IngestConfig) -> tuple[DocBatch, Counter]:
    """Stage 3: document length filters (counted), then sentence spans for what remains."""
    n_chars = np.fromiter((len(t) for t in batch.text), dtype=np.int64, count=len(batch))
    too_short = n_chars < config.min_chars
    too_long = n_chars > config.max_chars
    drops = Counter({"filter.too_short": int(too_short.sum()), "filter.too_long": int(too_long.sum())})
    batch = batch.take(~(too_short | too_long))
    return replace(batch, sentence_offsets=[split_sentences(t) for t in batch.text]), +drops


def fingerprint(batch: DocBatch, hasher: MinHasher) -> DocBatch:
    """Stage 4a: exact hash and MinHash signature per document, the inputs of deduplication."""
    return replace(batch, sha1=[text_sha1(t) for t in batch.text], signature=hasher.signatures(batch.text))


def deduplicate(
    sha1: Sequence[str],
    signatures: np.ndarray,
    config: IngestConfig,
    prior_sha1: set[str] | None = None,
    prior_signatures: np.ndarray | None = None,
) -> tuple[np.ndarray, Counter]:
    """Stage 4b: keep-mask over all documents of a version, first occurrence wins.

    Exact duplicates are found first; near-duplicate search then runs only on the exact survivors.
    """
    keep = np.ones(len(sha1), dtype=bool)
    drops: Counter = Counter()
    if config.dedup_exact:
        dup = exact_duplicates(sha1, prior=prior_sha1 if config.dedup_against_previous else None)
        drops["dedup.exact"] = int((dup >= 0).sum())
        drops["dedup.exact_previous_version"] = int((dup == -2).sum())
        keep &= dup == -1
    if config.dedup_near and keep.any():
        survivors = np.flatnonzero(keep)
        prior = prior_signatures if config.dedup_against_previous else None
        dup = near_duplicates(signatures[survivors], config.near_threshold, prior=prior)
        drops["dedup.near"] = int((dup >= 0).sum())
        drops["dedup.near_previous_version"] = int((dup == -2).sum())
        keep[survivors[dup != -1]] = False
    return keep, +drops


# --- tables -------------------------------------------------------------------------------------


def corpus_table(staged: pa.Table, word_offsets: pa.Array) -> pa.Table:
    """Staged rows plus their segmentation (stage 5) in the published schema: Arrow in, Arrow out."""
    columns = {name: staged.column(name) for name in staged.column_names}
    columns["word_offsets"] = word_offsets
    columns["n_chars"] = pc.utf8_length(staged.column("text")).cast(pa.int32())
    return pa.Table.from_arrays([columns[f.name] for f in CORPUS_SCHEMA], schema=CORPUS_SCHEMA)


def staged_schema(num_perm: int) -> pa.Schema:
    """Fingerprinted documents before dedup and segmentation: the corpus schema without the columns
    that segmentation adds, plus the MinHash signature (typed, so an empty chunk stages too)."""
    kept = [f for f in CORPUS_SCHEMA if f.name not in ("word_offsets", "n_chars")]
    return pa.schema([*kept, ("signature", pa.list_(pa.uint32(), num_perm))])


def staged_table(batch: DocBatch, num_perm: int) -> pa.Table:
    """A fingerprinted batch: the unit a resumed run skips."""
    signature = batch.signature if batch.signature is not None else np.zeros((len(batch), num_perm), np.uint32)
    flat = pa.array(signature.reshape(-1).astype(np.uint32), type=pa.uint32())
    columns = {
        "doc_id": batch.doc_id,
        "text": batch.text,
        "lang": batch.lang,
        "lang_score": batch.lang_score,
        "source": batch.source,
        "source_line": batch.source_line,
        "sentence_offsets": batch.sentence_offsets,
        "sha1": batch.sha1,
    }
    schema = staged_schema(num_perm)
    arrays = [pa.array(columns[f.name], f.type) for f in schema if f.name != "signature"]
    arrays.append(pa.FixedSizeListArray.from_arrays(flat, num_perm))
    return pa.Table.from_arrays(arrays, schema=schema)


def quarantine_table(bad: Sequence[BadRecord]) -> pa.Table:
    """Bad input kept for inspection: reason, file, line, message and the raw bytes."""
    return pa.table(
        {
            "reason": [b.reason for b in bad],
            "source": [b.source for b in bad],
            "line": [b.line for b in bad],
            "detail": [b.detail for b in bad],
            "raw": [b.raw for b in bad],
        },
        schema=QUARANTINE_SCHEMA,
    )


def dedup_index_table(sha1: Sequence[str], signatures: np.ndarray) -> pa.Table:
    """What later versions of the same corpus deduplicate against."""
    flat = pa.array(signatures.reshape(-1).astype(np.uint32), type=pa.uint32())
    width = signatures.shape[1] if signatures.ndim == 2 else 1
    return pa.table({"sha1": list(sha1), "signature": pa.FixedSizeListArray.from_arrays(flat, width)})


class ShardPacker:
    """Groups corpus rows by language into shards of about `target_bytes` (in-memory Arrow size).

    Rows arrive in a deterministic order (chunk by chunk), so the shards and their names are the
    same on every run of the same version: a resumed run rewrites identical files.
    """

    def __init__(self, target_bytes: int):
        self.target_bytes = target_bytes
        self._pending: dict[str, list[pa.Table]] = {}
        self._sizes: Counter = Counter()
        self._next_index: Counter = Counter()

    def add(self, table: pa.Table) -> list[tuple[str, pa.Table]]:
        """Add rows; returns (key, shard) pairs that reached the target size."""
        ready = []
        for lang in sorted(pc.unique(table.column("lang")).to_pylist()):
            part = table.filter(pc.equal(table.column("lang"), lang))
            self._pending.setdefault(lang, []).append(part)
            self._sizes[lang] += part.nbytes
            if self._sizes[lang] >= self.target_bytes:
                ready.append(self._flush(lang))
        return ready

    def finish(self) -> list[tuple[str, pa.Table]]:
        """The remaining partial shards."""
        return [self._flush(lang) for lang in sorted(self._pending) if self._pending[lang]]

    def _flush(self, lang: str) -> tuple[str, pa.Table]:
        table = pa.concat_tables(self._pending.pop(lang))
        self._sizes[lang] = 0
        index = self._next_index[lang]
        self._next_index[lang] += 1
        return f"data/lang={lang}/part-{index:05d}.parquet", table
