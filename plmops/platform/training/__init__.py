"""Training: the resumable data stream, the trainer (AdamW/LAMB, schedules, AMP, DDP) and checkpoints."""

from plmops.platform.training.checkpoint import Checkpointer
from plmops.platform.training.data import MixedRows, ShuffledRows, StreamConfig, TrainingStream
from plmops.platform.training.trainer import TrainConfig, Trainer, TrainResult, init_distributed

__all__ = [
    "Checkpointer",
    "MixedRows",
    "ShuffledRows",
    "StreamConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingStream",
    "init_distributed",
]
