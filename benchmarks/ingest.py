"""Ingestion throughput vs jieba's own single-core segmentation, on the same text, in one run.

The shared raw corpus (~2.9 MB) is repeated to >= 50 MB. Repeats are exact duplicates, which dedup
would drop before segmentation and flatter our number; so the headline runs with dedup disabled (every
document goes through every stage), and a default-config run is reported beside it.

    python benchmarks/ingest.py [--shared-data ../shared/data] [--target-mb 50]

Writes benchmarks/results/ingest.json; `speedup` = jieba single-core time / our end-to-end time with
2 workers on the same text (> 1: the whole pipeline is faster than jieba's segmentation alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "ingest.json"


def build_input(shared: Path, folder: Path, target_mb: float) -> tuple[list[str], int, list[str]]:
    files = sorted((shared / "raw_zh_corpus").glob("*.txt"))
    data = b"".join(f.read_bytes() for f in files)
    repeats = int(target_mb * 1e6 // len(data)) + 1
    for i in range(repeats):
        (folder / f"part-{i:03d}.txt").write_bytes(data)
    lines = data.decode("utf-8").splitlines()
    return [str(folder / "*.txt")], len(data) * repeats, lines


def segmenter_speed(lines: list[str], budget_s: float = 20.0) -> dict[str, float]:
    """Single-core MB/s of jieba (the reference) and rjieba (what we run), default mode with HMM."""
    import jieba
    import rjieba

    jieba.initialize()
    speeds = {}
    for name, cut in (("jieba", lambda s: jieba.lcut(s, HMM=True)), ("rjieba", lambda s: rjieba.cut(s, hmm=True))):
        done, start = 0, time.perf_counter()
        for line in lines * 100:
            cut(line)
            done += len(line.encode())
            if time.perf_counter() - start > budget_s:
                break
        speeds[name] = done / 1e6 / (time.perf_counter() - start)
    return speeds


def run_ingest(sources: list[str], out: Path, workers: int, dedup: bool) -> dict:
    from plmops.flows.ingest import ingest_flow
    from plmops.platform.text.config import IngestConfig

    config = IngestConfig(workers=workers, dedup_exact=dedup, dedup_near=dedup, dedup_against_previous=False)
    start = time.perf_counter()
    result = ingest_flow(sources, f"bench-{workers}-{dedup}", output=str(out), config=config)
    seconds = time.perf_counter() - start
    return {"workers": workers, "dedup": dedup, "seconds": seconds, "documents": result.manifest["documents"],
            "records": result.manifest["counts"]["read.records"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--target-mb", type=float, default=50.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="plmops-bench-"))
    os.environ.setdefault("PLMOPS_HOME", str(work / "home"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from plmops.infra.settings import apply_environment, get_settings

    apply_environment(get_settings())
    try:
        (work / "raw").mkdir()
        sources, n_bytes, lines = build_input(args.shared_data, work / "raw", args.target_mb)
        seg = segmenter_speed(lines)
        run_ingest([str(work / "raw" / "part-000.txt")], work / "warmup", 1, True)  # start Prefect's API once

        runs = []
        for workers, dedup in ((1, False), (2, False), (2, True)):
            r = run_ingest(sources, work / f"out-{workers}-{dedup}", workers, dedup)
            r["mb_per_s"] = n_bytes / 1e6 / r["seconds"]
            r["docs_per_s"] = r["records"] / r["seconds"]
            r["vs_jieba_single_core"] = r["mb_per_s"] / seg["jieba"]
            r["goal_mb_per_s"] = 0.8 * workers * seg["jieba"]
            r["goal_met"] = r["mb_per_s"] >= r["goal_mb_per_s"]
            runs.append(r)
            print(f"  workers={workers} dedup={dedup}: {r['mb_per_s']:.2f} MB/s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    headline = next(r for r in runs if r["workers"] == 2 and not r["dedup"])
    jieba_seconds = n_bytes / 1e6 / seg["jieba"]
    report = {
        "benchmark": "ingest",
        "machine": {"node": platform.node(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
        "input_mb": n_bytes / 1e6,
        "segmenter_single_core_mb_per_s": seg,
        "runs": runs,
        "peer": "jieba 0.42.1 single-core segmentation of the same text (jieba.lcut, HMM on)",
        "speedup": jieba_seconds / headline["seconds"],
        "speedup_vs_rjieba_single_core": (n_bytes / 1e6 / seg["rjieba"]) / headline["seconds"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\ningest benchmark: {report['input_mb']:.1f} MB, {os.cpu_count()} CPUs")
    print(f"segmenter single-core: jieba {seg['jieba']:.2f} MB/s, rjieba {seg['rjieba']:.2f} MB/s")
    print(f"{'workers':>7} {'dedup':>6} {'s':>7} {'MB/s':>7} {'docs/s':>9} {'x jieba':>8} {'goal':>6}")
    for r in runs:
        print(f"{r['workers']:>7} {str(r['dedup']):>6} {r['seconds']:>7.1f} {r['mb_per_s']:>7.2f} "
              f"{r['docs_per_s']:>9.0f} {r['vs_jieba_single_core']:>8.2f} {'yes' if r['goal_met'] else 'no':>6}")
    print(f"speedup (jieba single-core time / ours, 2 workers): {report['speedup']:.2f} -> {RESULTS}")


if __name__ == "__main__":
    main()
