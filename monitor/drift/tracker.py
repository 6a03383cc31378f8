"""The drift watches of the serving model: each head's prequential error and the label-free signals.

One ``DriftWatch`` per signal, all built from the configured detector names. The watches belong
to one serving version: when predictions start coming from another version (a promotion or a
rollback) every watch starts afresh, since the old statistics describe a model no longer
serving. Labels of predictions made by another version say nothing about the serving model and
are left out.

    >>> t = DriftTracker("ADWIN", {}, "ADWIN", {}, ("confidence",), window=50, version="v1")
    >>> t.update_label("v1", "Macro", "positive", topic="Macro", sentiment="negative")
    []
    >>> t.accuracy("topic"), t.accuracy("sentiment")
    (1.0, 0.0)
    >>> t.update_prediction("v2", confidence=0.9, sentiment="neutral"), t.version, t.accuracy("topic")
    ([], 'v2', None)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from monitor.drift.detectors import make_detector
from monitor.drift.signals import HARMFUL_DIRECTION, HEADS, error_signal, head_errors, label_free_values
from monitor.drift.watch import DriftWatch

__all__ = ["DriftTracker"]

KEY = "learning.settings"


class DriftTracker:
    """``update_prediction`` / ``update_label`` return the signals that drifted the harmful way."""

    def __init__(
        self,
        detector: str,
        detector_params: Mapping[str, Any],
        label_free_detector: str,
        label_free_params: Mapping[str, Any],
        label_free_signals: Sequence[str],
        *,
        window: int,
        version: str,
        floor_window: int = 100,
    ) -> None:
        self._specs = {error_signal(h): (detector, detector_params, "detector") for h in HEADS}
        self._specs.update({s: (label_free_detector, label_free_params, "label_free_detector")
                            for s in label_free_signals})
        self.label_free_signals = tuple(label_free_signals)
        self.window = window
        self.floor_window = floor_window
        self._version = version
        self._watches: dict[str, DriftWatch] = {}
        self._floor: dict[str, deque[float]] = {}
        self._reset()

    @property
    def version(self) -> str:
        """The model version the watches describe."""
        return self._version

    @property
    def signals(self) -> tuple[str, ...]:
        """Every watched signal."""
        return tuple(self._specs)

    @property
    def watches(self) -> dict[str, DriftWatch]:
        """The current watch of each signal (replaced when the version changes)."""
        return dict(self._watches)

    def accuracy(self, head: str) -> float | None:
        """Rolling prequential accuracy of ``head`` over the last ``window`` labels (None before any)."""
        mean = self._watches[error_signal(head)].mean
        return None if mean is None else 1.0 - mean

    def recent_accuracy(self, head: str) -> tuple[float | None, int]:
        """Accuracy of ``head`` over its last ``floor_window`` labels of this version, and how many there were."""
        errors = self._floor[head]
        return (1.0 - sum(errors) / len(errors) if errors else None), len(errors)

    def below_floor(self, floor: float) -> str | None:
        """The first head whose accuracy over a full ``floor_window`` of labels is below ``floor`` (as a reason)."""
        for head in HEADS:
            accuracy, n = self.recent_accuracy(head)
            if accuracy is not None and n >= self.floor_window and accuracy < floor:
                return f"{head} accuracy {accuracy:.3f} < floor {floor:.3f} over {n} labels"
        return None

    def update_prediction(self, version: str, confidence: float, sentiment: str) -> list[str]:
        """One prediction: follow its version, feed the label-free signals."""
        if version != self._version:
            self._version = version
            self._reset()
        values = label_free_values(confidence, sentiment, self.label_free_signals)
        return [signal for signal, value in values.items() if self._watches[signal].update(value)]

    def update_label(
        self, version: str, predicted_topic: str, predicted_sentiment: str, *, topic: str | None,
        sentiment: str | None,
    ) -> list[str]:
        """One label of a prediction made by ``version``: feed each labelled head's 0/1 error."""
        if version != self._version:
            return []
        errors = head_errors(predicted_topic, predicted_sentiment, topic=topic, sentiment=sentiment)
        for head, error in errors.items():
            self._floor[head].append(float(error))
        return [error_signal(h) for h, e in errors.items() if self._watches[error_signal(h)].update(e)]

    def _reset(self) -> None:
        self._floor = {head: deque(maxlen=self.floor_window) for head in HEADS}
        self._watches = {
            signal: DriftWatch(make_detector(name, params, f"{KEY}.{key}"), direction=HARMFUL_DIRECTION[signal],
                               window=self.window)
            for signal, (name, params, key) in self._specs.items()
        }
