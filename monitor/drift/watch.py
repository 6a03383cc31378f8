"""One drift signal watched by one river detector, reporting only changes in the harmful direction.

River detectors answer "did the distribution change", not "did it get worse": ADWIN fires as
readily when the error rate falls (say, after a better model was swapped in) as when it rises.
``DriftWatch`` keeps two exponentially weighted means of the signal, a fast one (span about 10
values) and a slow one (span about 100): when the detector fires, the change is harmful if the
fast mean moved past the slow one in the signal's harmful direction ("up", "down" or "both").
It also keeps the plain mean of the last ``window`` values for reporting (the rolling
prequential accuracy is ``1 - mean`` of an error watch).

River's FHDDM follows MOA's convention (1 = correct) and raises on a *fall* of its input, so an
error stream is given to it complemented; every other binary detector takes 1 = error.

    >>> from river.drift import ADWIN
    >>> watch = DriftWatch(ADWIN(), direction="up", window=50)
    >>> fired = [i for i in range(600) if watch.update(float(i >= 300 and i % 2 == 0))]
    >>> 300 <= fired[0] < 400, watch.detections, watch.mean
    (True, 1, 0.5)
"""

from __future__ import annotations

from collections import deque

from river import base
from river.drift.binary import FHDDM

from monitor.drift.detectors import Detector

__all__ = ["DriftWatch"]

_FAST, _SLOW = 0.1, 0.01


class DriftWatch:
    """``update(x) -> bool``: True when the detector fires and the change goes the harmful way."""

    def __init__(self, detector: Detector, *, direction: str = "up", window: int = 200) -> None:
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be up, down or both, got {direction!r}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.detector = detector
        self.direction = direction
        self.window = window
        self._complement = isinstance(detector, FHDDM)
        self._recent: deque[float] = deque(maxlen=window)
        self._sum = 0.0
        self._fast: float | None = None
        self._slow = 0.0
        self._count = 0
        self._detections = 0
        self._drift = False

    @property
    def drift_detected(self) -> bool:
        """Whether the last ``update`` reported harmful drift."""
        return self._drift

    @property
    def detections(self) -> int:
        """Harmful drifts reported so far."""
        return self._detections

    @property
    def count(self) -> int:
        """Values seen so far."""
        return self._count

    @property
    def mean(self) -> float | None:
        """Mean of the last ``window`` values (None before the first)."""
        return self._sum / len(self._recent) if self._recent else None

    def update(self, x: float) -> bool:
        """Feed one value of the signal; return ``drift_detected``."""
        x = float(x)
        if len(self._recent) == self.window:
            self._sum -= self._recent[0]
        self._recent.append(x)
        self._sum += x
        if self._fast is None:
            self._fast = self._slow = x
        else:
            self._fast += _FAST * (x - self._fast)
            self._slow += _SLOW * (x - self._slow)
        self._count += 1
        if isinstance(self.detector, base.BinaryDriftDetector):
            bit = x >= 0.5
            self.detector.update(not bit if self._complement else bit)
        else:
            self.detector.update(x)
        self._drift = bool(self.detector.drift_detected) and self._harmful()
        if self._drift:
            self._detections += 1
        return self._drift

    def _harmful(self) -> bool:
        assert self._fast is not None
        if self.direction == "up":
            return self._fast > self._slow
        if self.direction == "down":
            return self._fast < self._slow
        return self._fast != self._slow
