"""Kill `plmops ingest` with SIGKILL at random points; the next run completes the same version exactly."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from plmops.flows.ingest import ingest_flow
from plmops.infra.storage import open_storage
from plmops.platform.text.config import IngestConfig

# Small chunks and shards: many resumable units, and shard files appear all through publishing.
CONFIG = {"workers": 1, "chunk_records": 400, "shard_target_bytes": 65536}


def _corpus(shared_data, folder: Path) -> list[str]:
    folder.mkdir()
    titles = shared_data("raw_zh_corpus/tnews_unlabeled_titles.txt").read_text(encoding="utf-8").splitlines()
    uyghur = shared_data("minority/ud_uyghur/ug_udt-ud-train.sentences.txt").read_text(encoding="utf-8")
    (folder / "titles.txt").write_text("\n".join(titles[:6000]) + "\n", encoding="utf-8")
    (folder / "ug.txt").write_text(uyghur, encoding="utf-8")
    return [str(folder / "titles.txt"), str(folder / "ug.txt")]


def _doc_ids(manifest: dict) -> list[str]:
    store = open_storage(manifest["uri"])
    return [i for s in manifest["shards"] for i in store.read_parquet(s["path"]).column("doc_id").to_pylist()]


def _reached(out: Path, target: int | str) -> bool:
    """Progress as an outside observer sees it: staged chunks, then published shards."""
    if target == "publishing":
        return any(out.rglob("data/lang=*/part-*.parquet"))
    return len(list(out.rglob("_staging/chunk-*.parquet"))) >= target


def _cli(sources: list[str], out: Path, config: Path, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "plmops.cli", "ingest", *sources, "--name", "killed", "--output", str(out),
           "--config", str(config)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_at_random_points_then_resume(prefect_server, shared_data, tmp_path):
    sources = _corpus(shared_data, tmp_path / "raw")
    reference = ingest_flow(sources, "reference", output=str(tmp_path / "ref"), config=IngestConfig(**CONFIG))
    expected = _doc_ids(reference.manifest)

    config = tmp_path / "ingest.yaml"
    config.write_text("\n".join(f"{k}: {v}" for k, v in CONFIG.items()) + "\n")
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PLMOPS_HOME": str(tmp_path / "home")}
    out = tmp_path / "out"
    seed = int(os.environ.get("PLMOPS_TEST_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    records = reference.manifest["counts"]["read.records"] + reference.manifest["quarantine"]["rows"]
    n_chunks = math.ceil(records / CONFIG["chunk_records"])
    # Kill points chosen at random: after k chunks are staged (twice, k growing), then mid-publish.
    targets = [*sorted(rng.sample(range(1, n_chunks), 2)), "publishing"]
    killed_mid_run = 0
    for target in targets:
        proc = _cli(sources, out, config, env)
        while proc.poll() is None and not _reached(out, target):
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_mid_run += 1
        proc.wait()
    assert killed_mid_run >= 2, f"kills landed after the run finished (seed {seed})"
    assert not list(out.rglob("manifest.json")), f"a killed run published its manifest (seed {seed})"

    proc = _cli(sources, out, config, env)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert reference.version in output

    manifests = list(out.rglob("manifest.json"))
    assert len(manifests) == 1
    resumed = open_storage(str(out)).read_json(str(manifests[0].relative_to(out)))
    got = _doc_ids(resumed)
    assert len(got) == len(set(got)), "a document was written twice"
    assert sorted(got) == sorted(expected), "documents lost or added by the interruption"
    assert resumed["counts"] == reference.manifest["counts"]
    assert not list(out.rglob("_staging/*")), "staging left behind after publishing"
