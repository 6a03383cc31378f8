"""What keeps the daemon up: isolating the message that breaks a batch, and waiting out the broker.

``isolate(run, n)`` calls ``run`` on the indices ``0..n-1`` of a batch; if it raises, the batch
is split in halves until the items that raise are alone: those are returned as failures (to be
dead-lettered ``processing_error``), the others' results are kept. A batch without a bad item
costs one call; one bad item among n costs about 2·log2(n) calls. A half that raised may have
done part of its work before the exception (e.g. updated a window) and is run again: the last
line of defence favours never stopping over exactness for that one batch.

    >>> def run(indices):
    ...     if 3 in indices:
    ...         raise TypeError("bad item")
    ...     return [i * 10 for i in indices]
    >>> results, failures = isolate(run, 6)
    >>> [r for part in results for r in part[1]], [(i, type(e).__name__) for i, e in failures]
    ([0, 10, 20, 40, 50], [(3, 'TypeError')])

``Outage`` tracks whether the broker answers: ``failed(err)`` on each failed flush or commit
(it returns how long to wait before the next try: 0.5 s doubling to a maximum), ``ok()`` when
one succeeds. It logs one line when the outage starts ("broker unreachable since ...") and one
when it ends, and keeps ``monitor_broker_unreachable_since_timestamp_seconds`` at the Unix time
the outage started (0 while the broker answers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from monitor.metrics import Metrics

__all__ = ["Outage", "describe_error", "isolate"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def isolate(
    run: Callable[[Sequence[int]], T], n: int
) -> tuple[list[tuple[Sequence[int], T]], list[tuple[int, Exception]]]:
    """``([(indices, result), ...] in index order, [(index, exception), ...])`` over ``range(n)``."""
    results: list[tuple[Sequence[int], T]] = []
    failures: list[tuple[int, Exception]] = []

    def attempt(indices: Sequence[int]) -> None:
        try:
            results.append((indices, run(indices)))
        except Exception as err:  # the last line of defence: anything a message can make the code raise
            if len(indices) == 1:
                failures.append((indices[0], err))
                return
            mid = len(indices) // 2
            attempt(indices[:mid])
            attempt(indices[mid:])

    attempt(list(range(n)))
    return results, failures


def describe_error(err: BaseException) -> str:
    """``ExceptionClass: message`` (message cut to 300 characters), for ``dlq.detail``."""
    return f"{type(err).__name__}: {str(err)[:300]}"


class Abandoned(Exception):
    """A stop was asked while the broker does not answer: leave without committing the batch in hand."""


class Outage:
    """Backoff and reporting while the broker does not answer."""

    def __init__(self, metrics: Metrics, *, backoff_max_s: float = 30.0, backoff_min_s: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self._since: float | None = None
        self._delay = backoff_min_s

    @property
    def since(self) -> float | None:
        """Unix time the current outage started, or None while the broker answers."""
        return self._since

    def failed(self, operation: str, err: BaseException) -> float:
        """Record a failed ``operation`` (flush or commit); return the seconds to wait before retrying."""
        self.metrics.broker_retries.labels(operation=operation).inc()
        if self._since is None:
            self._since = self._clock()
            self._delay = self.backoff_min_s
            self.metrics.broker_unreachable_since.set(self._since)
            log.error("broker unreachable since %s (%s failed: %s); retrying with backoff, nothing is committed "
                      "until the outputs are flushed", _iso(self._since), operation, describe_error(err))
        else:
            log.warning("broker still unreachable since %s (%.0f s); %s retry in %.1f s", _iso(self._since),
                        self._clock() - self._since, operation, self._delay)
        delay, self._delay = self._delay, min(self._delay * 2, self.backoff_max_s)
        return delay

    def retry(self, operation: str, attempt: Callable[[], object], stop: threading.Event,
              errors: tuple[type[BaseException], ...]) -> None:
        """Call ``attempt`` until it does not raise one of ``errors``, waiting ``failed``'s backoff between
        tries, for as long as the outage lasts; ``Abandoned`` if ``stop`` is set meanwhile."""
        while True:
            try:
                attempt()
            except errors as err:
                if stop.is_set():
                    raise Abandoned("stopping during a broker outage: the batch in hand is not committed") from err
                stop.wait(self.failed(operation, err))
                continue
            self.ok()
            return

    def ok(self) -> None:
        """The broker answered: end the outage, if there was one."""
        if self._since is not None:
            log.warning("broker reachable again after %.1f s (unreachable since %s); resuming",
                        self._clock() - self._since, _iso(self._since))
            self._since = None
            self.metrics.broker_unreachable_since.set(0)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
