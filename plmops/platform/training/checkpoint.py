"""Resumable training checkpoints over a small key/value storage protocol.

Layout under the storage root, one folder per checkpoint:

    step-000100/model/config.json, model.safetensors   (save_pretrained: from_pretrained opens it)
    step-000100/optimizer.pt, scheduler.pt              (state dicts)
    step-000100/ranks.pt                                (per rank: RNG states and data position)
    step-000100/trainer.json                            (config and step; written last = complete)
    latest                                              (text: the newest complete folder)

`latest` is replaced only after its folder is complete, and every write is atomic, so a run killed at
any moment resumes from the last whole checkpoint. The storage is duck-typed (the `Storage` protocol):
callers pass plmops.infra's storage (`open_storage("ckpt/")` or `open_storage("s3://bucket/run")`).
Everything is read back with `torch.load(weights_only=True)`: no pickled code runs on resume.
"""

from __future__ import annotations

import io
import json
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from torch import nn

LATEST = "latest"
_FOLDER = re.compile(r"^step-(\d{6,})$")


class Storage(Protocol):
    """What a checkpointer needs from a store: flat string keys with `/` separators."""

    def write_bytes(self, key: str, data: bytes) -> None: ...  # atomic: old or new, never a mix
    def read_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...


def capture_rng() -> dict[str, Any]:
    """Every RNG a training step draws from, in a form `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Restored:
    """What a loaded checkpoint hands back beyond the states it loaded in place."""

    step: int
    config: dict[str, Any]
    ranks: list[dict[str, Any]]  # per rank: {"rng": ..., "data": data.state_dict()}


def _to_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _from_bytes(data: bytes, where: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"checkpoint {where}: cannot be loaded with weights_only=True ({error})") from error


class Checkpointer:
    """Writes and reads `step-NNNNNN/` checkpoints, keeping the newest `keep_last` complete ones."""

    def __init__(self, storage: Storage, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"Checkpointer.keep_last must be >= 1, got {keep_last}")
        self.storage = storage
        self.keep_last = keep_last

    @staticmethod
    def folder(step: int) -> str:
        return f"step-{step:06d}"

    def latest(self) -> str | None:
        """The newest complete checkpoint folder, or None before the first one."""
        if not self.storage.exists(LATEST):
            return None
        return self.storage.read_bytes(LATEST).decode().strip()

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        ranks: list[dict[str, Any]],
        config: dict[str, Any],
    ) -> str:
        """Write a checkpoint, point `latest` at it, prune old ones; returns its folder."""
        folder = self.folder(step)
        self.storage.delete_prefix(folder + "/")  # leftovers of a save that crashed half-way
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    self.storage.write_bytes(
                        f"{folder}/model/{path.relative_to(tmp).as_posix()}", path.read_bytes()
                    )
        self.storage.write_bytes(f"{folder}/optimizer.pt", _to_bytes(optimizer.state_dict()))
        self.storage.write_bytes(f"{folder}/scheduler.pt", _to_bytes(scheduler.state_dict()))
        self.storage.write_bytes(f"{folder}/ranks.pt", _to_bytes(ranks))
        self.storage.write_bytes(
            f"{folder}/trainer.json", json.dumps({"step": step, "config": config}).encode()
        )
        self.storage.write_bytes(LATEST, folder.encode())
        self._prune(step)
        return folder

    def load(
        self,
        folder: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> Restored:
        """Load weights, optimizer and scheduler in place; return step, config and per-rank states."""
        if not self.storage.exists(f"{folder}/trainer.json"):
            raise FileNotFoundError(f"checkpoint {folder!r} is missing or incomplete (no trainer.json)")
        shards = [k for k in self.storage.list(f"{folder}/model/") if k.endswith(".safetensors")]
        weights = {n: t for k in shards for n, t in load_safetensors(self.storage.read_bytes(k)).items()}
        _load_weights(model, weights, folder)
        optimizer.load_state_dict(
            _from_bytes(self.storage.read_bytes(f"{folder}/optimizer.pt"), f"{folder}/optimizer.pt")
        )
        scheduler.load_state_dict(
            _from_bytes(self.storage.read_bytes(f"{folder}/scheduler.pt"), f"{folder}/scheduler.pt")
        )
        ranks = _from_bytes(self.storage.read_bytes(f"{folder}/ranks.pt"), f"{folder}/ranks.pt")
        meta = json.loads(self.storage.read_bytes(f"{folder}/trainer.json"))
        return Restored(step=int(meta["step"]), config=meta["config"], ranks=ranks)

    def completed(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        steps = set()
        for key in self.storage.list("step-"):
            head, _, rest = key.partition("/")
            match = _FOLDER.match(head)
            if match and rest == "trainer.json":
                steps.add(int(match.group(1)))
        return sorted(steps)

    def _prune(self, step: int) -> None:
        """Drop every folder up to `step` except the newest `keep_last` complete ones (half-written
        folders of crashed saves included); folders past `step` belong to no run of ours and stay."""
        keep = set(self.completed()[-self.keep_last :])
        folders = {
            m.group(1) for k in self.storage.list("step-") if (m := _FOLDER.match(k.partition("/")[0]))
        }
        for digits in sorted(folders):
            if int(digits) <= step and int(digits) not in keep:
                self.storage.delete_prefix(f"step-{digits}/")


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], folder: str) -> None:
    """Strict load, except for keys save_pretrained dropped because they share storage with a saved
    one (the MLM decoder tied to the word embeddings)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    saved_storage = {own[k].untyped_storage().data_ptr() for k in state if k in own}
    untied = [k for k in missing if own[k].untyped_storage().data_ptr() not in saved_storage]
    if untied or unexpected:
        raise ValueError(
            f"checkpoint {folder}: weights do not fit the model (missing {untied}, unexpected {unexpected})"
        )
