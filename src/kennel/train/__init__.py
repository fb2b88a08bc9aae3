"""The training run: :func:`~kennel.train.pipeline.train` reads top to bottom (load, split,
fit, evaluate, log, package, register/promote, report); :func:`run_training` is the same as a
job with its own folder and log file."""

from kennel.train.job import run_training
from kennel.train.outcome import ModelGate, TrainOutcome
from kennel.train.pipeline import train

__all__ = ["ModelGate", "TrainOutcome", "run_training", "train"]
