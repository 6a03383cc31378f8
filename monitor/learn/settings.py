"""Settings of the online learner: the free mapping ``learning.settings`` parsed and validated.

Keys are flat (``learning.settings.detector``, ``learning.settings.min_new_labels``...) and grouped
here by the component they configure: drift detection, replay buffer, retrain policy, training
and the promotion gate. Each group is a frozen pydantic model (strict types, extra keys
forbidden); ``parse_settings`` routes the flat keys to their group and turns every validation
error into one ``monitor.config.ConfigError`` naming the key. Detector names and parameters are
checked by building the detector once.

    >>> s = parse_settings({"detector": "PageHinkley", "min_new_labels": 50})
    >>> s.drift.detector, s.policy.min_new_labels, s.train.method
    ('PageHinkley', 50, 'replay_distill')
    >>> parse_settings({"methd": "replay"})
    Traceback (most recent call last):
    ...
    monitor.config.ConfigError: learning.settings.methd: unknown key (see docs/continual-learning.md)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
METHODS: tuple[str, ...] = ("replay_distill", "replay", "naive")
#: What the distillation covers (``distill_on``).
DISTILL_ON: tuple[str, ...] = ("replay", "congruent", "all")
#: Why method ewc and its settings are gone (docs/continual-learning.md, "EWC (removed)").
EWC_REMOVED = ("EWC was removed: at no lambda did it beat replay_distill on the domain-adaptation benchmark "
               "(docs/continual-learning.md, 'EWC (removed)'); use method replay_distill")
#: Keys that existed once, with what replaced them (an old config gets this instead of "unknown key").
REMOVED: Mapping[str, str] = {
    "max_length": "the truncation length is the serving checkpoint's (meta.json max_length, set by monitor train "
                  "--max-length), so training, the gate and serving use one length",
    "ewc_lambda": EWC_REMOVED,
    "ewc_gamma": EWC_REMOVED,
}


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{PREFIX}.{key}: {message}")


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DriftSettings(_Group):
    detector: str = "ADWIN"
    """River detector of the prequential error of each head (any class of river.drift or river.drift.binary)."""
    detector_params: dict[str, Any] = Field(default_factory=dict)
    """Constructor parameters of that detector, e.g. {delta: 0.002}."""
    label_free_detector: str = "ADWIN"
    """River detector of each label-free signal (river.drift only: the signals are real-valued)."""
    label_free_detector_params: dict[str, Any] = Field(default_factory=dict)
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

    @field_validator("label_free_signals", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _valid(self) -> DriftSettings:
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
        return self


class BufferSettings(_Group):
    state_dir: str = ""
    """Where the replay buffer is persisted; empty = <model.path>/learner (one learning instance per directory)."""
    buffer_size: int = 2000
    """Capacity of the class- and stratum-balanced replay reservoir."""
    holdout_fraction: float = 0.1
    """Share of labelled examples set aside (by a hash of the text) as the never-trained forgetting holdout."""
    holdout_size: int = 3000
    """Capacity of the (equally balanced) forgetting holdout."""
    window_size: int = 2000
    """Most new labelled examples kept for the next training run (oldest dropped first)."""
    period_s: float = 86_400.0
    """Event-time period of a buffer stratum: examples are balanced over (source, period) and class."""
    seed: int = 0
    """Seed of the buffer's and the training's random choices."""

    @model_validator(mode="after")
    def _valid(self) -> BufferSettings:
        _check(self.buffer_size >= 10, "buffer_size", f"must be >= 10, got {self.buffer_size}")
        _check(0.0 <= self.holdout_fraction < 1.0, "holdout_fraction", "must be in [0, 1)")
        _check(self.holdout_size >= 0, "holdout_size", "must be >= 0")
        _check(self.window_size >= 1, "window_size", "must be >= 1")
        _check(self.period_s > 0, "period_s", "must be > 0")
        return self


class PolicySettings(_Group):
    min_new_labels: int = 100
    """New labelled examples needed since the last run before another run starts."""
    cooldown_s: float = 600.0
    """Seconds after the end of a run before the next one may start."""
    accuracy_floor: float = 0.8
    """Retrain when a head's prequential accuracy over its last floor_labels labels is below this (0: off)."""
    floor_labels: int = 100
    """Labels of a head (of the serving version) the accuracy floor is measured on."""
    retrain_every_labels: int = 1000
    """Also retrain, whatever the drift and the floor say, once this many new labels arrived (0: never)."""
    max_training_s: float = 600.0
    """Wall-clock budget of the training loop of one run (it keeps the best weights so far)."""
    backtest_training_s: float = 0.0
    """monitor replay --learn: event-time seconds a run takes before its model serves (0: its measured wall time)."""

    @model_validator(mode="after")
    def _valid(self) -> PolicySettings:
        _check(self.min_new_labels >= 1, "min_new_labels", "must be >= 1")
        _check(self.cooldown_s >= 0, "cooldown_s", "must be >= 0")
        _check(0.0 <= self.accuracy_floor <= 1.0, "accuracy_floor", "must be in [0, 1]")
        _check(self.floor_labels >= 1, "floor_labels", "must be >= 1")
        _check(self.retrain_every_labels >= 0, "retrain_every_labels", "must be >= 0")
        _check(self.max_training_s > 0, "max_training_s", "must be > 0")
        _check(self.backtest_training_s >= 0, "backtest_training_s", "must be >= 0")
        return self


class TrainSettings(_Group):
    method: str = "replay_distill"
    """replay_distill (replay + LwF distillation), replay or naive (new data only)."""
    replay_ratio: float = 2.0
    """Replay examples drawn per new training example (replay methods)."""
    min_replay: int = 0
    """Fewest replay examples a run draws (when the buffer holds them), however small the window."""
    distill_temperature: float = 2.0
    """Softening temperature of the distillation from the serving model."""
    distill_weight: float = 4.0
    """Weight of the distillation term (with distill_on all, high values resist learning a changed rule)."""
    distill_on: str = "replay"
    """Examples the distillation covers: replay (the replayed old ones), congruent (those, and each new one on the
    heads the serving model answers right) or all (LwF: every new one too)."""
    distill_after_forgetting: float = 0.5
    """Once a run was refused for forgetting, later runs distil every example, new ones too (LwF, distill_on all),
    at this weight: the new domain's labels conflict with what the model knew (0: never)."""
    distill_anchor: bool = False
    """Distil each example from the serving or the lineage's first model, whichever gives its label more probability."""
    freeze_embeddings: bool = True
    """Freeze the token embeddings while retraining."""
    freeze_layers: int = 3
    """Freeze the lowest N encoder layers while retraining (at most the model's layer count: 3 of MiniLM's 6)."""
    epochs: int = 8
    """Passes over the training set (early stopping may end sooner)."""
    batch_size: int = 16
    """Training batch size."""
    lr_encoder: float = 1e-4
    """Peak learning rate of the unfrozen encoder layers."""
    lr_head: float = 1e-3
    """Peak learning rate of the heads."""
    patience: int = 1
    """Epochs without a better validation score before stopping."""
    val_fraction: float = 0.0
    """Share of the training set used for early stopping (0: no early stopping, all epochs run, all data trains)."""
    source_offset_lr: float = 0.1
    """Peak learning rate of the per-source logit offsets: a source the model was not trained on gets its own
    offsets, so its label convention does not move the shared heads (0: no offsets)."""
    source_offset_min: int = 50
    """New training examples of such a source a run needs before it gets offsets (a source the model trained on:
    one of its replay seed's, else of the run's replay sample, gets none)."""

    def replay_size(self, new_examples: int) -> int:
        """Replay examples a run on ``new_examples`` new ones draws: ``replay_ratio`` of them, at least ``min_replay``.

        >>> TrainSettings(replay_ratio=1.0, min_replay=500).replay_size(120), TrainSettings().replay_size(120)
        (500, 240)
        """
        if self.method not in ("replay", "replay_distill"):
            return 0
        return max(self.min_replay, round(self.replay_ratio * new_examples))

    def protected(self) -> TrainSettings:
        """The recipe of a run after one refused for forgetting (``distill_after_forgetting``): distil every example.

        >>> p = TrainSettings().protected()
        >>> p.distill_on, p.distill_weight, TrainSettings(distill_after_forgetting=0).protected().distill_on
        ('all', 0.5, 'replay')
        """
        if self.distill_after_forgetting <= 0 or self.method != "replay_distill":
            return self
        return self.model_copy(update={"distill_on": "all", "distill_weight": self.distill_after_forgetting})

    def offset_sources(self, new: Sequence[Any], trained: Iterable[str], existing: Iterable[str]) -> tuple[str, ...]:
        """Sources whose logit offsets train in a run (``TrainConfig.offset_sources``): those the model has
        (``existing``), and each source with ``source_offset_min`` or more ``new`` training examples that is not
        one of the sources the model ``trained`` on; none with ``source_offset_lr`` 0.

        >>> from types import SimpleNamespace as E
        >>> new = [E(source="wire")] * 50 + [E(source="blog")] * 49 + [E(source="tweets")] * 60
        >>> TrainSettings().offset_sources(new, {"tweets"}, ["forum"])
        ('forum', 'wire')
        >>> TrainSettings(source_offset_lr=0).offset_sources(new, set(), [])
        ()
        """
        if self.source_offset_lr <= 0:
            return ()
        counts, known = Counter(e.source for e in new), set(trained)
        arrived = {s for s, n in counts.items() if n >= self.source_offset_min and s not in known}
        return tuple(sorted(set(existing) | arrived))

    @property
    def congruent(self) -> bool:
        """Whether ``fit`` also distils the new examples' heads the serving model answers right."""
        return self.distill_on == "congruent"

    def distill_rows(self, train: Sequence[Any], replay: Sequence[Any]) -> list[bool] | None:
        """``fit``'s ``distill_rows`` for ``train``: None (all) or which of them are (by identity) in ``replay``.

        ``congruent`` names the replayed rows too: ``fit`` adds the heads the teacher gets right
        (``TrainConfig.distill_congruent``, set from ``congruent``).

        >>> a, b = object(), object()
        >>> TrainSettings().distill_rows([a, b], [b]), TrainSettings(distill_on="all").distill_rows([a, b], [b])
        ([False, True], None)
        """
        if self.distill_on == "all":
            return None
        replayed = {id(e) for e in replay}
        return [id(e) in replayed for e in train]

    @model_validator(mode="after")
    def _valid(self) -> TrainSettings:
        _check(self.method != "ewc", "method", EWC_REMOVED)
        _check(self.distill_on in DISTILL_ON, "distill_on",
               f"must be {', '.join(DISTILL_ON[:-1])} or {DISTILL_ON[-1]}, got {self.distill_on!r}")
        _check(self.method in METHODS, "method", f"unknown method {self.method!r} (known: {', '.join(METHODS)})")
        _check(self.replay_ratio >= 0, "replay_ratio", "must be >= 0")
        _check(self.min_replay >= 0, "min_replay", "must be >= 0")
        _check(self.distill_temperature > 0, "distill_temperature", "must be > 0")
        _check(self.distill_weight >= 0, "distill_weight", "must be >= 0")
        _check(self.distill_after_forgetting >= 0, "distill_after_forgetting", "must be >= 0")
        _check(self.freeze_layers >= 0, "freeze_layers", "must be >= 0")
        _check(self.epochs >= 1 and self.batch_size >= 1 and self.patience >= 1, "epochs",
               "epochs, batch_size and patience must be >= 1")
        _check(self.lr_encoder >= 0 and self.lr_head > 0, "lr_head", "learning rates must be > 0 (lr_encoder >= 0)")
        _check(0.0 <= self.val_fraction < 0.5, "val_fraction", "must be in [0, 0.5)")
        _check(self.source_offset_lr >= 0, "source_offset_lr", "must be >= 0")
        _check(self.source_offset_min >= 1, "source_offset_min", "must be >= 1")
        return self


class GateSettings(_Group):
    gate_enabled: bool = True
    """false: every challenger that trains is promoted, its gate numbers still recorded (for benchmarks only)."""
    cross_fit: bool = False
    """Judge "better" on every fresh label: cross_fit_folds extra models, each trained without one fold of the window
    (a hash of the text), answer for that fold; the promoted model trains on the whole window (a run costs about
    cross_fit_folds times as much)."""
    cross_fit_folds: int = 3
    """Folds of the cross-fitted gate: each fold model trains on (folds - 1) / folds of the fresh labels."""
    refit: bool = False
    """Without cross_fit: once the gate passes, train the promoted model again on the whole window (the gate share,
    now spent, too); it serves if it passes the forgetting test as well, else the judged challenger does (measured:
    no clear gain for a second fit per promotion; off)."""
    gate_fraction: float = 0.2
    """Without cross_fit: share of the new labels (a hash of the text, never trained on) the gate compares on."""
    shadow_labels: int = 0
    """Labels that arrive after a challenger trained (neither model saw them) on which it and the serving model are
    also compared before the gate decides; meanwhile the serving model serves and no other run starts (0: decide
    as soon as it trained; measured: no gain at 100, off)."""
    shadow_wait_s: float = 86_400.0
    """Longest wait for the shadow labels, counted from the run's start (event time in a replay); then the
    challenger is judged on those that came."""
    min_gate_examples: int = 50
    """Fewest gate examples the gate decides on (fewer: rejected)."""
    better_test: Literal["mcnemar", "probability"] = "mcnemar"
    """How "better on recent labels" is tested: mcnemar (McNemar's exact mid-p on the answers only one model got
    right) or probability (the paired mean gain in the probability of the true label over every answer; the challenger
    must also win more answers than it loses and gain at least min_improvement; measured, not the default)."""
    confidence: float = 0.6
    """One-sided confidence that the challenger is better on the recent labels (McNemar: promote when p <= 1 - it).
    0.6, measured against 0.8 on 24 label samples (bench/README.md, "Twentieth round"); 0.8 or 0.9 where a needless
    swap costs more than a missed gain."""
    better_than_origin: bool = True
    """After promotions, a challenger is also "better" when it is better than the lineage's first model on the recent
    labels (at confidence) and no worse than the serving model on them (it wins at least as many answers as it loses):
    a few dozen labels cannot confirm the second few points of a gain, they can confirm the whole of it."""
    forgetting_confidence: float = 0.9
    """One-sided confidence of the forgetting bound on the holdout (the loss's upper bound at it <= max_forgetting)."""
    min_improvement: float = 0.0
    """The challenger's observed accuracy gain on the gate set must also be >= this."""
    max_forgetting: float = 0.02
    """Largest accuracy loss on the holdout (and each large enough stratum), as an upper confidence bound."""
    min_stratum_examples: int = 100
    """Holdout (and holdout strata) with fewer labelled answers than this are not tested for forgetting."""
    keep_rejected: bool = False
    """Keep each refused challenger's checkpoint in <registry>/rejected/<version> (never served; for inspection)."""

    @model_validator(mode="after")
    def _valid(self) -> GateSettings:
        _check(0.0 < self.gate_fraction < 1.0, "gate_fraction", "must be in (0, 1)")
        _check(2 <= self.cross_fit_folds <= 10, "cross_fit_folds", "must be in [2, 10]")
        _check(self.min_gate_examples >= 1, "min_gate_examples", "must be >= 1")
        _check(self.shadow_labels >= 0, "shadow_labels", "must be >= 0")
        _check(self.shadow_wait_s >= 0, "shadow_wait_s", "must be >= 0")
        _check(0.5 <= self.confidence < 1.0, "confidence", "must be in [0.5, 1)")
        _check(0.5 <= self.forgetting_confidence < 1.0, "forgetting_confidence", "must be in [0.5, 1)")
        _check(-1.0 <= self.min_improvement <= 1.0, "min_improvement", "must be in [-1, 1]")
        _check(0.0 <= self.max_forgetting <= 1.0, "max_forgetting", "must be in [0, 1]")
        _check(self.min_stratum_examples >= 1, "min_stratum_examples", "must be >= 1")
        return self


_GROUPS: dict[str, type[_Group]] = {
    "drift": DriftSettings,
    "buffer": BufferSettings,
    "policy": PolicySettings,
    "train": TrainSettings,
    "gate": GateSettings,
}


class LearnerSettings(BaseModel):
    """All learner settings, one frozen group per component."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drift: DriftSettings = Field(default_factory=DriftSettings)
    buffer: BufferSettings = Field(default_factory=BufferSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    gate: GateSettings = Field(default_factory=GateSettings)


def _config_error(err: ValidationError) -> ConfigError:
    """The first error of ``err`` as a ConfigError naming the flat key."""
    first = err.errors()[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):  # raised by a validator with its own key and message
        return cause
    key = ".".join(str(part) for part in first["loc"])
    return ConfigError(f"{PREFIX}.{key}: {first['msg']}, got {first.get('input')!r}")


def parse_settings(raw: Mapping[str, Any] | None) -> LearnerSettings:
    """Validate the flat ``learning.settings`` mapping into ``LearnerSettings``."""
    raw = dict(raw or {})
    groups: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
    owner = {key: group for group, cls in _GROUPS.items() for key in cls.model_fields}
    for key, value in raw.items():
        if key in REMOVED:
            raise ConfigError(f"{PREFIX}.{key}: no longer a learner setting: {REMOVED[key]}")
        _check(key in owner, key, "unknown key (see docs/continual-learning.md)")
        groups[owner[key]][key] = dict(value) if isinstance(value, Mapping) else value
    try:
        built: dict[str, Any] = {name: cls(**groups[name]) for name, cls in _GROUPS.items()}
        return LearnerSettings(**built)
    except ValidationError as err:
        raise _config_error(err) from None


def describe_settings() -> list[tuple[str, str, str]]:
    """``(key, default, meaning)`` of every setting, from the field docstrings (for the docs)."""
    rows = []
    for cls in _GROUPS.values():
        docs = field_docs(cls)
        defaults = cls()
        for name in cls.model_fields:
            value = getattr(defaults, name)
            shown = ",".join(value) if isinstance(value, tuple) else ("{}" if isinstance(value, Mapping) else value)
            rows.append((name, str(shown), docs.get(name, "")))
    return rows
