"""Optimizers and learning-rate schedules for pretraining.

LAMB (You et al., 2019, "Large Batch Optimization for Deep Learning") is Adam with a per-tensor trust
ratio ||w|| / ||update||: every layer moves by the same fraction of its own norm, which is what keeps
very large batches (BERT in 76 minutes) stable where plain Adam diverges. It is written here from the
paper's Algorithm 2; AdamW is PyTorch's own (fused kernels on CUDA).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

OPTIMIZERS = ("adamw", "lamb")
SCHEDULES = ("linear", "cosine")


class Lamb(torch.optim.Optimizer):
    """Layer-wise adaptive moments: an AdamW update scaled per tensor by ||w|| / ||update||.

    The trust ratio falls back to 1 when either norm is zero (freshly zeroed biases would otherwise
    never move). Bias correction follows Adam, so the first steps are not damped.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
    ) -> None:
        if lr <= 0 or eps <= 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(
                f"Lamb: need lr > 0, eps > 0, weight_decay >= 0 and betas in [0, 1); "
                f"got lr={lr}, eps={eps}, weight_decay={weight_decay}, betas={betas}"
            )
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                self._update(p, state, group["lr"], beta1, beta2, group["eps"], group["weight_decay"])
        return loss

    @staticmethod
    def _update(
        p: torch.Tensor, state: dict, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float
    ) -> None:
        grad, m, v = p.grad.float(), state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = float(state["step"])
        m_hat = m / (1 - beta1**step)
        v_hat = v / (1 - beta2**step)
        update = m_hat / (v_hat.sqrt() + eps)
        if weight_decay:
            update.add_(p.float(), alpha=weight_decay)
        w_norm, u_norm = p.float().norm(), update.norm()
        # Stays on the device (no .item()): a host sync per tensor would stall the GPU.
        trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
        p.add_((update * (-lr * trust)).to(p.dtype))


def _no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases and LayerNorm gains are not decayed (BERT's recipe): shrinking them only hurts."""
    return param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed and a non-decayed group (tied weights counted once)."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if _no_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    fused: bool = False,
) -> torch.optim.Optimizer:
    """AdamW (fused kernels when `fused`, i.e. on CUDA) or LAMB over BERT-style parameter groups."""
    groups = parameter_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr for the step after `step` completed ones: linear warm-up to 1 over
    `warmup_steps`, then linear or cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, schedule: str
) -> torch.optim.lr_scheduler.LambdaLR:
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, schedule)
    )
