"""Training: recipes, the resumable data stream, the trainer (AdamW/LAMB, schedules, AMP, DDP), checkpoints."""

from plmops.platform.training.checkpoint import Checkpointer
from plmops.platform.training.data import MixedRows, ShuffledRows, StreamConfig, TrainingStream
from plmops.platform.training.recipe import PretrainRecipe, load_recipe
from plmops.platform.training.trainer import TrainConfig, Trainer, TrainResult, init_distributed

__all__ = [
    "Checkpointer",
    "MixedRows",
    "PretrainRecipe",
    "ShuffledRows",
    "StreamConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingStream",
    "init_distributed",
    "load_recipe",
]
