"""Whole-word-mask collation: the plmops BatchMaker vs transformers' DataCollatorForLanguageModeling.

    python benchmarks/collators.py [--shared-data ../shared/data] [--batch-size 32] [--batches 150]

Both collators get the same tokenised examples of the shared raw Chinese corpus (both files, jieba word
spans, a WordPiece trained on the corpus with CJK split per character), cut to max_len (128, then 512),
shuffled once with a fixed seed and cut into the same batches. Each gets them in its own input format,
prepared before the clock starts: ours `Example`s (numpy ids and word ids), the peer dicts of lists with
`special_tokens_mask` and `offset_mapping` (what its whole-word mode needs). Only the collate call is
timed: padding + whole-word masking to a dict of tensors. torch runs on one thread, as in a DataLoader
worker (which is where collators run; on a shared 2-core box two intra-op threads were also 10x slower).

What the peer does with Chinese (transformers 5.24, `whole_word_mask=True`, the successor of the removed
DataCollatorForWholeWordMask): a word is a run of tokens whose offsets touch, so only whitespace (or a
special token) ends a word; an unspaced Chinese sentence, punctuation included, is one "word". Each word
is then masked with probability 0.15 as a whole, so a news title is either fully masked or untouched, and
the 80/10/10 replacement is switched off (all [MASK], with a warning). Its word grouping also builds a
[batch, seq, seq] boolean tensor, quadratic in max_len. The numbers are under `masking`.

Writes benchmarks/results/collators.json: machine, tokens_per_s (real tokens per second) of both,
`speedup` = peer time / our time (the smaller of the two max_len; per max_len beside it), and the padding
fraction of the corpus at each max_len with and without packing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plmops.platform.pretraining.batching import BatchConfig, BatchMaker, Example, encode, pack
from plmops.platform.text.segment import segment_batch

RESULTS = Path(__file__).parent / "results" / "collators.json"
FILES = ("cmrc2018_dev_trial_contexts.txt", "tnews_unlabeled_titles.txt")
MAX_LENS = (128, 512)


def load_rows(shared: Path) -> list[dict]:
    texts = [
        line
        for name in FILES
        for line in (shared / "raw_zh_corpus" / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    spans = segment_batch(texts, ["zh"] * len(texts))
    return [{"text": t, "word_offsets": s, "lang": "zh"} for t, s in zip(texts, spans)]


def train_tokenizer(rows: list[dict]):
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    trainer = BertWordPieceTokenizer(handle_chinese_chars=True, lowercase=True)
    trainer.train_from_iterator([r["text"] for r in rows], vocab_size=21128)
    return BertTokenizerFast(tokenizer_object=trainer._tokenizer)


def peer_batches(examples: list[Example], rows: list[dict], tokenizer, batch_size: int) -> list[list[dict]]:
    """The same batches as the peer takes them: lists with special-token mask and char offsets.

    `tokenizer.pad` pads input_ids and the masks but not `offset_mapping` (ragged offsets raise
    "Unable to create tensor"), so whole-word users must pad when tokenising; here each batch is padded
    to the length ours pads it to (longest row, multiple of 8), before the clock starts.
    """
    offsets = tokenizer([r["text"] for r in rows], add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    batches = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        width = -(-max(map(len, chunk)) // 8) * 8
        batch = []
        for e in chunk:
            pad = width - len(e)
            inner = offsets[e.row][e.token_start : e.token_start + len(e) - 2]
            batch.append(
                {
                    "input_ids": e.input_ids.tolist() + [tokenizer.pad_token_id] * pad,
                    "attention_mask": [1] * len(e) + [0] * pad,
                    "special_tokens_mask": [1] + [0] * (len(e) - 2) + [1] * (1 + pad),
                    "offset_mapping": [(0, 0), *inner, (0, 0)] + [(0, 0)] * pad,
                }
            )
        batches.append(batch)
    return batches


def padding_fractions(examples: list[Example], max_len: int, batch_size: int) -> dict[str, float]:
    """Share of padding cells: rows of max_len (unpacked, packed), and unpacked batches padded to their
    longest row (multiple of 8) in shuffled order."""
    lengths = np.array([len(e) for e in examples])
    rows = pack(lengths, max_len)
    shuffled = np.random.default_rng(0).permutation(lengths)
    dynamic_cells = sum(
        len(b) * -(-int(b.max()) // 8) * 8
        for b in np.split(shuffled, range(batch_size, len(shuffled), batch_size))
    )
    return {
        "unpacked": 1 - lengths.sum() / (len(lengths) * max_len),
        "packed": 1 - lengths.sum() / (len(rows) * max_len),
        f"unpacked_dynamic_batch{batch_size}": 1 - lengths.sum() / dynamic_cells,
    }


def timed(collate, batches: list, passes: int = 3) -> float:
    """Median over passes of the total seconds spent in `collate` over all batches (after a warm-up)."""
    collate(batches[0])
    totals = []
    for _ in range(passes):
        start = time.perf_counter()
        for batch in batches:
            collate(batch)
        totals.append(time.perf_counter() - start)
    return statistics.median(totals)


def masking_behaviour(
    peer, ours: BatchMaker, theirs: list[list[dict]], mine: list[list[list[Example]]]
) -> dict:
    """How each collator groups and masks Chinese, on the same batches: words per row, masked share."""
    stats: dict[str, list[float]] = {}
    for features, rows in zip(theirs, mine):
        batch = peer([dict(f) for f in features])
        special = torch.tensor([f["special_tokens_mask"] for f in features]).bool()
        labelled = (batch["labels"] != -100) & ~special
        share = labelled.sum(1) / (~special).sum(1)
        offsets = np.array([f["offset_mapping"] for f in features])
        word_ids, _ = peer._calc_word_ids_and_prob_mask(offsets, special.numpy().astype(np.int64))
        mask_id = peer.tokenizer.mask_token_id
        ours_labels = ours(rows)["labels"] != -100
        for key, values in {
            "peer_words_per_row": [len(np.unique(w[w >= 0])) for w in word_ids],
            "jieba_words_per_row": [len(np.unique(row[0].word_ids)) - 1 for row in rows],
            "peer_rows_fully_masked": (share == 1).tolist(),
            "peer_rows_untouched": (share == 0).tolist(),
            "peer_masked_token_share": [float(labelled.sum() / (~special).sum())],
            "peer_mask_token_share_of_masked": [
                float((batch["input_ids"][labelled] == mask_id).float().mean())
            ],
            "ours_masked_token_share": [float(ours_labels.sum() / sum(len(row[0]) - 2 for row in rows))],
        }.items():
            stats.setdefault(key, []).extend(float(v) for v in values)
    return {key: float(np.mean(values)) for key, values in stats.items()}


def run(max_len: int, rows: list[dict], tokenizer, args: argparse.Namespace) -> dict:
    from transformers import DataCollatorForLanguageModeling

    examples = encode(rows, tokenizer, max_len)
    order = np.random.default_rng(0).permutation(len(examples))[: args.batch_size * args.batches]
    chosen = [examples[i] for i in order]
    ours_batches = [
        [[e] for e in chosen[i : i + args.batch_size]] for i in range(0, len(chosen), args.batch_size)
    ]
    theirs = peer_batches(chosen, rows, tokenizer, args.batch_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peer = DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True, seed=0, pad_to_multiple_of=8)
    config = BatchConfig(objective="wwm", max_len=max_len, packing=False, pad_to_multiple_of=8)
    ours = BatchMaker.from_tokenizer(tokenizer, config)
    packer = BatchMaker.from_tokenizer(tokenizer, BatchConfig(objective="wwm", max_len=max_len))
    packed_rows = packer.rows(chosen)
    packed_batches = [
        packed_rows[i : i + args.batch_size] for i in range(0, len(packed_rows), args.batch_size)
    ]

    tokens = sum(len(e) for e in chosen)
    seconds = {
        "ours": timed(ours, ours_batches),
        "peer": timed(lambda b: peer([dict(f) for f in b]), theirs),
        "ours_packed": timed(packer, packed_batches),
    }
    return {
        "examples": len(examples),
        "timed_examples": len(chosen),
        "timed_tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": {k: tokens / s for k, s in seconds.items()},
        "speedup": seconds["peer"] / seconds["ours"],
        "padding_fraction": padding_fractions(examples, max_len, args.batch_size),
        "masking": masking_behaviour(peer, ours, theirs[:20], ours_batches[:20]),
        "peer_warnings": sorted({str(w.message) for w in caught}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shared-data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=150, help="batches timed per max_len")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = load_rows(args.shared_data)
    tokenizer = train_tokenizer(rows)
    results = {str(n): run(n, rows, tokenizer, args) for n in MAX_LENS}

    import transformers

    report = {
        "benchmark": "collators",
        "machine": {
            "node": platform.node(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "corpus": {"files": list(FILES), "documents": len(rows), "chars": sum(len(r["text"]) for r in rows)},
        "tokenizer": f"WordPiece trained on the corpus, {len(tokenizer)} ids, CJK split per character",
        "batch_size": args.batch_size,
        "peer": "transformers DataCollatorForLanguageModeling(whole_word_mask=True, pad_to_multiple_of=8)",
        "ours": "BatchMaker(wwm, packing=False, pad_to_multiple_of=8); ours_packed: packing=True",
        "peer_notes": [
            (
                "whole_word_mask=True starts a new word only where a token's start offset differs from the previous "
                "token's end (or after a special token): unspaced Chinese, punctuation included, is one word "
                "(see masking.peer_words_per_row vs jieba_words_per_row)"
            ),
            (
                "each word is masked with probability 0.15 as a whole, so rows are mostly all-or-nothing "
                "(masking.peer_rows_fully_masked / peer_rows_untouched); mask_replace_prob is forced to 1"
            ),
            (
                "tokenizer.pad does not pad offset_mapping, so the peer's batches are padded before the clock "
                "(to the length ours pads to); ours pads inside the timed call"
            ),
            "its word grouping builds a [batch, seq, seq] boolean tensor, quadratic in max_len",
        ],
        "tokens_per_s": {n: r["tokens_per_s"] for n, r in results.items()},
        "speedup": min(r["speedup"] for r in results.values()),
        "speedup_by_max_len": {n: r["speedup"] for n, r in results.items()},
        "padding_fraction": {n: r["padding_fraction"] for n, r in results.items()},
        "runs": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print_table(report)


def print_table(report: dict) -> None:
    print(
        f"{'max_len':>7} {'ours tok/s':>12} {'peer tok/s':>12} {'speedup':>8} {'packed tok/s':>13}"
        f" {'pad unpacked':>13} {'pad packed':>11}"
    )
    for n, speeds in report["tokens_per_s"].items():
        pad = report["padding_fraction"][n]
        print(
            f"{n:>7} {speeds['ours']:>12,.0f} {speeds['peer']:>12,.0f} {report['speedup_by_max_len'][n]:>8.2f}"
            f" {speeds['ours_packed']:>13,.0f} {pad['unpacked']:>13.3f} {pad['packed']:>11.3f}"
        )
    for n, run_ in report["runs"].items():
        print(f"masking at max_len {n}: {run_['masking']}")


if __name__ == "__main__":
    main()
