"""Resumable training checkpoints over a small key/value storage protocol.

Layout under the storage root, one folder per checkpoint:

    step-000100/model/config.json, model.safetensors   (save_pretrained: from_pretrained opens it)
    step-000100/optimizer.pt, scheduler.pt              (state dicts; the optimizer's by parameter name)
    step-000100/ranks.pt                                (per rank: RNG states and data position)
    step-000100/trainer.json                            (config and step; written last = complete)
    latest                                              (text: the newest complete folder)

`latest` is replaced only after its folder is complete, and every write is atomic, so a run killed at
any moment resumes from the last whole checkpoint. Weights and optimizer state are stored whole and keyed
by parameter name whether the run was plain, DDP or FSDP (sharded), so a checkpoint written in one mode
resumes in another. The storage is duck-typed (the `Storage` protocol): callers pass plmops.infra's
storage (`open_storage("ckpt/")` or `open_storage("s3://bucket/run")`).
Everything is read back with `torch.load(weights_only=True)`: no pickled code runs on resume.
"""

from __future__ import annotations

import io
import json
import random
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load as load_safetensors
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

LATEST = "latest"
_FOLDER = re.compile(r"^step-(\d{6,})$")
# Whole tensors on the CPU: gathered from the shards under FSDP (rank 0 receives them), copied otherwise.
_WHOLE = StateDictOptions(full_state_dict=True, cpu_offload=True)


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
        """Write a checkpoint, point `latest` at it, prune old ones; returns its folder.

        In a distributed run every rank calls it (gathering FSDP shards is a collective); rank 0 writes."""
        folder = self.folder(step)
        if not is_sharded(model) and _rank() != 0:
            return folder
        weights, optimizer_state = whole_states(model, optimizer)
        if _rank() != 0:
            return folder
        self.storage.delete_prefix(folder + "/")  # leftovers of a save that crashed half-way
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    self.storage.write_bytes(
                        f"{folder}/model/{path.relative_to(tmp).as_posix()}", path.read_bytes()
                    )
        self.storage.write_bytes(f"{folder}/optimizer.pt", _to_bytes(optimizer_state))
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
        """Load weights, optimizer and scheduler in place (every rank calls it; an FSDP rank keeps its
        shard of the whole tensors); return step, config and per-rank states."""
        if not self.storage.exists(f"{folder}/trainer.json"):
            raise FileNotFoundError(f"checkpoint {folder!r} is missing or incomplete (no trainer.json)")
        shards = [k for k in self.storage.list(f"{folder}/model/") if k.endswith(".safetensors")]
        weights = {n: t for k in shards for n, t in load_safetensors(self.storage.read_bytes(k)).items()}
        _load_weights(model, weights, folder)
        optimizer_state = _from_bytes(
            self.storage.read_bytes(f"{folder}/optimizer.pt"), f"{folder}/optimizer.pt"
        )
        _load_optimizer(model, optimizer, optimizer_state, f"{folder}/optimizer.pt")
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


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_sharded(model: nn.Module) -> bool:
    """True once FSDP has split the model's parameters into per-rank shards (DTensors)."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def whole_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with whole tensors on the CPU, for a plain, DDP or FSDP model alike.
    A collective under FSDP: every rank calls it and only rank 0 receives the tensors."""
    weights = get_model_state_dict(model, options=_WHOLE)
    for names in _aliases(model):
        # Gathering gives each name of a tied weight its own copy; one tensor again, so that
        # save_pretrained drops the alias exactly as it does for a plain model.
        if names[0] in weights:
            weights.update({name: weights[names[0]] for name in names[1:]})
    return weights


def whole_states(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """`whole_weights` and the optimizer state keyed by parameter name (not by position), so that a
    checkpoint of a DDP run resumes under FSDP and back. A collective under FSDP, like `whole_weights`."""
    return whole_weights(model), get_optimizer_state_dict(model, optimizer, options=_WHOLE)


def _aliases(model: nn.Module) -> list[list[str]]:
    """The names of each parameter registered under several (the MLM decoder and the word embeddings)."""
    names: dict[int, list[str]] = defaultdict(list)
    for name, param in model.named_parameters(remove_duplicate=False):
        names[id(param)].append(name)
    return [group for group in names.values() if len(group) > 1]


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], folder: str) -> None:
    """Strict load, except for keys save_pretrained dropped because they alias a saved one (the MLM
    decoder tied to the word embeddings): those take the saved tensor."""
    for names in _aliases(model):
        saved = next((state[name] for name in names if name in state), None)
        if saved is not None:
            state.update({name: saved for name in names})
    expected = list(model.state_dict())
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {folder}: weights do not fit the model (missing {missing}, unexpected {unexpected})"
        )
    # In the model's order: under FSDP every key is scattered in turn, and safetensors hands the keys
    # back in a different order in each process.
    ordered = {name: state[name] for name in expected}
    set_model_state_dict(model, ordered, options=StateDictOptions(full_state_dict=True))


def _load_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, where: str) -> None:
    try:
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    except (KeyError, ValueError, RuntimeError) as error:
        raise ValueError(f"checkpoint {where}: optimizer state does not fit the model ({error!r})") from error
