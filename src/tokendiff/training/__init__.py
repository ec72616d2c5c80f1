"""The training loop, optimizer schedule, checkpoints and resume."""

from tokendiff.training.trainer import Trainer, TrainResult

__all__ = ["Trainer", "TrainResult"]
