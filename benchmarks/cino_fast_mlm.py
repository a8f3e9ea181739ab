"""CINO "fast MLM": the plmops MLM head restricted to a language group's vocabulary vs the full softmax.

Times decoder + softmax + cross-entropy, forward and backward, through `PlmopsLMPredictionHead` with and
without `vocab_subset` (the code path training uses), in one process run, on the same hidden states.

    python benchmarks/cino_fast_mlm.py

Writes benchmarks/results/cino_fast_mlm.json; `speedup` = full-vocabulary time / restricted time.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plmops.platform.models import PlmopsConfig  # noqa: E402
from plmops.platform.models.modeling_plmops import PlmopsLMPredictionHead, remap_to_subset  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "cino_fast_mlm.json"
CASES = [(50_000, 8_000), (100_000, 8_000)]  # (full vocabulary, group vocabulary); CINO's XLM-R vocab is 250k


def median_seconds(step, repeats: int = 3) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(full_vocab: int, group: int, hidden: int = 768, predicted: int = 64 * 20) -> dict:
    g = torch.Generator().manual_seed(0)
    head = PlmopsLMPredictionHead(PlmopsConfig(vocab_size=full_vocab, hidden_size=hidden, num_attention_heads=12))
    states = torch.randn(predicted, hidden, generator=g, requires_grad=True)
    subset = torch.randperm(full_vocab, generator=g)[:group].sort().values
    labels = subset[torch.randint(group, (predicted,), generator=g)]
    restricted_labels = remap_to_subset(labels, subset, full_vocab)

    def full() -> None:
        F.cross_entropy(head(states), labels).backward()

    def restricted() -> None:
        F.cross_entropy(head(states, vocab_subset=subset), restricted_labels).backward()

    full_s, restricted_s = median_seconds(full), median_seconds(restricted)
    return {"full_vocab": full_vocab, "group_vocab": group, "hidden": hidden, "predicted_tokens": predicted,
            "full_s": full_s, "restricted_s": restricted_s, "speedup": full_s / restricted_s}


def main() -> None:
    rows = [measure(v, g) for v, g in CASES]
    print(f"{'full':>8} {'group':>7} {'full s':>8} {'restr. s':>9} {'speedup':>8}   ({torch.get_num_threads()} threads)")
    for r in rows:
        print(f"{r['full_vocab']:>8} {r['group_vocab']:>7} {r['full_s']:>8.3f} {r['restricted_s']:>9.3f} {r['speedup']:>8.2f}")
    report = {"benchmark": "cino_fast_mlm", "peer": "the same head over the full vocabulary",
              "machine": {"node": platform.node(), "processor": platform.processor() or platform.machine(),
                          "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
              "speedup": rows[0]["speedup"], "cases": rows}
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
