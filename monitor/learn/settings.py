"""Settings of the online learner: the free mapping ``learning.settings`` parsed and validated.

Keys are flat (``learning.settings.detector``, ``learning.settings.min_new_labels``...) and grouped
here by the component they configure: drift detection, replay buffer, retrain policy, training
and the promotion gate. Unknown keys, wrong types and out-of-range values raise
``monitor.config.ConfigError`` naming the key; detector names and parameters are checked by
building the detector once.

    >>> s = parse_settings({"detector": "PageHinkley", "min_new_labels": 50})
    >>> s.drift.detector, s.policy.min_new_labels, s.train.method
    ('PageHinkley', 50, 'replay_distill')
    >>> parse_settings({"methd": "ewc"})
    Traceback (most recent call last):
    ...
    monitor.config.ConfigError: learning.settings.methd: unknown key (see docs/continual-learning.md)
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.config import ConfigError, field_docs
from monitor.drift.detectors import is_binary, make_detector
from monitor.drift.signals import LABEL_FREE_SIGNALS

__all__ = [
    "METHODS",
    "BufferSettings",
    "DriftSettings",
    "GateSettings",
    "LearnerSettings",
    "PolicySettings",
    "TrainSettings",
    "describe_settings",
    "parse_settings",
]

PREFIX = "learning.settings"
#: Training methods: what a retrain run trains on and how it protects old knowledge.
METHODS: tuple[str, ...] = ("replay_distill", "replay", "ewc", "naive")


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{PREFIX}.{key}: {message}")


@dataclass(frozen=True)
class DriftSettings:
    detector: str = "ADWIN"
    """River detector of the prequential error of each head (any class of river.drift or river.drift.binary)."""
    detector_params: Mapping[str, Any] = field(default_factory=dict)
    """Constructor parameters of that detector, e.g. {delta: 0.002}."""
    label_free_detector: str = "ADWIN"
    """River detector of each label-free signal (river.drift only: the signals are real-valued)."""
    label_free_detector_params: Mapping[str, Any] = field(default_factory=dict)
    """Constructor parameters of the label-free detector."""
    label_free_signals: tuple[str, ...] = ("confidence",)
    """Label-free signals watched: confidence (1 - confidence rising) and/or sentiment_mix."""
    accuracy_window: int = 200
    """Labels in the rolling prequential accuracy (monitor_prequential_accuracy{head})."""
    label_requests: int = 20
    """Most uncertain recent items published to the label-requests topic per label-free drift (0: none)."""
    label_request_pool: int = 1000
    """How many of the most recent predictions the label requests are chosen from."""
    join_cache_size: int = 20_000
    """Recent predictions (with their texts) kept to join late labels by id."""

    def __post_init__(self) -> None:
        make_detector(self.detector, self.detector_params, f"{PREFIX}.detector")
        make_detector(self.label_free_detector, self.label_free_detector_params, f"{PREFIX}.label_free_detector")
        _check(not is_binary(self.label_free_detector), "label_free_detector",
               f"{self.label_free_detector} is a binary (0/1) detector; label-free signals are real-valued")
        for name in self.label_free_signals:
            _check(name in LABEL_FREE_SIGNALS, "label_free_signals",
                   f"unknown signal {name!r} (known: {', '.join(LABEL_FREE_SIGNALS)})")
        _check(self.accuracy_window >= 1, "accuracy_window", "must be >= 1")
        _check(self.label_requests >= 0, "label_requests", "must be >= 0")
        _check(self.label_request_pool >= 1, "label_request_pool", "must be >= 1")
        _check(self.join_cache_size >= 1, "join_cache_size", "must be >= 1")


@dataclass(frozen=True)
class BufferSettings:
    state_dir: str = ""
    """Where the replay buffer is persisted; empty = <model.path>/learner (one learning instance per directory)."""
    buffer_size: int = 2000
    """Capacity of the class- and stratum-balanced replay reservoir."""
    holdout_fraction: float = 0.1
    """Share of labelled examples set aside (by a hash of the text) as the never-trained forgetting holdout."""
    window_size: int = 2000
    """Most new labelled examples kept for the next training run (oldest dropped first)."""
    period_s: float = 86_400.0
    """Event-time period of a buffer stratum: examples are balanced over (source, period) and class."""
    seed: int = 0
    """Seed of the buffer's and the training splits' random choices."""

    def __post_init__(self) -> None:
        _check(self.buffer_size >= 10, "buffer_size", f"must be >= 10, got {self.buffer_size}")
        _check(0.0 <= self.holdout_fraction < 1.0, "holdout_fraction", "must be in [0, 1)")
        _check(self.window_size >= 1, "window_size", "must be >= 1")
        _check(self.period_s > 0, "period_s", "must be > 0")


@dataclass(frozen=True)
class PolicySettings:
    min_new_labels: int = 100
    """New labelled examples needed since the last run before another run starts."""
    cooldown_s: float = 600.0
    """Seconds after the end of a run before the next one may start."""
    retrain_every_labels: int = 0
    """Also retrain without drift once this many new labels arrived (0: only on drift)."""
    max_training_s: float = 600.0
    """Wall-clock budget of the training loop of one run (it keeps the best weights so far)."""

    def __post_init__(self) -> None:
        _check(self.min_new_labels >= 1, "min_new_labels", "must be >= 1")
        _check(self.cooldown_s >= 0, "cooldown_s", "must be >= 0")
        _check(self.retrain_every_labels >= 0, "retrain_every_labels", "must be >= 0")
        _check(self.max_training_s > 0, "max_training_s", "must be > 0")


@dataclass(frozen=True)
class TrainSettings:
    method: str = "replay_distill"
    """replay_distill (replay + LwF distillation), replay, ewc (replay-free online EWC) or naive (new data only)."""
    replay_ratio: float = 1.0
    """Replay examples drawn per new training example (replay methods)."""
    distill_temperature: float = 2.0
    """Softening temperature of the distillation from the serving model."""
    distill_weight: float = 0.5
    """Weight of the distillation term (LwF on every example: high values resist learning a changed rule)."""
    ewc_lambda: float = 100.0
    """Weight of the EWC penalty (method ewc)."""
    ewc_gamma: float = 0.9
    """Decay of the running Fisher estimate at each consolidation (method ewc)."""
    freeze_embeddings: bool = True
    """Freeze the token embeddings while retraining."""
    freeze_layers: int = 2
    """Freeze the lowest N encoder layers while retraining (at most the model's layer count)."""
    epochs: int = 3
    """Passes over the training set (early stopping may end sooner)."""
    batch_size: int = 16
    """Training batch size."""
    lr_encoder: float = 1e-4
    """Peak learning rate of the unfrozen encoder layers."""
    lr_head: float = 1e-3
    """Peak learning rate of the heads."""
    patience: int = 1
    """Epochs without a better validation score before stopping."""
    val_fraction: float = 0.15
    """Share of the training set used for early stopping."""
    max_length: int = 64
    """Token truncation length while training."""

    def __post_init__(self) -> None:
        _check(self.method in METHODS, "method", f"unknown method {self.method!r} (known: {', '.join(METHODS)})")
        _check(self.replay_ratio >= 0, "replay_ratio", "must be >= 0")
        _check(self.distill_temperature > 0, "distill_temperature", "must be > 0")
        _check(self.distill_weight >= 0, "distill_weight", "must be >= 0")
        _check(self.ewc_lambda >= 0, "ewc_lambda", "must be >= 0")
        _check(0.0 <= self.ewc_gamma <= 1.0, "ewc_gamma", "must be in [0, 1]")
        _check(self.freeze_layers >= 0, "freeze_layers", "must be >= 0")
        _check(self.epochs >= 1 and self.batch_size >= 1 and self.patience >= 1, "epochs",
               "epochs, batch_size and patience must be >= 1")
        _check(self.lr_encoder >= 0 and self.lr_head > 0, "lr_head", "learning rates must be > 0 (lr_encoder >= 0)")
        _check(0.0 < self.val_fraction < 0.5, "val_fraction", "must be in (0, 0.5)")
        _check(8 <= self.max_length <= 512, "max_length", "must be in 8..512")


@dataclass(frozen=True)
class GateSettings:
    gate_fraction: float = 0.25
    """Share of the new labelled window held out from training to compare challenger and serving model."""
    min_gate_examples: int = 20
    """Fewest held-out new examples the gate decides on (fewer: rejected)."""
    min_improvement: float = 0.01
    """Challenger accuracy minus serving accuracy on the held-out new examples must be >= this."""
    max_forgetting: float = 0.02
    """Largest accepted share of the serving model's right holdout answers that the challenger gets wrong."""
    min_stratum_examples: int = 20
    """Holdout strata (source, period) with fewer right serving answers count only in the whole-holdout figure."""

    def __post_init__(self) -> None:
        _check(0.0 < self.gate_fraction < 1.0, "gate_fraction", "must be in (0, 1)")
        _check(self.min_gate_examples >= 1, "min_gate_examples", "must be >= 1")
        _check(-1.0 <= self.min_improvement <= 1.0, "min_improvement", "must be in [-1, 1]")
        _check(0.0 <= self.max_forgetting <= 1.0, "max_forgetting", "must be in [0, 1]")
        _check(self.min_stratum_examples >= 1, "min_stratum_examples", "must be >= 1")


_GROUPS: dict[str, type] = {
    "drift": DriftSettings,
    "buffer": BufferSettings,
    "policy": PolicySettings,
    "train": TrainSettings,
    "gate": GateSettings,
}


@dataclass(frozen=True)
class LearnerSettings:
    """All learner settings, one frozen group per component."""

    drift: DriftSettings = field(default_factory=DriftSettings)
    buffer: BufferSettings = field(default_factory=BufferSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    gate: GateSettings = field(default_factory=GateSettings)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        _check(isinstance(value, list | tuple), key, f"expected a list, got {value!r}")
        return tuple(str(v) for v in value)
    if origin is not None and issubclass(origin, Mapping):
        _check(isinstance(value, Mapping), key, f"expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        _check(isinstance(value, bool), key, f"expected true or false, got {value!r}")
    elif annotation is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {value!r}")
    elif annotation is float:
        _check(isinstance(value, int | float) and not isinstance(value, bool), key, f"expected a number, got {value!r}")
        return float(value)
    elif annotation is str:
        _check(isinstance(value, str), key, f"expected a string, got {value!r}")
    return value


def parse_settings(raw: Mapping[str, Any] | None) -> LearnerSettings:
    """Validate the flat ``learning.settings`` mapping into ``LearnerSettings``."""
    raw = dict(raw or {})
    groups: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
    owner = {f.name: group for group, cls in _GROUPS.items() for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        _check(key in owner, key, "unknown key (see docs/continual-learning.md)")
        hints = typing.get_type_hints(_GROUPS[owner[key]])
        groups[owner[key]][key] = _coerce(value, hints[key], key)
    return LearnerSettings(**{name: cls(**groups[name]) for name, cls in _GROUPS.items()})


def describe_settings() -> list[tuple[str, str, str]]:
    """``(key, default, meaning)`` of every setting, from the field docstrings (for the docs)."""
    rows = []
    for cls in _GROUPS.values():
        docs = field_docs(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            value = getattr(defaults, f.name)
            shown = ",".join(value) if isinstance(value, tuple) else ("{}" if isinstance(value, Mapping) else value)
            rows.append((f.name, str(shown), docs.get(f.name, "")))
    return rows
