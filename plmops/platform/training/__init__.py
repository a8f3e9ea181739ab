"""Training: the resumable data stream (the trainer and optimiser live beside it)."""

from plmops.platform.training.data import MixedRows, ShuffledRows, StreamConfig, TrainingStream

__all__ = ["MixedRows", "ShuffledRows", "StreamConfig", "TrainingStream"]
