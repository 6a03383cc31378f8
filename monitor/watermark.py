"""The event-time clock of the sentiment windows and surge alerts: a watermark that no single item moves.

The clock (the *watermark*) is the ``(outliers + 1)``-th newest ``published_at`` among the last
``sample`` items, and it never goes back. Up to ``outliers`` items of any recent ``sample``
dated anywhere in the future (a typo, 2062, a producer with a broken clock) therefore cannot move
it; only ``outliers + 1`` items that agree can. In an ordered stream it trails the newest item by
``outliers`` items.

Items reach the windows in watermark order: an item dated after the watermark waits in a
bounded buffer and is released once the watermark reaches it; an item at or before the watermark
is released at once (late items are counted if they still fall inside a window, and expire from
it like any other). When more than ``max_pending`` items wait, the one dated farthest ahead is
discarded from the windows (it was still classified and published) and counted in ``discarded``.
So the windows only ever hold items in ``[watermark - span, watermark]``, their memory is bounded
whatever the timestamps, and an alert's ``at`` is never earlier than the items it counted. The
price: the newest ``outliers`` items of an ordered stream are counted when the next ones arrive.

Why not the minimum over Kafka partitions of each partition's newest event time: the pipeline
also runs on replays that must give the same alerts with or without Kafka, and a partition that
goes quiet would hold that clock back until a wall-clock idle timeout, which a replay cannot
reproduce. The cost of this choice: partitions more than a window apart in event time count as
late on the slower side (the codec dead-letters items dated more than an hour ahead of their Kafka
timestamp, ``bad_timestamp``).

    >>> w = Watermark(outliers=1, sample=5)
    >>> [w.push(at, f"i{at}") for at in (10.0, 20.0)]
    [[], ['i10.0']]
    >>> w.push(2_000_000_000.0, "typo")   # one item in 2033: the clock stays at 20
    ['i20.0']
    >>> w.now, w.push(30.0, "i30"), w.now
    (20.0, ['i30'], 30.0)
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Watermark"]

T = TypeVar("T")


class Watermark(Generic[T]):
    """The robust event-time clock and the buffer of items dated after it (module docstring)."""

    def __init__(self, outliers: int = 2, sample: int = 50, max_pending: int | None = None) -> None:
        if outliers < 0 or sample <= outliers:
            raise ValueError(f"need 0 <= outliers < sample, got outliers={outliers}, sample={sample}")
        self.outliers = outliers
        self.sample = sample
        self.max_pending = max_pending if max_pending is not None else sample
        self.now = float("-inf")
        """The watermark: Unix seconds, ``-inf`` until ``outliers + 1`` items were seen."""
        self.discarded = 0
        """Items dropped from the windows because too many waited ahead of the watermark."""
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []
        self._pending: list[tuple[float, int, T]] = []
        self._seq = 0

    def push(self, at: float, payload: T) -> list[T]:
        """Observe an item dated ``at``; return the payloads now due, in event-time order."""
        self._recent.append(at)
        bisect.insort(self._sorted, at)
        if len(self._recent) > self.sample:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        if len(self._sorted) > self.outliers:
            self.now = max(self.now, self._sorted[-1 - self.outliers])
        heapq.heappush(self._pending, (at, self._seq, payload))
        self._seq += 1
        if len(self._pending) > self.max_pending:  # the farthest ahead goes: the heap stays a heap
            far = max(range(len(self._pending)), key=lambda i: self._pending[i][:2])
            self._pending[far] = self._pending[-1]
            self._pending.pop()
            heapq.heapify(self._pending)
            self.discarded += 1
        due = []
        while self._pending and self._pending[0][0] <= self.now:
            due.append(heapq.heappop(self._pending)[2])
        return due

    @property
    def pending(self) -> int:
        """Items waiting for the watermark to reach them."""
        return len(self._pending)
