"""Rolling sentiment counts over event time, and the sentiment index built on them.

The sentiment index of a topic over a window is ``(positive - negative) / total`` of the
items whose ``published_at`` falls in the last ``window`` seconds of event time. The clock is
the watermark of ``monitor.watermark`` (robust to items dated in the future), passed in by the
pipeline, so live runs and replays of the same feed agree.

Counts are kept per time slot of ``window / SLOTS`` seconds, so a window's memory is bounded
(at most ``MAX_SLOTS`` slots and a few example ids) whatever the rate or the timestamps; the
window's start is rounded down to its slot, so it may hold up to one slot more than ``window``.

    >>> from datetime import datetime, UTC
    >>> w = RollingCounts(window_seconds=60)
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    >>> for dt, s in [(0, "positive"), (10, "negative"), (20, "positive"), (30, "neutral")]:
    ...     w.add(t0 + dt, s)
    >>> w.count, round(w.index, 3)
    (4, 0.25)
    >>> w.expire(t0 + 75)   # items older than 75 - 60 = 15 s drop out
    True
    >>> w.count, w.index
    (2, 0.5)
    >>> w.add(t0 + 5, "negative")   # already outside the window: not counted
    >>> w.count, w.late
    (2, 1)
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from collections.abc import Iterable

__all__ = ["MAX_SLOTS", "SLOTS", "RollingCounts", "SentimentTrends"]

#: Time slots per window (the resolution of a window's edge: window / SLOTS).
SLOTS = 256
#: Slots a window may hold. More (only if items are added ahead of the clock, which the watermark's
#: buffer prevents in the pipeline) push the oldest slot out.
MAX_SLOTS = SLOTS + 2
#: Example ids kept per sentiment (the newest ones; an alert quotes up to 5).
KEEP_IDS = 8


class RollingCounts:
    """Counts of sentiments in a sliding event-time window (module docstring)."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self.resolution = window_seconds / SLOTS
        self.late = 0
        """Items added when already older than the window (not counted)."""
        self._slots: dict[int, dict[str, int]] = {}
        self._order: list[int] = []  # slot numbers, ascending
        self._counts: Counter[str] = Counter()
        self._total = 0
        self._ids: dict[str, deque[tuple[float, str]]] = {}
        self._horizon = float("-inf")

    def add(self, at: float, sentiment: str, item_id: str = "") -> None:
        if at < self._horizon:
            self.late += 1
            return
        slot = math.floor(at / self.resolution)
        counts = self._slots.get(slot)
        if counts is None:
            counts = self._slots[slot] = {}
            if not self._order or slot > self._order[-1]:
                self._order.append(slot)
            else:
                bisect.insort(self._order, slot)
            if len(self._order) > MAX_SLOTS:  # only if items arrive ahead of the clock: keep the newest
                self._drop_oldest()
        counts[sentiment] = counts.get(sentiment, 0) + 1
        self._counts[sentiment] += 1
        self._total += 1
        if item_id:
            self._ids.setdefault(sentiment, deque(maxlen=KEEP_IDS)).append((at, item_id))

    def expire(self, now: float) -> bool:
        """Drop the slots that lie wholly before ``now - window_seconds``; True if any was dropped."""
        if now - self.window_seconds > self._horizon:
            self._horizon = now - self.window_seconds
        if not self._order or now < (self._order[0] + 1) * self.resolution + self.window_seconds:
            return False  # the oldest slot is still inside the window (the common case: nothing to do)
        first = math.floor(self._horizon / self.resolution)
        while self._order and self._order[0] < first:
            self._drop_oldest()
        return True

    def _drop_oldest(self) -> None:
        counts = self._slots.pop(self._order.pop(0))
        for sentiment, n in counts.items():
            self._counts[sentiment] -= n
            self._total -= n

    @property
    def count(self) -> int:
        return self._total

    @property
    def slots(self) -> int:
        """Time slots held (at most ``MAX_SLOTS``)."""
        return len(self._order)

    def share(self, sentiment: str) -> float:
        return self._counts[sentiment] / self._total if self._total else 0.0

    @property
    def index(self) -> float:
        if not self._total:
            return 0.0
        return (self._counts["positive"] - self._counts["negative"]) / self._total

    def recent_ids(self, sentiment: str, limit: int) -> list[str]:
        """Ids of the newest (at most ``limit``, <= KEEP_IDS) events with ``sentiment`` still in the window."""
        kept = self._ids.get(sentiment, ())
        start = self._order[0] * self.resolution if self._order else float("inf")
        return [i for at, i in reversed(kept) if at >= start][:limit]


class SentimentTrends:
    """One ``RollingCounts`` per (key, window); keys are topics or watch-listed tickers."""

    def __init__(self, windows: Iterable[float]) -> None:
        self.windows = tuple(sorted(set(windows)))
        self._by_key: dict[tuple[str, float], RollingCounts] = {}

    def update(self, key: str, at: float, sentiment: str) -> None:
        for window in self.windows:
            counts = self._by_key.get((key, window))
            if counts is None:
                counts = self._by_key[(key, window)] = RollingCounts(window)
            counts.add(at, sentiment)

    def snapshot(self, now: float) -> dict[tuple[str, float], tuple[float, int]]:
        """``{(key, window): (index, count)}`` at event time ``now`` (the watermark), after expiring old events."""
        out = {}
        for k, counts in self._by_key.items():
            counts.expire(now)
            out[k] = (counts.index, counts.count)
        return out
