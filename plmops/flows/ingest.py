"""Corpus ingestion flow: raw text (local or S3) → a versioned, sharded Parquet corpus with a manifest.

    sources ─ plan (hash inputs → version id) ─┬─ manifest exists → done (idempotent)
                                               └─ per chunk: decode → normalise → language → split/filter
                                                             → fingerprint → stage
                                                  dedup (whole version + earlier versions)
                                                  per chunk: segment words → shards by language
                                                  quarantine + dedup index → manifest (last, atomic)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prefect import flow
from prefect.events import emit_event
from prefect.utilities.annotations import quote
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from plmops.infra import tracking
from plmops.infra.settings import get_settings
from plmops.platform.text import corpus
from plmops.platform.text.config import IngestConfig
from plmops.platform.text.segment import Segmenter
from plmops.tasks import ingest as t


@dataclass(frozen=True)
class IngestResult:
    """What a caller needs after ingestion; `created` is False when the version already existed."""

    name: str
    version: str
    manifest_uri: str
    created: bool
    manifest: dict

    @property
    def mlflow_run_id(self) -> str | None:
        return self.manifest.get("mlflow_run_id")


def corpora_root(output: str | None = None) -> str:
    """Where corpus versions live: `--output`, else `<storage>/corpora`."""
    return output or f"{get_settings().effective_storage_uri.rstrip('/')}/corpora"


def _progress(enabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


@flow(name="ingest")
def ingest_flow(
    sources: list[str],
    name: str,
    output: str | None = None,
    config: IngestConfig | None = None,
    show_progress: bool = False,
) -> IngestResult:
    """Build (or find) the corpus version of `sources` under `name`."""
    settings = get_settings()
    config = config or IngestConfig(workers=settings.workers)
    plan = t.plan_version(sources, name, corpora_root(output), config)
    existing = t.read_manifest(plan)
    if existing is not None:
        return IngestResult(name, plan.version, plan.manifest_uri, created=False, manifest=existing)

    started = time.perf_counter()
    with (
        tracking.tracked_run("ingest", f"{name}@{plan.version}", settings, tags={"corpus": name}) as run_id,
        Segmenter(config.workers) as segmenter,
        _progress(show_progress) as progress,
    ):
        tracking.log_params({"name": name, "version": plan.version, "sources": list(sources), **config.model_dump()})
        seconds: Counter = Counter()
        n_chunks = _stage_chunks(plan, config, progress, seconds)
        with _timed(seconds, "dedup"):
            keep, dedup_drops, previous = t.deduplicate(plan, n_chunks, config)
        shards, by_language = _write_shards(plan, config, keep, segmenter, progress, seconds)
        quarantine = t.write_side_tables(plan, n_chunks, keep)
        counts = t.staged_counts(plan, n_chunks) + dedup_drops
        manifest = t.build_manifest(plan, config, shards, quarantine, counts, by_language, previous)
        manifest["mlflow_run_id"] = run_id
        manifest_uri = t.publish_manifest(plan, manifest)
        _log_run(plan, manifest, seconds, time.perf_counter() - started)
    _announce(plan, manifest)
    return IngestResult(name, plan.version, manifest_uri, created=True, manifest=manifest)


CORPUS_CREATED = "plmops.corpus.version.created"


def _announce(plan: t.VersionPlan, manifest: dict) -> None:
    """A Prefect event per new version: deployment triggers (prefect.yaml) start pretraining on it."""
    emit_event(
        event=CORPUS_CREATED,
        resource={"prefect.resource.id": f"plmops.corpus.{plan.name}", "prefect.resource.name": plan.name},
        payload={"name": plan.name, "version": plan.version, "uri": plan.uri, "documents": manifest["documents"]},
    )


@contextmanager
def _timed(seconds: Counter, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    seconds[stage] += time.perf_counter() - start


def _stage_chunks(plan, config, progress: Progress, seconds: Counter) -> int:
    """Stages 1–4a per chunk; chunks finished by an earlier (killed) run are skipped.

    Batches go to tasks inside `quote`: Prefect would otherwise walk every string of every document
    looking for futures, which cost ten times the work itself.
    """
    task_id = progress.add_task("decode → fingerprint", total=None)
    n_chunks = 0
    for chunk in t.read_chunks(plan, config):
        n_chunks += 1
        progress.advance(task_id)
        if t.chunk_is_staged(plan, chunk.index):
            continue
        with _timed(seconds, "normalize"):
            batch, drops = t.normalize(quote(chunk), plan, config)
        with _timed(seconds, "langid"):
            batch, more = t.identify_language(quote(batch), config)
            drops += more
        with _timed(seconds, "split"):
            batch, more = t.split_and_filter(quote(batch), config)
            drops += more
        with _timed(seconds, "fingerprint"):
            batch = t.fingerprint(quote(batch), config)
        with _timed(seconds, "stage"):
            t.stage_chunk(plan, quote(chunk), quote(batch), drops, config.num_perm)
    progress.update(task_id, total=n_chunks, completed=n_chunks)
    return n_chunks


def _write_shards(plan, config, keep, segmenter, progress: Progress, seconds: Counter) -> tuple[list[dict], dict]:
    """Stages 5–6: segment the kept documents of each chunk and pack them into language shards."""
    task_id = progress.add_task("segment → shards", total=len(keep))
    packer = corpus.ShardPacker(config.shard_target_bytes)
    shards: list[dict] = []
    by_language: dict[str, Counter] = {}
    for index, mask in enumerate(keep):
        with _timed(seconds, "load"):
            staged = t.load_staged(plan, index, mask)
        with _timed(seconds, "segment"):
            rows = t.segment(staged, segmenter)
        _count_languages(rows, by_language)
        with _timed(seconds, "write"):
            for relative, table in packer.add(rows):
                shards.append(t.write_shard(plan, relative, table))
        progress.advance(task_id)
    for relative, table in packer.finish():
        shards.append(t.write_shard(plan, relative, table))
    return shards, {lang: dict(c) for lang, c in sorted(by_language.items())}


def _count_languages(rows, by_language: dict[str, Counter]) -> None:
    """Documents and characters per language, accumulated over the shards' rows."""
    stats = rows.group_by("lang").aggregate([("n_chars", "sum"), ("n_chars", "count")]).to_pylist()
    for row in stats:
        counter = by_language.setdefault(row["lang"], Counter())
        counter["documents"] += row["n_chars_count"]
        counter["chars"] += row["n_chars_sum"]


def _log_run(plan: t.VersionPlan, manifest: dict, seconds: Counter, total: float) -> None:
    input_bytes = sum(b for _, _, b in plan.inputs)
    metrics = {f"count/{k}": v for k, v in manifest["counts"].items()}
    metrics.update({f"lang/{k}/documents": v["documents"] for k, v in manifest["by_language"].items()})
    metrics.update({f"seconds/{k}": v for k, v in seconds.items()})
    metrics.update(
        {
            "documents": manifest["documents"],
            "quarantined": manifest["quarantine"]["rows"],
            "seconds/total": total,
            "throughput/mb_per_s": input_bytes / 1e6 / max(total, 1e-9),
            "throughput/docs_per_s": manifest["counts"].get("read.records", 0) / max(total, 1e-9),
        }
    )
    tracking.log_metrics(metrics)
    tracking.log_json_artifact(manifest, "manifest.json")
    tracking.log_dataset_input(plan.uri, name=plan.name, digest=plan.version, context="ingest-output")
