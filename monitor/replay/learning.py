"""The learner side of a replay: event-time clock, and a tap that records what the learner did.

``LearnerTap`` wraps any ``monitor.app.Learner`` and forwards every call unchanged, so the
daemon (``--via-kafka``) and the direct engine drive the learner in exactly the same way. On
the way it keeps ``EventClock`` at the event time of the newest event handed to the learner (an
item's ``published_at``, a label's visibility time ``published_at + label_delay_s``), which is
the clock a replayed learner runs its policy on, and records:

- ``deliveries``: ``(label id, event time)`` for every label handed over;
- ``events``: drift detections (from the learner's metrics), finished training runs (its
  ``last_result``: promoted, rejected, failed), serving-version changes seen in the predictions,
  and label requests, each stamped with the event time (wall-clock durations are left out, so
  that two replays record the same events).

With ``synchronous=True`` (replays) a training run that ``persist`` starts is waited for before
the call returns, so its outcome does not depend on when a background thread happens to finish.
The learner (built with ``event_time=True``) then holds the outcome until the event clock has
passed the run's start plus its duration (``backtest_training_s``, or the measured wall time of
the run), as it would live: the items of that stretch are still classified by the old model, and
the promoted model serves from the first batch after it. The ``training`` event is stamped with
that time and carries ``started_at_s``, the event time the run started.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from monitor.records import Label, NewsItem, Prediction

if TYPE_CHECKING:
    from monitor.app import Learner

__all__ = ["EventClock", "LearnerTap", "iso"]


def iso(at: float) -> str:
    """Unix seconds -> ISO 8601 UTC (the format of ``published_at`` in outputs)."""
    return datetime.fromtimestamp(at, UTC).isoformat()


class EventClock:
    """The newest event time handed to the learner; call it for the time (a ``clock`` for the learner)."""

    def __init__(self) -> None:
        self._now = float("-inf")

    def __call__(self) -> float:
        return self._now if self._now != float("-inf") else 0.0

    def advance(self, at: float) -> None:
        self._now = max(self._now, at)


class LearnerTap:
    """A ``Learner`` that forwards to ``inner`` and records deliveries and learning events."""

    def __init__(
        self,
        inner: Learner,
        clock: EventClock,
        visible_at: Mapping[str, float],
        *,
        registry: Any = None,
        synchronous: bool = True,
    ) -> None:
        self.inner = inner
        self.clock = clock
        self.visible_at = visible_at
        self.registry = registry
        """A prometheus CollectorRegistry holding the learner's metrics (drift counters), or None."""
        self.synchronous = synchronous
        self.deliveries: list[tuple[str, float]] = []
        self.events: list[dict[str, Any]] = []
        self._version: str | None = None
        self._result: object = getattr(inner, "last_result", None)
        self._drift = self._drift_counts()

    # --- the Learner protocol -------------------------------------------------------------------------
    def observe(self, items: Sequence[NewsItem], predictions: Sequence[Prediction]) -> None:
        for item, p in zip(items, predictions, strict=True):
            self.clock.advance(item.published_at.timestamp())
            if p.model_version != self._version:
                if self._version is not None:
                    self._event("model_swap", previous=self._version, version=p.model_version, first_item=p.id)
                self._version = p.model_version
        self.inner.observe(items, predictions)

    def on_label(self, label: Label) -> None:
        at = self.visible_at.get(label.id)
        if at is not None:
            self.clock.advance(at)
        self.deliveries.append((label.id, self.clock()))
        self.inner.on_label(label)

    def persist(self) -> None:
        self.inner.persist()
        while self.synchronous and getattr(self.inner, "running", False):
            while getattr(self.inner, "running", False):
                time.sleep(0.005)
            self.inner.persist()  # picks the finished run up (and may start the next one)
        self._record()

    def drain_label_requests(self) -> list[tuple[str, bytes]]:
        out = self.inner.drain_label_requests()
        if out:
            reasons = sorted({str(_reason(body)) for _, body in out})
            self._event("label_requests", count=len(out), reasons=reasons, ids=[i for i, _ in out])
        return out

    def close(self) -> None:
        self.inner.close()
        self._record()  # a run that ended at close (e.g. judged on the shadow labels it had)

    # --- internals ----------------------------------------------------------------------------------
    def _record(self) -> None:
        """Events for what the learner did since the last call: drift detections, a finished run."""
        drift = self._drift_counts()
        for signal, count in sorted(drift.items()):
            for _ in range(int(count - self._drift.get(signal, 0.0))):
                self._event("drift", signal=signal)
        self._drift = drift
        result = getattr(self.inner, "last_result", None)
        if result is not None and result is not self._result:
            self._result = result
            started = getattr(self.inner, "last_run_started", None)
            self._event("training", outcome=getattr(result, "outcome", ""), version=getattr(result, "version", ""),
                        started_at_s=None if started is None else round(started, 3),
                        parent=getattr(result, "parent", ""), reason=getattr(result, "reason", ""),
                        gate=_without_wall_clock(getattr(result, "numbers", {})),
                        fit=_without_wall_clock(getattr(result, "fit", {})))

    def _event(self, kind: str, **fields: Any) -> None:
        now = self.clock()
        self.events.append({"type": kind, "at": iso(now), "at_s": round(now, 3), **fields})

    def _drift_counts(self) -> dict[str, float]:
        if self.registry is None:
            return {}
        counts: dict[str, float] = {}
        for family in self.registry.collect():
            if family.name != "monitor_drift_detections":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels.get("signal", "")] = sample.value
        return counts


def _without_wall_clock(value: Any) -> Any:
    """``value`` without ``seconds`` entries (durations differ from run to run; results do not)."""
    if isinstance(value, Mapping):
        return {k: _without_wall_clock(v) for k, v in value.items() if k != "seconds"}
    return value


def _reason(body: bytes) -> Any:
    try:
        return json.loads(body).get("reason", "")
    except (ValueError, AttributeError):
        return ""
