"""The per-batch step, without IO: items in, predictions and alerts out.

Live runs (``monitor.app``) and backtests (``monitor.replay``) both call
``Pipeline.process`` on each micro-batch; only where items come from and where results go
differs. The serving model is read once per batch from a ``ModelSlot``, so a hot swap takes
effect between batches and every result names the version that produced it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from monitor.alerts import SurgeDetector, SurgeTracker, describe
from monitor.records import Alert, NewsItem, Prediction
from monitor.trends import SentimentTrends

__all__ = ["BatchOutcome", "ModelSlot", "Pipeline", "Scorer"]

log = logging.getLogger(__name__)


class ScoredLike(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def topic_probs(self) -> dict[str, float]: ...
    @property
    def sentiment(self) -> str: ...
    @property
    def sentiment_probs(self) -> dict[str, float]: ...
    @property
    def confidence(self) -> float: ...


class Scorer(Protocol):
    """What the pipeline needs of a model: a version and batched prediction."""

    version: str

    def predict(self, texts: Sequence[str], sources: Sequence[str] | None = None) -> Sequence[ScoredLike]: ...


class ModelSlot:
    """Holds the serving model; ``swap`` replaces it atomically (a reference assignment under a lock)."""

    def __init__(self, scorer: Scorer) -> None:
        self._scorer = scorer
        self._lock = threading.Lock()

    @property
    def current(self) -> Scorer:
        with self._lock:
            return self._scorer

    def swap(self, scorer: Scorer) -> Scorer:
        """Install ``scorer``; return the one it replaced."""
        with self._lock:
            old, self._scorer = self._scorer, scorer
        return old


@dataclass
class BatchOutcome:
    predictions: list[Prediction]
    alerts: list[Alert]
    model_version: str
    infer_seconds: float
    index: dict[tuple[str, float], tuple[float, int]] = field(default_factory=dict)
    """Sentiment index snapshot: ``{(key, window): (index, count)}``; keys 'topic:<t>' / 'ticker:<t>'."""
    stats: Any = None
    """The scorer's ``last_stats`` after this batch (a Predictor's ``PredictStats``; None for other scorers)."""


class Pipeline:
    """Classify a micro-batch; per item, advance the event-time watermark, update the sentiment
    windows and check for surges (``monitor.alerts.SurgeTracker``: the order is written there)."""

    def __init__(
        self,
        slot: ModelSlot,
        trends: SentimentTrends | None,
        surge: SurgeDetector | None,
        watch_tickers: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``surge=None``: classification only (a serving replica; the analytics role owns the alerts)."""
        self.slot = slot
        self.trends = trends
        self.surge = surge
        self.tracker = SurgeTracker(surge, watch_tickers, trends) if surge is not None else None
        self._clock = clock

    @property
    def watermark(self) -> float:
        """The event-time clock of the windows and alerts (Unix seconds; ``-inf`` before the first items)."""
        return self.tracker.now if self.tracker is not None else float("-inf")

    def process(self, items: Sequence[NewsItem], received_at: Sequence[float]) -> BatchOutcome:
        """Classify ``items`` (``received_at``: clock time each was polled) in one model version."""
        scorer = self.slot.current
        started = self._clock()
        scored = scorer.predict([item.text for item in items], [item.source for item in items]) if items else []
        done = self._clock()
        predictions = [
            Prediction(
                id=item.id,
                source=item.source,
                kind=item.kind,
                published_at=item.published_at.isoformat(),
                tickers=item.tickers,
                topic=s.topic,
                topic_probs={k: round(v, 5) for k, v in s.topic_probs.items()},
                sentiment=s.sentiment,
                sentiment_probs={k: round(v, 5) for k, v in s.sentiment_probs.items()},
                confidence=round(s.confidence, 5),
                model_version=scorer.version,
                latency_ms=round((done - got) * 1000.0, 3),
                text=item.text,
            )
            for item, s, got in zip(items, scored, received_at, strict=True)
        ]
        # The windows change only once every prediction is built: a batch that raises above (and is
        # split by the daemon to isolate the item that makes it raise) has not been counted.
        alerts: list[Alert] = []
        for item, p in zip(items, predictions, strict=True):
            # Checked after every item, so alerts do not depend on where batches were cut
            # (live batching, a replay's backlog batching and --via-kafka all agree).
            if self.tracker is not None:
                alerts.extend(self.tracker.add(item.published_at.timestamp(), p.topic, item.tickers, p.sentiment,
                                               item.id, scorer.version))
        for a in alerts:
            log.info(describe(a))
        index = self.tracker.snapshot() if self.tracker is not None else {}
        return BatchOutcome(predictions, alerts, scorer.version, done - started, index,
                            getattr(scorer, "last_stats", None))
