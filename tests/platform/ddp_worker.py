"""Tiny-model helpers for the trainer tests, and the worker they launch under torchrun.

    python -m torch.distributed.run --nproc_per_node 2 tests/platform/ddp_worker.py --steps 4 --out out.json --storage ckpt/

Rank r trains on global batches r, r+2, r+4, ... so that two ranks see, per step, exactly the two
micro-batches a single process sees with grad_accum=2.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--storage", type=Path, required=True)
    args = parser.parse_args()
    rank, world = init_distributed()
    losses: list[float] = []
    trainer = Trainer(
        tiny_model(),
        ListStream(synthetic_batches(world * args.steps)[rank::world]),
        TrainConfig(steps=args.steps, lr=1e-3, warmup_steps=1, log_every=1),
        storage=open_storage(str(args.storage)),
        on_metrics=lambda step, m: losses.append(m["loss"]),
    )
    result = trainer.fit()
    if rank == 0:
        args.out.write_text(json.dumps({"losses": losses, "world": world, "step": result.step}))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
