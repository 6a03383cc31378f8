"""Learning: the training loop (``fit``), evaluation, loss terms, and the continual-learning parts.

The classifier-facing API is re-exported here; the continual-learning modules (replay buffer,
policy, gate, learner) are imported from their own modules.
"""

from monitor.learn.evaluate import ClassScores, EvalReport, HeadReport, evaluate
from monitor.learn.losses import IGNORE_INDEX, distillation_loss, masked_cross_entropy
from monitor.learn.trainer import EpochRecord, FitResult, TrainConfig, TrainingDiverged, fit

__all__ = [
    "IGNORE_INDEX",
    "ClassScores",
    "EpochRecord",
    "EvalReport",
    "FitResult",
    "HeadReport",
    "TrainConfig",
    "TrainingDiverged",
    "distillation_loss",
    "evaluate",
    "fit",
    "masked_cross_entropy",
]
