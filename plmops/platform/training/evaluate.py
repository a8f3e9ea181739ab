"""Held-out scores of a pretraining objective: the loss and accuracy of each head that has targets.

Sums are weighted by the number of predictions, not by batch, so a small last batch counts for what
it holds; the masking is the objective's own (seeded), so two evaluations of the same model agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100
# head name → (label key in a batch, positions key, logits field of the model output)
_HEADS = {
    "mlm": ("labels", "masked_positions", "prediction_logits"),
    "pointer": ("pointer_labels", "pointer_positions", "pointer_logits"),
    "sop": ("sentence_order_label", "sop_positions", "seq_relationship_logits"),  # one label per row
}


def _targets(batch: Mapping[str, Any], labels_key: str, positions_key: str) -> torch.Tensor:
    """Targets in the order the model scores them: at the given positions, else where labels != -100."""
    labels = batch[labels_key]
    positions = batch.get(positions_key)
    if labels.dim() == 1:
        return labels
    mask = positions if positions is not None else labels != IGNORE_INDEX
    return labels[mask]


@torch.no_grad()
def evaluate_pretraining(
    model: nn.Module, batches: Iterable[Mapping[str, Any]], max_batches: int | None = None
) -> dict[str, float]:
    """`{head}_loss`, `{head}_accuracy` and `{head}_predictions` for mlm / pointer / sop over the batches.

    Raises when no batch held a target: a held-out slice too small to score is a configuration error,
    not a zero.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals: dict[str, list[float]] = {}
    try:
        for index, batch in enumerate(batches):
            if max_batches is not None and index >= max_batches:
                break
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            output = model(**batch)
            for head, (labels_key, positions_key, logits_key) in _HEADS.items():
                logits = getattr(output, logits_key, None)
                if labels_key not in batch or logits is None:
                    continue
                targets = _targets(batch, labels_key, positions_key).to(logits.device)
                keep = targets != IGNORE_INDEX
                logits, targets = logits.reshape(-1, logits.shape[-1])[keep], targets[keep]
                loss = F.cross_entropy(logits.float(), targets, reduction="sum")
                correct = (logits.argmax(-1) == targets).sum()
                sums = totals.setdefault(head, [0.0, 0.0, 0.0])
                sums[0] += loss.item()
                sums[1] += correct.item()
                sums[2] += targets.numel()
    finally:
        model.train(was_training)
    scores = {}
    for head, (loss, correct, count) in totals.items():
        if count:
            scores |= {f"{head}_loss": loss / count, f"{head}_accuracy": correct / count, f"{head}_predictions": count}
    if not scores:
        raise ValueError("evaluate_pretraining: the held-out batches hold no prediction targets")
    return scores
