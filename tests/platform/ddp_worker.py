"""Tiny-model helpers for the trainer tests, and the worker they launch under torchrun.

    python -m torch.distributed.run --nproc_per_node 2 tests/platform/ddp_worker.py --steps 4 --out out.json --storage ckpt/

Rank r trains on global batches r, r+2, r+4, ... so that two ranks see, per step, exactly the micro-batches
a single process sees with grad_accum = 2 x the ranks' grad_accum.

With `--stop-at K` the worker trains in one process group: straight through without checkpoints; then
twice stopped by the flag set on rank 0 at step K and resumed from the checkpoint to the end, once
stopped under `--parallel` itself (into `<storage>/same`) and once under the other mode (`<storage>/other`),
resumed under `--parallel` both times. It writes the three loss curves to `--out`, and rank 0 saves the
final whole weights (`Trainer.whole_model()`) of the straight and the same-mode resumed run next to it
as `<out>.pt`: {"straight": state dict, "resumed": state dict}.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from plmops.infra.storage import open_storage
from plmops.platform.models import PlmopsConfig, PlmopsForMaskedLM
from plmops.platform.training.trainer import TrainConfig, Trainer, init_distributed

VOCAB = 100


def tiny_model(dropout: float = 0.0) -> PlmopsForMaskedLM:
    """Hidden 32, 2 layers; the same weights every call (seeded)."""
    torch.manual_seed(0)
    config = PlmopsConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return PlmopsForMaskedLM(config)


def synthetic_batches(n: int, rows: int = 4, seq: int = 16, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Packed MLM batches shaped like BatchMaker's: input_ids, document_ids (0 = padding), labels."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        lengths = torch.randint(seq // 2, seq + 1, (rows,), generator=g)
        cut = torch.randint(2, seq // 2, (rows,), generator=g)
        col = torch.arange(seq)
        document_ids = torch.where(col < cut[:, None], 1, 2) * (col < lengths[:, None])
        input_ids = torch.randint(5, VOCAB, (rows, seq), generator=g) * (document_ids != 0)
        chosen = (torch.rand(rows, seq, generator=g) < 0.3) & (document_ids != 0)
        chosen[:, 1] = True
        labels = torch.where(chosen, input_ids, -100)
        batches.append(
            {"input_ids": torch.where(chosen, 4, input_ids), "document_ids": document_ids, "labels": labels}
        )
    return batches


class ListStream:
    """A resumable batch stream over a list: its state is the index of the next batch."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches = batches
        self.position = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while self.position < len(self.batches):
            self.position += 1
            yield self.batches[self.position - 1]

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--storage", type=Path, required=True)
    parser.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp")
    parser.add_argument("--optimizer", choices=("adamw", "lamb"), default="adamw")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--stop-at", type=int, default=None)
    return parser.parse_args()


class Run:
    """A trainer on a fresh tiny model and this rank's slice of the batches; losses as rank 0 reports them."""

    def __init__(
        self,
        args: argparse.Namespace,
        rank: int,
        world: int,
        storage: Path | None,
        parallel: str | None = None,
        stop_at: int | None = None,
    ) -> None:
        self.losses: list[float] = []
        self.stop_at = stop_at
        config = TrainConfig(
            steps=args.steps,
            lr=1e-3,
            warmup_steps=1,
            log_every=1,
            grad_accum=args.grad_accum,
            optimizer=args.optimizer,
            max_grad_norm=args.max_grad_norm,
            activation_checkpointing=args.activation_checkpointing,
            parallel=parallel or args.parallel,
        )
        batches = synthetic_batches(world * args.steps * args.grad_accum)[rank::world]
        self.trainer = Trainer(
            tiny_model(),
            ListStream(batches),
            config,
            storage=None if storage is None else open_storage(str(storage)),
            on_metrics=self.on_metrics,
        )

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.losses.append(metrics["loss"])
        if step == self.stop_at:
            self.trainer.stop.set()  # on rank 0 only: every rank must still stop at this step


def main() -> None:
    args = parse_args()
    rank, world = init_distributed()
    if args.stop_at is None:
        run = Run(args, rank, world, args.storage)
        result = run.trainer.fit()
        report = {"losses": run.losses, "world": world, "step": result.step}
    else:
        report, weights = stop_and_resume(args, rank, world)
        if rank == 0:
            torch.save(weights, args.out.with_suffix(".pt"))
    if rank == 0:
        args.out.write_text(json.dumps(report))
    torch.distributed.destroy_process_group()


def stop_and_resume(args: argparse.Namespace, rank: int, world: int) -> tuple[dict[str, Any], dict[str, Any]]:
    straight = Run(args, rank, world, None)
    straight.trainer.fit()
    report: dict[str, Any] = {"world": world, "losses": straight.losses}
    other = "ddp" if args.parallel == "fsdp" else "fsdp"
    resumed = {}
    for name, parallel in (("same", args.parallel), ("other", other)):
        stopped = Run(args, rank, world, args.storage / name, parallel=parallel, stop_at=args.stop_at)
        first = stopped.trainer.fit()
        resumed[name] = Run(args, rank, world, args.storage / name)
        report["step"] = resumed[name].trainer.fit(resume="auto").step
        report[name] = {
            "losses": stopped.losses + resumed[name].losses,
            "stopped": [first.step, first.preempted],
        }
    whole = {"straight": straight.trainer.whole_model(), "resumed": resumed["same"].trainer.whole_model()}
    return report, {k: None if m is None else m.state_dict() for k, m in whole.items()}


if __name__ == "__main__":
    main()
