"""Prefect tasks of corpus ingestion: each wraps one pure stage of `plmops.platform.text`.

Layout of a version under the corpora root (local folder or s3:// prefix):

    <name>/<version>/_staging/chunk-00000.parquet     fingerprinted documents of one input chunk
    <name>/<version>/_staging/bad-00000.parquet       quarantined records of that chunk
    <name>/<version>/_staging/counts-00000.json       its counts per stage and reason
    <name>/<version>/data/lang=<lang>/part-00000.parquet
    <name>/<version>/quarantine/part-00000.parquet
    <name>/<version>/dedup_index.parquet              sha1 + MinHash of kept documents
    <name>/<version>/manifest.json                    written last: the version exists iff it does

Every object is written whole and atomically, and names are deterministic, so a run killed at any
point is completed by the next run of the same inputs: finished chunks are skipped, the rest redone.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prefect import task
from prefect.cache_policies import NONE

import plmops
from plmops.infra.storage import Storage, expand_sources, open_storage, open_uri
from plmops.platform.text import corpus
from plmops.platform.text.config import IngestConfig
from plmops.platform.text.dedup import MinHasher
from plmops.platform.text.readers import BadRecord, Record, ReaderOptions, read_records
from plmops.platform.text.segment import Segmenter

STAGING = "_staging"
MANIFEST = "manifest.json"
DEDUP_INDEX = "dedup_index.parquet"
QUARANTINE = "quarantine/part-00000.parquet"


@dataclass(frozen=True)
class VersionPlan:
    """What a run will build: resolved inputs with their content digests, and where it goes."""

    name: str
    version: str
    root_uri: str  # corpora root; the version lives at <root>/<name>/<version>
    inputs: tuple[tuple[str, str, int], ...]  # (uri, sha256, bytes)

    @property
    def prefix(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def uri(self) -> str:
        return f"{self.root_uri.rstrip('/')}/{self.prefix}"

    @property
    def manifest_uri(self) -> str:
        return f"{self.uri}/{MANIFEST}"

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}"


@dataclass
class Chunk:
    """A fixed run of input records (good and bad), the unit of resumption."""

    index: int
    records: list[Record] = field(default_factory=list)
    ordinals: list[int] = field(default_factory=list)  # record number within its source file
    bad: list[BadRecord] = field(default_factory=list)


def _digest(uri: str) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with open_uri(uri) as stream:
        while block := stream.read(1 << 20):
            sha.update(block)
            size += len(block)
    return sha.hexdigest(), size


@task(cache_policy=NONE)
def plan_version(sources: Sequence[str], name: str, root_uri: str, config: IngestConfig) -> VersionPlan:
    """Resolve sources (globs, S3 prefixes) and hash their content; fails before anything is written
    when a source is missing or unreadable, naming it."""
    uris = expand_sources(sources)
    inputs = []
    for uri in uris:
        try:
            sha, size = _digest(uri)
        except OSError as exc:
            raise OSError(f"cannot read source {uri}: {exc}") from exc
        inputs.append((uri, sha, size))
    version = corpus.version_id([(u, s) for u, s, _ in inputs], config)
    return VersionPlan(name=name, version=version, root_uri=root_uri, inputs=tuple(inputs))


def read_chunks(plan: VersionPlan, config: IngestConfig) -> Iterator[Chunk]:
    """Decode every source in order and cut the record stream into chunks of `chunk_records`."""
    options = ReaderOptions(
        format=config.format,
        text_field=config.text_field,
        paragraph_mode=config.paragraph_mode,
        max_bytes=config.max_record_bytes,
    )
    chunk = Chunk(0)
    for uri, _, _ in plan.inputs:
        with open_uri(uri) as stream:
            for ordinal, item in enumerate(read_records(stream, uri, options)):
                if isinstance(item, BadRecord):
                    chunk.bad.append(item)
                else:
                    chunk.records.append(item)
                    chunk.ordinals.append(ordinal)
                if len(chunk.records) + len(chunk.bad) >= config.chunk_records:
                    yield chunk
                    chunk = Chunk(chunk.index + 1)
    if chunk.records or chunk.bad or chunk.index == 0:
        yield chunk


def chunk_key(plan: VersionPlan, index: int) -> str:
    return plan.key(f"{STAGING}/chunk-{index:05d}.parquet")


def _bad_key(plan: VersionPlan, index: int) -> str:
    return plan.key(f"{STAGING}/bad-{index:05d}.parquet")


def _counts_key(plan: VersionPlan, index: int) -> str:
    return plan.key(f"{STAGING}/counts-{index:05d}.json")


@task(cache_policy=NONE)
def normalize(chunk: Chunk, plan: VersionPlan, config: IngestConfig) -> tuple[corpus.DocBatch, Counter]:
    digests = {uri: sha for uri, sha, _ in plan.inputs}
    return corpus.normalize_records(chunk.records, chunk.ordinals, digests, config)


@task(cache_policy=NONE)
def identify_language(batch: corpus.DocBatch, config: IngestConfig) -> tuple[corpus.DocBatch, Counter]:
    return corpus.identify(batch, config)


@task(cache_policy=NONE)
def split_and_filter(batch: corpus.DocBatch, config: IngestConfig) -> tuple[corpus.DocBatch, Counter]:
    return corpus.split_and_filter(batch, config)


@task(cache_policy=NONE)
def fingerprint(batch: corpus.DocBatch, config: IngestConfig) -> corpus.DocBatch:
    """In-process on purpose: MinHash runs at ~9 MB/s, so shipping texts to workers costs as much as it saves."""
    return corpus.fingerprint(batch, MinHasher(num_perm=config.num_perm, shingle_size=config.shingle_size))


@task(cache_policy=NONE)
def stage_chunk(plan: VersionPlan, chunk: Chunk, batch: corpus.DocBatch, drops: Counter, num_perm: int) -> None:
    """Persist a finished chunk: quarantine and counts first, then the documents (whose presence marks
    the chunk done)."""
    store = open_storage(plan.root_uri)
    store.write_parquet(_bad_key(plan, chunk.index), corpus.quarantine_table(chunk.bad))
    counts = Counter({"read.records": len(chunk.records)}) + Counter(f"bad.{b.reason}" for b in chunk.bad) + drops
    store.write_json(_counts_key(plan, chunk.index), dict(counts))
    store.write_parquet(chunk_key(plan, chunk.index), corpus.staged_table(batch, num_perm))


def staged_counts(plan: VersionPlan, n_chunks: int) -> Counter:
    """Counts per stage and reason, summed over the staged chunks."""
    store = open_storage(plan.root_uri)
    return sum((Counter(store.read_json(_counts_key(plan, i))) for i in range(n_chunks)), Counter())


def _previous_versions(store: Storage, plan: VersionPlan) -> list[str]:
    """Complete earlier versions of the same corpus name, oldest first."""
    found = []
    for key in store.list(f"{plan.name}/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST and parts[1] != plan.version:
            manifest = store.read_json(key)
            found.append((manifest.get("created_at", ""), parts[1]))
    return [v for _, v in sorted(found)]


@task(cache_policy=NONE)
def deduplicate(plan: VersionPlan, n_chunks: int, config: IngestConfig) -> tuple[list[np.ndarray], Counter, list[str]]:
    """Keep-masks per chunk over the whole version, and against earlier versions of the same name."""
    store = open_storage(plan.root_uri)
    tables = [store.read_parquet(chunk_key(plan, i), columns=["sha1", "signature"]) for i in range(n_chunks)]
    sizes = [t.num_rows for t in tables]
    sha1 = [s for t in tables for s in t.column("sha1").to_pylist()]
    signatures = _signature_matrix([t.column("signature") for t in tables], config.num_perm)
    previous = _previous_versions(store, plan) if config.dedup_against_previous else []
    prior_sha1: set[str] = set()
    prior_sigs = []
    for version in previous:
        index = store.read_parquet(f"{plan.name}/{version}/{DEDUP_INDEX}")
        prior_sha1.update(index.column("sha1").to_pylist())
        prior_sigs.append(_signature_matrix([index.column("signature")], config.num_perm))
    prior_matrix = np.concatenate(prior_sigs) if prior_sigs else None
    keep, drops = corpus.deduplicate(sha1, signatures, config, prior_sha1 or None, prior_matrix)
    return np.split(keep, np.cumsum(sizes)[:-1]), drops, previous


def _signature_matrix(columns: list, width: int) -> np.ndarray:
    arrays = [c.combine_chunks().values.to_numpy(zero_copy_only=False) for c in columns if len(c)]
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.uint32)
    return flat.astype(np.uint32).reshape(-1, width)


@task(cache_policy=NONE)
def segment(staged: pa.Table, segmenter: Segmenter) -> pa.Table:
    """Stage 5: word boundaries as character offsets (jieba for zh/yue) in worker processes → corpus rows."""
    texts, langs = staged.column("text").to_pylist(), staged.column("lang").to_pylist()
    return corpus.corpus_table(staged, segmenter.column(texts, langs))


@task(cache_policy=NONE)
def write_shard(plan: VersionPlan, relative: str, table: pa.Table) -> dict:
    """Write one output shard; returns its manifest entry (rows, bytes, sha256)."""
    data = open_storage(plan.root_uri).write_parquet(plan.key(relative), table)
    return {
        "path": relative,
        "lang": relative.split("lang=")[1].split("/")[0],
        "rows": table.num_rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


@task(cache_policy=NONE)
def write_side_tables(plan: VersionPlan, n_chunks: int, keep: list[np.ndarray]) -> dict:
    """Merge quarantined records of all chunks and write the dedup index of kept documents."""
    store = open_storage(plan.root_uri)
    bad = pa.concat_tables([store.read_parquet(_bad_key(plan, i)) for i in range(n_chunks)])
    store.write_parquet(plan.key(QUARANTINE), bad)
    kept = [
        store.read_parquet(chunk_key(plan, i), columns=["sha1", "signature"]).filter(pa.array(keep[i]))
        for i in range(n_chunks)
    ]
    store.write_parquet(plan.key(DEDUP_INDEX), pa.concat_tables(kept))
    reasons = pc.value_counts(bad.column("reason")).to_pylist() if bad.num_rows else []
    return {"path": QUARANTINE, "rows": bad.num_rows, "by_reason": {r["values"]: r["counts"] for r in reasons}}


def build_manifest(
    plan: VersionPlan,
    config: IngestConfig,
    shards: list[dict],
    quarantine: dict,
    counts: Counter,
    by_language: dict[str, dict[str, int]],
    previous: list[str],
) -> dict:
    return {
        "name": plan.name,
        "version": plan.version,
        "uri": plan.uri,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "plmops_version": plmops.__version__,
        "config": config.model_dump(),
        "inputs": [{"uri": u, "sha256": s, "bytes": b} for u, s, b in plan.inputs],
        "schema": {f.name: str(f.type) for f in corpus.CORPUS_SCHEMA},
        "documents": sum(s["rows"] for s in shards),
        "by_language": by_language,
        "counts": dict(sorted(counts.items())),
        "quarantine": quarantine,
        "dedup_index": DEDUP_INDEX,
        "dedup_against": previous,
        "shards": shards,
    }


@task(cache_policy=NONE)
def publish_manifest(plan: VersionPlan, manifest: dict) -> str:
    """The last write of a version: from here on readers see it, complete."""
    store = open_storage(plan.root_uri)
    store.write_json(plan.key(MANIFEST), manifest)
    store.delete_prefix(plan.key(STAGING + "/"))
    return plan.manifest_uri


def read_manifest(plan: VersionPlan) -> dict | None:
    store = open_storage(plan.root_uri)
    key = plan.key(MANIFEST)
    return store.read_json(key) if store.exists(key) else None


def chunk_is_staged(plan: VersionPlan, index: int) -> bool:
    return open_storage(plan.root_uri).exists(chunk_key(plan, index))


def load_staged(plan: VersionPlan, index: int, keep: np.ndarray) -> pa.Table:
    """The kept documents of a staged chunk (without their signatures, which only dedup needs)."""
    names = [f.name for f in corpus.staged_schema(1) if f.name != "signature"]
    return open_storage(plan.root_uri).read_parquet(chunk_key(plan, index), columns=names).filter(pa.array(keep))
