"""``model.threads: auto``: measure, at start, which intra-op thread count is fastest here.

More threads are not always faster: on a small or shared machine a second thread often gains
nothing or loses (every helper process competes for the same cores). The probe times the same
short forward pass at 1, 2, 4, ... threads up to the CPUs this process may use, best of
``repeats`` each, and picks the fastest; a count must beat the best smaller one by ``min_gain``
(5 %) to be chosen, so ties go to fewer threads. A probe costs about a second on MiniLM.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["ThreadProbe", "candidate_counts", "probe_threads", "usable_cpus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadProbe:
    """The chosen count and the best seconds per probe run of each count tried."""

    threads: int
    seconds: dict[int, float]

    def describe(self) -> str:
        """The choice and the timings, for the log.

        >>> ThreadProbe(2, {1: 0.1, 2: 0.06}).describe()
        '2 threads (1: 100.0 ms, 2: 60.0 ms)'
        """
        timings = ", ".join(f"{n}: {s * 1000:.1f} ms" for n, s in sorted(self.seconds.items()))
        return f"{self.threads} thread{'s' if self.threads != 1 else ''} ({timings})"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def candidate_counts(cpus: int) -> list[int]:
    """1, 2, 4, ... up to ``cpus``, and ``cpus`` itself.

    >>> candidate_counts(1), candidate_counts(6), candidate_counts(16)
    ([1], [1, 2, 4, 6], [1, 2, 4, 8, 16])
    """
    counts, n = [], 1
    while n < cpus:
        counts.append(n)
        n *= 2
    return [*counts, cpus]


def probe_threads(
    run_with: Callable[[int], Callable[[], object]],
    counts: Sequence[int] | None = None,
    repeats: int = 3,
    min_gain: float = 0.05,
) -> ThreadProbe:
    """Time ``run_with(n)()`` for each count ``n`` (one warm-up call, then best of ``repeats``).

    ``run_with(n)`` sets the thread count up (e.g. ``torch.set_num_threads`` or a new ONNX
    Runtime session) and returns the call to time.
    """
    counts = list(counts) if counts is not None else candidate_counts(usable_cpus())
    seconds: dict[int, float] = {}
    for n in counts:
        call = run_with(n)
        call()  # warm-up: first-call allocations and kernel selection
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - started)
        seconds[n] = best
    chosen = counts[0]
    for n in counts[1:]:
        if seconds[n] < seconds[chosen] * (1.0 - min_gain):
            chosen = n
    probe = ThreadProbe(chosen, seconds)
    log.info("thread probe: %s", probe.describe())
    return probe
