"""Rolling sentiment counts over event time, and the sentiment index built on them.

The sentiment index of a topic over a window is ``(positive - negative) / total`` of the
items whose ``published_at`` falls in the last ``window`` seconds of event time (the newest
event time seen is the clock, so live runs and replays of the same feed agree).

    >>> from datetime import datetime, UTC
    >>> w = RollingCounts(window_seconds=60)
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    >>> for dt, s in [(0, "positive"), (10, "negative"), (20, "positive"), (30, "neutral")]:
    ...     w.add(t0 + dt, s)
    >>> w.count, round(w.index, 3)
    (4, 0.25)
    >>> w.expire(t0 + 75)   # items older than 75 - 60 = 15 s drop out
    >>> w.count, w.index
    (2, 0.5)
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

__all__ = ["RollingCounts", "SentimentTrends"]


class RollingCounts:
    """Counts of sentiments in a sliding event-time window."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self._events: deque[tuple[float, str, str]] = deque()
        self._counts: Counter[str] = Counter()

    def add(self, at: float, sentiment: str, item_id: str = "") -> None:
        self._events.append((at, sentiment, item_id))
        self._counts[sentiment] += 1

    def expire(self, now: float) -> None:
        """Drop events older than ``now - window_seconds`` (events arrive nearly in order)."""
        horizon = now - self.window_seconds
        while self._events and self._events[0][0] < horizon:
            _, sentiment, _ = self._events.popleft()
            self._counts[sentiment] -= 1

    @property
    def count(self) -> int:
        return len(self._events)

    def share(self, sentiment: str) -> float:
        return self._counts[sentiment] / len(self._events) if self._events else 0.0

    @property
    def index(self) -> float:
        if not self._events:
            return 0.0
        return (self._counts["positive"] - self._counts["negative"]) / len(self._events)

    def recent_ids(self, sentiment: str, limit: int) -> list[str]:
        """Ids of the newest ``limit`` events with ``sentiment`` (for alert context)."""
        ids = [i for _, s, i in reversed(self._events) if s == sentiment and i]
        return ids[:limit]


class SentimentTrends:
    """One ``RollingCounts`` per (key, window); keys are topics or watch-listed tickers."""

    def __init__(self, windows: Iterable[float]) -> None:
        self.windows = tuple(sorted(set(windows)))
        self._by_key: dict[tuple[str, float], RollingCounts] = {}
        self._now = float("-inf")

    def update(self, key: str, at: float, sentiment: str) -> None:
        self._now = max(self._now, at)
        for window in self.windows:
            counts = self._by_key.get((key, window))
            if counts is None:
                counts = self._by_key[(key, window)] = RollingCounts(window)
            counts.add(at, sentiment)

    def snapshot(self) -> dict[tuple[str, float], tuple[float, int]]:
        """``{(key, window): (index, count)}`` after expiring old events."""
        out = {}
        for k, counts in self._by_key.items():
            counts.expire(self._now)
            out[k] = (counts.index, counts.count)
        return out
