"""Fine-tuning and inference throughput: the plmops fine-tuning engine vs transformers' `Trainer`.

    python benchmarks/eval_throughput.py [--shared-data ../shared/data] [--task configs/eval/ocnli.yaml]

Same work for both, in one process: a real classification task from the shared data (OCNLI sentence
pairs by default: a seeded 6,000 of train.10k for one epoch, the 2,950 labelled pairs of the public dev
set as test), read by `read_split` and tokenised once by `encode_classification` (same max_length, same
longest_first truncation), so both get the very same token ids. The model is a tiny but real plmops encoder with a fresh classification head
(`PlmopsForSequenceClassification`, 2 layers x 128, identical initial weights), its WordPiece trained on
the shared raw Chinese corpus. Batch size, epochs, lr, warm-up steps, weight decay, gradient clipping,
seed and torch threads (one by default: on a shared 2-core box two intra-op threads were up to 10x
slower and far noisier) are the same. What differs is the loop and the batching, which is measured:

- ours: `engine.fit` (length-bucketed shuffled batches, each padded to its own longest row) and
  `engine.predict_rows` (rows sorted by length), as `run_task` calls them. Its AdamW is torch's foreach
  one on CPU (it asks for the fused kernels on CUDA only), where the peer's default is the fused one.
- peer: the standard recipe: `transformers.Trainer` + `DataCollatorWithPadding` on the same encoded
  rows (random batches padded to their longest row), `use_cpu=True`, `report_to=[]`, no saving, no
  evaluation during training, `dataloader_num_workers=0`, its default optimizer (fused AdamW) and
  default logging (the progress bar is off: in the peer's favour); `trainer.predict` for inference.
- peer_grouped: the same Trainer with `train_sampling_strategy="group_by_length"`, Trainer's own length
  grouping (for training and prediction): the fairest peer to a length-bucketing loop, kept beside the
  headline. Its predictions come back in sampler order, so the test set carries its labels and accuracy
  is read against the returned label_ids (the same for all peers; the loss it adds is negligible).

Metric: training examples/s over the optimizer steps after the first `--warmup-steps` (one global
optimizer step hook and one forward pre-hook, the same functions for every run), and inference
examples/s of one full prediction of the test split after an untimed warm-up prediction (best of
`--infer-repeats`). The box is shared, so the runs alternate `--repeats` times and the fastest of each
counts (all are kept). Sanity, equal work: the mean training loss of the last steps and the test
accuracy of each run (same data, model and recipe, so they must be close; the batch order differs).

Writes benchmarks/results/eval_throughput.json with `speedup` = peer training time / ours for the same
examples (> 1: we are faster), `inference_speedup` likewise for prediction, the same two against
peer_grouped, and the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plmops.platform.finetune.classification import encode_classification
from plmops.platform.finetune.datasets import ClassificationExample, read_split, resolve_labels
from plmops.platform.finetune.engine import INFERENCE_BATCH_FACTOR, Rows, fit, predict_rows
from plmops.platform.finetune.taskspec import HyperParameters, TaskSpec, load_task
from plmops.platform.models import PlmopsConfig, PlmopsForSequenceClassification
from plmops.platform.tokenization import PlmopsTokenizer, train_wordpiece

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "eval_throughput.json"
CORPUS = ("cmrc2018_dev_trial_contexts.txt", "tnews_unlabeled_titles.txt")
MODEL = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 512,
    "max_position_embeddings": 512,
}
WARMUP_RATIO = 0.1
WEIGHT_DECAY = 0.01
LOSS_TAIL = 50  # training steps whose mean loss is the sanity figure
PEERS = {"peer": "random", "peer_grouped": "group_by_length"}


def cpu_model() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return None
    names = [
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
    ]
    return names[0] if names else None


def train_tokenizer(shared: Path) -> PlmopsTokenizer:
    texts = [
        line
        for name in CORPUS
        for line in (shared / "raw_zh_corpus" / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    return train_wordpiece(texts)


def load_examples(
    spec: TaskSpec, shared: Path, train_examples: int, seed: int
) -> tuple[list[ClassificationExample], list[ClassificationExample], list[str]]:
    """Train and test examples; a seeded subset of `train_examples` of train (in file order) unless 0."""
    train, _ = read_split(spec, "train", shared)
    test, _ = read_split(spec, "test", shared)
    if 0 < train_examples < len(train):
        keep = sorted(random.Random(seed).sample(range(len(train)), train_examples))
        train = [train[i] for i in keep]
    return train, test, resolve_labels(spec, shared)


def build_model(tokenizer: PlmopsTokenizer, labels: list[str], seed: int) -> PlmopsForSequenceClassification:
    torch.manual_seed(seed)  # identical initial weights for every run
    config = PlmopsConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="single_label_classification",
        **MODEL,
    )
    return PlmopsForSequenceClassification(config)


class Meter:
    """Rows, real tokens and loss of every training forward, and the clock after every optimizer step."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.rows: list[int] = []
        self.tokens: list[int] = []
        self.cells: list[int] = []  # rows x padded width: what the model computes on
        self.losses: list[float] = []
        self.step_ends: list[float] = []
        self._handles = [
            model.register_forward_pre_hook(self._inputs, with_kwargs=True),
            model.register_forward_hook(self._loss),
            register_optimizer_step_post_hook(self._step),
        ]

    def _inputs(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if module.training:
            self.rows.append(kwargs["input_ids"].shape[0])
            self.tokens.append(int(kwargs["attention_mask"].sum()))
            self.cells.append(kwargs["input_ids"].numel())

    def _loss(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        if module.training:
            self.losses.append(float(output.loss.detach()))

    def _step(self, *_args: Any) -> None:
        self.step_ends.append(time.perf_counter())

    def summary(self, warmup: int) -> dict[str, float]:
        for handle in self._handles:
            handle.remove()
        steps = len(self.step_ends)
        if not 0 < warmup < steps or len(self.rows) != steps:
            raise RuntimeError(f"{steps} optimizer steps for {len(self.rows)} forwards, warm-up {warmup}")
        seconds = self.step_ends[-1] - self.step_ends[warmup - 1]
        rows = sum(self.rows[warmup:])
        return {
            "steps": steps,
            "timed_steps": steps - warmup,
            "timed_examples": rows,
            "timed_seconds": seconds,
            "train_examples_per_s": rows / seconds,
            "padding_fraction": 1 - sum(self.tokens) / sum(self.cells),
            "final_loss": float(np.mean(self.losses[-LOSS_TAIL:])),
        }


def time_inference(predict: Callable[[bool], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    """Seconds of the fastest full prediction after one untimed warm-up, and its predicted ids."""
    predict(True)
    best, ids = math.inf, np.empty(0)
    for _ in range(repeats):
        start = time.perf_counter()
        ids = predict(False)
        best = min(best, time.perf_counter() - start)
    return best, ids


def run_ours(
    train: Rows,
    test: Rows,
    gold: np.ndarray,
    model: torch.nn.Module,
    hp: HyperParameters,
    args: argparse.Namespace,
    pad_id: int,
) -> dict:
    meter = Meter(model)
    start = time.perf_counter()
    fitted = fit(model, train, hp, args.seed, pad_id)
    wall = time.perf_counter() - start
    result = meter.summary(args.warmup_steps) | {
        "fit_wall_s": wall,
        "fit_train_seconds": fitted.train_seconds,
    }
    warm = Rows(test.input_ids[: 2 * args.batch_size], test.token_type_ids[: 2 * args.batch_size])

    def predict(warm_up: bool) -> np.ndarray:
        rows = warm if warm_up else test
        out = predict_rows(
            model,
            rows,
            args.batch_size * INFERENCE_BATCH_FACTOR,
            pad_id,
            lambda o: o.logits.argmax(-1),
            False,
        )
        return np.asarray(out)

    seconds, ids = time_inference(predict, args.infer_repeats)
    return result | inference_summary(seconds, ids, gold)


def inference_summary(seconds: float, predicted: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    return {
        "infer_seconds": seconds,
        "infer_examples_per_s": len(gold) / seconds,
        "test_accuracy": float((predicted == gold).mean()),
    }


def peer_features(rows: Rows) -> list[dict[str, Any]]:
    """The encoded rows as a tokenizer would hand them to `DataCollatorWithPadding`."""
    return [
        {"input_ids": ids, "token_type_ids": types, "attention_mask": [1] * len(ids), "labels": label}
        for ids, types, label in zip(rows.input_ids, rows.token_type_ids, rows.targets["labels"])
    ]


def run_peer(
    strategy: str,
    train: Rows,
    test: Rows,
    model: torch.nn.Module,
    hp: HyperParameters,
    args: argparse.Namespace,
    tokenizer: PlmopsTokenizer,
    out: Path,
) -> dict:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    steps = math.ceil(len(train) / hp.batch_size) * hp.epochs
    training_args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=hp.epochs,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size * INFERENCE_BATCH_FACTOR,
        learning_rate=hp.lr,
        warmup_steps=round(hp.warmup_ratio * steps),  # the count `engine.fit` uses
        lr_scheduler_type="linear",
        weight_decay=hp.weight_decay,
        max_grad_norm=1.0,
        train_sampling_strategy=strategy,
        seed=args.seed,
        data_seed=args.seed,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=peer_features(train),
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    meter = Meter(model)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    result = meter.summary(args.warmup_steps) | {"fit_wall_s": wall, "optimizer": training_args.optim}
    features = peer_features(test)
    warm = features[: 2 * args.batch_size]
    gold: list[np.ndarray] = []

    def predict(warm_up: bool) -> np.ndarray:
        output = trainer.predict(warm if warm_up else features)
        gold.append(output.label_ids)
        return output.predictions.argmax(-1)

    expected = sorted(test.targets["labels"])

    seconds, ids = time_inference(predict, args.infer_repeats)
    if len(ids) != len(expected) or sorted(gold[-1].tolist()) != expected:
        raise RuntimeError(f"trainer.predict returned {len(ids)} rows for {len(expected)} test rows")
    return result | inference_summary(seconds, ids, gold[-1])


def best(runs: list[dict], key: str) -> float:
    return max(r[key] for r in runs)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--task", type=Path, default=REPO / "configs" / "eval" / "ocnli.yaml")
    parser.add_argument("--train-examples", type=int, default=6000, help="seeded subset of train; 0: all")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="a fresh tiny encoder needs more than 3e-5")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, all runs")
    parser.add_argument(
        "--warmup-steps", type=int, default=10, help="first optimizer steps left out of the timing"
    )
    parser.add_argument(
        "--infer-repeats", type=int, default=2, help="timed predictions per run; the fastest counts"
    )
    parser.add_argument("--repeats", type=int, default=2, help="alternated runs of each; the fastest counts")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    spec = load_task(args.task)
    if spec.type not in ("classification", "pair_classification"):
        sys.exit(f"eval_throughput: {args.task} is a {spec.type} task; a classification task is needed")
    hp = HyperParameters(
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        warmup_ratio=WARMUP_RATIO,
        weight_decay=WEIGHT_DECAY,
        seeds=[args.seed],
    )
    tokenizer = train_tokenizer(args.shared_data)
    train, test, labels = load_examples(spec, args.shared_data, args.train_examples, args.seed)
    label2id = {label: i for i, label in enumerate(labels)}
    encoded_train = encode_classification(train, tokenizer, hp.max_length, label2id)
    encoded_test = encode_classification(test, tokenizer, hp.max_length, label2id)
    train_rows, test_rows = encoded_train.rows, encoded_test.rows
    steps = math.ceil(len(train_rows) / hp.batch_size) * hp.epochs
    if not 0 < args.warmup_steps < steps - LOSS_TAIL:
        sys.exit(
            f"eval_throughput: --warmup-steps must lie in (0, {steps - LOSS_TAIL}), got {args.warmup_steps}"
        )
    gold = np.asarray(test_rows.targets["labels"])

    runs: dict[str, list[dict]] = {"ours": [], **{name: [] for name in PEERS}}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # alternated, so load from other users of the box hits every run
            for name, strategy in PEERS.items():
                model = build_model(tokenizer, labels, args.seed)
                runs[name].append(
                    run_peer(strategy, train_rows, test_rows, model, hp, args, tokenizer, Path(tmp))
                )
            model = build_model(tokenizer, labels, args.seed)
            runs["ours"].append(
                run_ours(train_rows, test_rows, gold, model, hp, args, tokenizer.pad_token_id)
            )
            if torch.get_num_threads() != args.threads:
                sys.exit(f"eval_throughput: torch threads changed to {torch.get_num_threads()} during a run")
    counts = {"train": encoded_train.counts, "test": encoded_test.counts}
    report = build_report(args, spec, hp, tokenizer, counts, train_rows, gold, runs)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print_table(runs, report)


def build_report(
    args: argparse.Namespace,
    spec: TaskSpec,
    hp: HyperParameters,
    tokenizer: PlmopsTokenizer,
    counts: dict[str, dict[str, int]],
    train_rows: Rows,
    gold: np.ndarray,
    runs: dict[str, list[dict]],
) -> dict:
    import transformers

    train_rate = {name: best(rs, "train_examples_per_s") for name, rs in runs.items()}
    infer_rate = {name: best(rs, "infer_examples_per_s") for name, rs in runs.items()}
    return {
        "benchmark": "eval_throughput",
        "machine": {
            "node": platform.node(),
            "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "task": {
            "name": spec.name,
            "type": spec.type,
            "file": str(args.task.resolve().relative_to(REPO))
            if args.task.resolve().is_relative_to(REPO)
            else str(args.task),
            "train_examples": counts["train"]["examples"],
            "test_examples": counts["test"]["examples"],
            "truncated": {split: c["truncated"] for split, c in counts.items()},
            "mean_train_tokens": float(np.mean(train_rows.lengths())),
        },
        "tokenizer": f"train_wordpiece on raw_zh_corpus ({', '.join(CORPUS)}), {len(tokenizer)} ids",
        "model": f"PlmopsForSequenceClassification (all runs) {MODEL['num_hidden_layers']}x{MODEL['hidden_size']}, "
        f"{MODEL['num_attention_heads']} heads, ffn {MODEL['intermediate_size']}, fresh head, same init",
        "settings": {
            "max_length": hp.max_length,
            "truncation": "longest_first (encode_classification), one encoding shared by all runs",
            "batch_size": hp.batch_size,
            "inference_batch_size": hp.batch_size * INFERENCE_BATCH_FACTOR,
            "epochs": hp.epochs,
            "lr": hp.lr,
            "warmup_ratio": hp.warmup_ratio,
            "weight_decay": hp.weight_decay,
            "max_grad_norm": 1.0,
            "schedule": "linear",
            "seed": args.seed,
            "precision": "fp32",
            "timed_after_step": args.warmup_steps,
            "infer_repeats": args.infer_repeats,
        },
        "ours": "engine.fit (length-bucketed shuffled batches) + engine.predict_rows (length-sorted); "
        "torch AdamW, foreach on CPU (engine.fit fuses it on CUDA only)",
        "peer": "transformers.Trainer + DataCollatorWithPadding, random batches, default optimizer, "
        "trainer.predict; use_cpu, report_to=[], no saving, no eval, dataloader_num_workers=0, tqdm off",
        "peer_grouped": "the peer with train_sampling_strategy='group_by_length' (LengthGroupedSampler, "
        "training and prediction)",
        "repeats": args.repeats,
        "train_examples_per_s": train_rate,
        "infer_examples_per_s": infer_rate,
        "test_majority_accuracy": float(np.bincount(gold).max() / len(gold)),
        "test_accuracy": {name: [r["test_accuracy"] for r in rs] for name, rs in runs.items()},
        "final_loss": {name: [r["final_loss"] for r in rs] for name, rs in runs.items()},
        "speedup": train_rate["ours"] / train_rate["peer"],
        "inference_speedup": infer_rate["ours"] / infer_rate["peer"],
        "speedup_vs_grouped": train_rate["ours"] / train_rate["peer_grouped"],
        "inference_speedup_vs_grouped": infer_rate["ours"] / infer_rate["peer_grouped"],
        "all_runs": runs,
    }


def print_table(runs: dict[str, list[dict]], report: dict) -> None:
    print(
        f"{'run':<13} {'train ex/s':>10} {'infer ex/s':>10} {'padding':>8} {'loss':>7} {'test acc':>9} {'fit wall s':>10}"
    )
    for name, rs in runs.items():
        for r in rs:
            print(
                f"{name:<13} {r['train_examples_per_s']:>10,.0f} {r['infer_examples_per_s']:>10,.0f}"
                f" {r['padding_fraction']:>8.1%} {r['final_loss']:>7.3f} {r['test_accuracy']:>9.1%}"
                f" {r['fit_wall_s']:>10.1f}"
            )
    print(f"test majority-class accuracy {report['test_majority_accuracy']:.1%}")
    print(
        f"speedup (best ours / best peer): training {report['speedup']:.2f}x, inference "
        f"{report['inference_speedup']:.2f}x; vs peer_grouped: training {report['speedup_vs_grouped']:.2f}x, "
        f"inference {report['inference_speedup_vs_grouped']:.2f}x"
    )


if __name__ == "__main__":
    main()
