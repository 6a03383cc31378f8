"""How a replay cuts the event stream into micro-batches, and how it paces them.

Both replay paths (direct and ``--via-kafka``) hand the pipeline the *same* batches, so their
results agree exactly: the predictor pads per batch, so batch boundaries can move the fifth
decimal of a probability (surge alerts are checked per item and do not depend on them).

A batch is a run of consecutive events of one kind, as the daemon would poll it:

- *items*: at most ``max_batch``; with a window (``window_s``: the daemon's
  ``batch.max_wait_ms``, the default ``live`` batching), a batch also closes once an item is more
  than ``window_s`` seconds of event time after the batch's first item: the batches a live daemon
  forms when the feed arrives in real time. Without a window (``backlog``), every batch is full,
  as for a daemon catching up on a backlog: fewer, larger batches, but alerts are checked only
  once per ``max_batch`` items;
- *labels* (only when a learner is on; without one labels change no result): at most
  ``max_batch`` consecutive label events. An items batch never runs past a label event, so each
  label reaches the learner after exactly the items that precede it in event time.

    >>> from monitor.replay.feeds import events_of, parse_rows
    >>> rows = [{"id": f"i{n}", "text": "x", "source": "s", "published_at": f"2026-03-02T09:00:{n:02d}Z",
    ...          "sentiment": "neutral", "label_delay_s": 2.5} for n in range(5)]
    >>> events = events_of(parse_rows(rows, "feed"))
    >>> [b.describe() for b in plan_batches(events, max_batch=2, with_labels=True)]
    ['items i0,i1', 'items i2', 'labels i0', 'items i3', 'labels i1', 'items i4', 'labels i2,i3', 'labels i4']
    >>> [b.describe() for b in plan_batches(events, max_batch=3, with_labels=False)]
    ['items i0,i1,i2', 'items i3,i4']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from monitor.records import Label, NewsItem
from monitor.replay.feeds import Event

__all__ = ["Batch", "Pacer", "plan_batches"]


@dataclass(frozen=True)
class Batch:
    kind: str
    """``items`` or ``labels``."""
    events: tuple[Event, ...]

    @property
    def items(self) -> list[NewsItem]:
        return [e.item for e in self.events if e.kind == "item"]

    @property
    def labels(self) -> list[Label]:
        return [e.label for e in self.events if e.label is not None]

    @property
    def end(self) -> float:
        """Event time of the last event: when the batch is complete."""
        return self.events[-1].at

    def describe(self) -> str:
        return f"{self.kind} {','.join(e.id for e in self.events)}"


def plan_batches(
    events: Sequence[Event], *, max_batch: int, with_labels: bool, window_s: float | None = None
) -> list[Batch]:
    """Cut ``events`` (in event order) into batches (module docstring)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    batches: list[Batch] = []
    current: list[Event] = []
    kind = ""

    def close() -> None:
        nonlocal current
        if current:
            batches.append(Batch(kind, tuple(current)))
        current = []

    for e in events:
        if e.kind == "label" and not with_labels:
            continue
        this = "items" if e.kind == "item" else "labels"
        full = len(current) >= max_batch
        late = this == "items" and window_s is not None and current and e.at - current[0].at > window_s
        if this != kind or full or late:
            close()
            kind = this
        current.append(e)
    close()
    return batches


class Pacer:
    """Sleeps so that event time runs ``speed`` times faster than wall time (``speed <= 0``: no sleeping)."""

    def __init__(
        self,
        speed: float = 0.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.speed = speed
        self._sleep = sleep
        self._clock = clock
        self._origin: tuple[float, float] | None = None  # (event time, wall time) of the first event

    def wait_until(self, at: float) -> float:
        """Sleep until event time ``at`` is due; return the seconds slept."""
        if self.speed <= 0:
            return 0.0
        if self._origin is None:
            self._origin = (at, self._clock())
            return 0.0
        event0, wall0 = self._origin
        delay = wall0 + (at - event0) / self.speed - self._clock()
        if delay > 0:
            self._sleep(delay)
            return delay
        return 0.0
