"""BERT-base pretraining step throughput and MFU on a GPU: seq 128 and 512, bf16, packed vs unpacked.

Runs only where CUDA is available (the project never requires a GPU). Documents follow the real
length distribution of the shared Chinese corpus (benchmarks/data/zh_doc_lengths.json: news titles of
~25 characters and Wikipedia paragraphs of ~500), one token per character as in Chinese BERT.

    python benchmarks/pretrain_gpu.py [--compile] [--steps 30]

Each step is a full training step of the plmops encoder with its MLM head (masked positions only):
forward and backward under bf16 autocast, fused AdamW. Throughput counts real (non-padding) tokens.
MFU = (6·N_non-embedding + 12·L·d·T) FLOPs per token × real tokens/s ÷ the device's bf16 dense peak.
Writes benchmarks/results/pretrain_gpu.json (or --output), with the device named.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plmops.platform.models import PlmopsConfig, PlmopsForMaskedLM  # noqa: E402

LENGTHS = Path(__file__).parent / "data" / "zh_doc_lengths.json"
RESULTS = Path(__file__).parent / "results" / "pretrain_gpu.json"
# bf16 dense tensor-core peaks (TFLOP/s) by device-name fragment, most specific first.
PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0}
BASE = dict(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=512)
CLS, SEP, MASK = 101, 102, 103


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def sample_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    table = json.loads(LENGTHS.read_text())["lengths"]
    values, counts = np.array([int(k) for k in table]), np.array(list(table.values()), dtype=float)
    return rng.choice(values, size=n, p=counts / counts.sum())


def make_batch(rng: np.random.Generator, rows: int, seq: int, packed: bool, vocab: int) -> dict[str, torch.Tensor]:
    """Token ids, masks and MLM targets for one batch; a document longer than a row is cut to fit."""
    ids = np.zeros((rows, seq), dtype=np.int64)
    docs = np.zeros((rows, seq), dtype=np.int64)
    lengths = iter(sample_lengths(rng, rows * seq))
    for r in range(rows):
        used, doc = 0, 0
        while used < seq:
            length = min(int(next(lengths)) + 2, seq - used)  # the last document is cut to fit the row
            if length < 3:
                break
            doc += 1
            ids[r, used:used + length] = rng.integers(1000, vocab, length)
            ids[r, used], ids[r, used + length - 1] = CLS, SEP
            docs[r, used:used + length] = doc
            used += length
            if not packed:
                break
    real = docs != 0
    special = (ids == CLS) | (ids == SEP)
    chosen = real & ~special & (rng.random(ids.shape) < 0.15)
    labels = np.where(chosen, ids, -100)
    ids = np.where(chosen, MASK, ids)
    batch = {"input_ids": ids, "labels": labels, "masked_positions": chosen}
    batch["document_ids" if packed else "attention_mask"] = docs if packed else real.astype(np.int64)
    return {k: torch.from_numpy(v) for k, v in batch.items()} | {"real_tokens": torch.tensor(int(real.sum()))}


def non_embedding_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)


def build(kind: str, config: dict, device: torch.device) -> torch.nn.Module:
    """Ours (masked positions only, packing-aware) or the peer: transformers' BertForMaskedLM with SDPA."""
    if kind == "plmops":
        return PlmopsForMaskedLM(PlmopsConfig(**config)).to(device)
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(**config, attn_implementation="sdpa")).to(device)


def run(kind: str, seq: int, packed: bool, rows: int, steps: int, compile_model: bool,
        config: dict, device: torch.device, cross_document: bool = False) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build(kind, config, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    step_fn = torch.compile(model) if compile_model else model
    batches = [make_batch(rng, rows, seq, packed, config["vocab_size"]) for _ in range(4)]
    batches = [{k: v.to(device, non_blocking=True) for k, v in b.items()} for b in batches]
    dtype = torch.bfloat16

    def step(batch: dict[str, torch.Tensor]) -> None:
        inputs = {k: v for k, v in batch.items() if k != "real_tokens"}
        if kind != "plmops":
            del inputs["masked_positions"]  # the peer scores every position, as BertForMaskedLM does
        if cross_document and "document_ids" in inputs:
            del inputs["document_ids"]  # full rows attend across documents: no mask, flash attention
        with torch.autocast(device.type, dtype=dtype):
            loss = step_fn(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for i in range(3 if device.type == "cpu" else 8):  # warm-up (and compilation)
        step(batches[i % len(batches)])
    sync()
    start = time.perf_counter()
    real = 0
    for i in range(steps):
        step(batches[i % len(batches)])
        real += int(batches[i % len(batches)]["real_tokens"])
    sync()
    seconds = time.perf_counter() - start
    flops_per_token = 6 * non_embedding_params(model) + 12 * config["num_hidden_layers"] * config["hidden_size"] * seq
    tokens_per_s = real / seconds
    peak = peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    return {
        "model": kind, "seq": seq, "packed": packed, "rows": rows, "compiled": compile_model, "steps": steps,
        "cross_document": cross_document and packed, "dropout": config.get("hidden_dropout_prob", 0.1),
        "real_token_fraction": real / (steps * rows * seq),
        "tokens_per_s": tokens_per_s,
        "step_ms": 1000 * seconds / steps,
        "tflops": flops_per_token * tokens_per_s / 1e12,
        "mfu": flops_per_token * tokens_per_s / (peak * 1e12) if peak else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="also run our model under torch.compile")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU: checks the code paths only")
    parser.add_argument("--seq", type=int, choices=(128, 512), help="only this sequence length")
    parser.add_argument("--rows", type=int, help="rows per batch (default 256 at seq 128, 64 at 512)")
    parser.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout")
    parser.add_argument("--cross-document", action="store_true",
                        help="packed rows without document masking (as original BERT packing): flash attention")
    parser.add_argument("--no-peer", action="store_true", help="skip the transformers peer")
    args = parser.parse_args()
    if args.smoke:
        device, config, scale = torch.device("cpu"), dict(BASE, hidden_size=64, num_hidden_layers=2,
                                                           num_attention_heads=2, intermediate_size=128), 8
    elif torch.cuda.is_available():
        device, config, scale = torch.device("cuda"), dict(BASE), 1
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        sys.exit("pretrain_gpu: no CUDA device here; this benchmark runs only on a GPU machine (--smoke: CPU check)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    config.update(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)

    cases = [(128, False, 256), (128, True, 256), (512, False, 64), (512, True, 64)]
    cases = [(s, p, args.rows or r) for s, p, r in cases if args.seq in (None, s)]
    plan = [] if args.no_peer else [("bert-hf", seq, False, rows, False) for seq, p, rows in cases if not p]
    plan += [("plmops", seq, packed, rows, False) for seq, packed, rows in cases]
    if args.compile:
        plan += [("plmops", seq, packed, rows, True) for seq, packed, rows in cases]
    results = []
    for kind, seq, packed, rows, compiled in plan:
        r = run(kind, seq, packed, max(rows // scale, 2), args.steps, compiled, config, device, args.cross_document)
        results.append(r)
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"{kind:<8} seq={seq:<4} packed={str(packed):<5} compiled={str(compiled):<5} "
              f"real={r['real_token_fraction']:.2f} {r['tokens_per_s']:>10,.0f} tok/s "
              f"{r['tflops']:6.1f} TFLOP/s  MFU {mfu}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def best(kind: str, seq: int) -> float:
        return max(r["tokens_per_s"] for r in results if r["model"] == kind and r["seq"] == seq)

    seqs = sorted({r["seq"] for r in results if r["model"] == "bert-hf"})
    speedup = {str(seq): best("plmops", seq) / best("bert-hf", seq) for seq in seqs}
    report = {
        "benchmark": "pretrain_gpu",
        "model": f"BERT-base shape {config['num_hidden_layers']}x{config['hidden_size']}, vocab {config['vocab_size']}",
        "peer": "transformers BertForMaskedLM (SDPA), padded rows, logits at every position; same batches",
        "device": name, "peak_bf16_tflops": peak_tflops(name) if device.type == "cuda" else None,
        "torch": torch.__version__, "python": platform.python_version(),
        "speedup": speedup.get("128"),
        "speedup_by_seq": speedup,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print("speedup (real tokens/s, ours best / peer): " + ", ".join(f"seq{k} {v:.2f}x" for k, v in speedup.items()))
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
