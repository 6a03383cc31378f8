"""The classifier: encoder + topic/sentiment heads, checkpoint IO, batched predictor.

See ``docs/classifier.md``. Typical use::

    loaded = load_checkpoint("runs/models/v1")
    predictor = Predictor(loaded.model, loaded.tokenizer, loaded.meta.version)
    predictor.predict(["Fed hikes rates again"])[0].sentiment
"""

from monitor.model.backbone import default_backbone, tiny_backbone
from monitor.model.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    LoadedModel,
    load_checkpoint,
    new_version_id,
    save_checkpoint,
)
from monitor.model.network import MultiTaskClassifier, freeze, mean_pool
from monitor.model.predictor import Predictor, PredictStats, Scored, resolve_device

__all__ = [
    "CheckpointError",
    "CheckpointMeta",
    "LoadedModel",
    "MultiTaskClassifier",
    "PredictStats",
    "Predictor",
    "Scored",
    "default_backbone",
    "freeze",
    "load_checkpoint",
    "mean_pool",
    "new_version_id",
    "resolve_device",
    "save_checkpoint",
    "tiny_backbone",
]
