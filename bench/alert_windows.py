"""Speed and memory of the alert windows: slot counts behind a watermark vs the former per-item deques.

The former design (``Baseline`` below: the detector before issue #11 point 6 / #14, its per-item
work copied faithfully) kept every item of a window in a deque, with the newest ``published_at`` as
the clock. The current one (``monitor.alerts.SurgeTracker``) keeps counts per time slot behind a
watermark. Both see the same
stream, interleaved run by run: 6 hours of items for 20 topic keys and 4 ticker keys, at several
rates, plus a stream where 1 % of the items are dated 30 years ahead. Printed per case: items/s
and peak traced memory (tracemalloc) of each, and the ratios.

    nice -n 10 .venv/bin/python bench/alert_windows.py             # about a minute
    nice -n 10 .venv/bin/python bench/alert_windows.py --quick     # seconds
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc
from collections import Counter, deque
from collections.abc import Callable

from monitor.alerts import SurgeDetector, SurgeTracker
from monitor.config import AlertConfig

TOPICS = [f"topic-{n}" for n in range(20)]
TICKERS = ["AAA", "BBB", "CCC", "DDD"]


class _Deque:
    """The former RollingCounts: every event in a deque, expired from the front."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.events: deque[tuple[float, str, str]] = deque()
        self.counts: Counter[str] = Counter()

    def add(self, at: float, sentiment: str, item_id: str) -> None:
        self.events.append((at, sentiment, item_id))
        self.counts[sentiment] += 1

    def expire(self, now: float) -> None:
        horizon = now - self.window
        while self.events and self.events[0][0] < horizon:
            _, s, _ = self.events.popleft()
            self.counts[s] -= 1

    def share(self, sentiment: str) -> float:
        return self.counts[sentiment] / len(self.events) if self.events else 0.0


class Baseline:
    """The former SurgeDetector's per-item work, faithfully (git a361fcd monitor/alerts.py): the newest
    event time as the clock, per-item deques, every key expired and evaluated at every check."""

    def __init__(self, cfg: AlertConfig) -> None:
        self.cfg = cfg
        self.keys: dict[tuple[str, str], list[object]] = {}
        self.now = float("-inf")
        self.raised = 0

    def add(self, at: float, topic: str, tickers: tuple[str, ...], sentiment: str, item_id: str) -> None:
        cfg = self.cfg
        for key in [("topic", topic), *(("ticker", t) for t in tickers)]:
            state = self.keys.get(key)
            if state is None:  # recent, history, active_since, quiet_until
                state = self.keys[key] = [_Deque(cfg.window_seconds),
                                          _Deque(cfg.window_seconds + cfg.baseline_seconds), None, float("-inf")]
            state[0].add(at, sentiment, item_id)  # type: ignore[attr-defined]
            state[1].add(at, sentiment, item_id)  # type: ignore[attr-defined]
        self.now = max(self.now, at)
        for _key, state in sorted(self.keys.items()):
            recent, history = state[0], state[1]
            assert isinstance(recent, _Deque) and isinstance(history, _Deque)
            recent.expire(self.now)
            history.expire(self.now)
            share, count = recent.share("negative"), len(recent.events)
            base_count = len(history.events) - count
            baseline = cfg.default_baseline if base_count < cfg.min_baseline_count else (
                history.share("negative") * len(history.events) - share * count) / base_count
            if state[2] is None:
                if (count >= cfg.min_count and share >= baseline * cfg.ratio and share - baseline >= cfg.min_delta
                        and self.now >= state[3]):  # type: ignore[operator]
                    state[2] = self.now
                    self.raised += 1
            elif count < cfg.min_count or share < baseline * cfg.clear_ratio:
                state[2], state[3] = None, self.now + cfg.cooldown_seconds


def stream(rate: float, hours: float, future_share: float, seed: int) -> list[tuple[float, str, tuple[str, ...],
                                                                                     str, str]]:
    rng = random.Random(seed)
    out = []
    t = 1_770_000_000.0
    for n in range(int(rate * hours * 3600)):
        t += rng.expovariate(rate)
        at = t + 1e9 if rng.random() < future_share else t
        tickers = (rng.choice(TICKERS),) if rng.random() < 0.3 else ()
        out.append((at, rng.choice(TOPICS), tickers, rng.choice(("negative", "neutral", "positive")), f"i{n}"))
    return out


def measure(make: Callable[[], Callable[..., object]], items: list[tuple[float, str, tuple[str, ...], str, str]]
            ) -> tuple[float, float]:
    """(items per second, peak traced MiB) of feeding ``items`` to a fresh ``make()``."""
    add = make()
    tracemalloc.start()
    started = time.perf_counter()
    for item in items:
        add(*item)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return len(items) / seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter streams")
    args = parser.parse_args()
    cfg = AlertConfig()
    cases = [(0.1, 6.0, 0.0), (1.0, 6.0, 0.0), (1.0, 6.0, 0.01)] if args.quick else \
        [(0.1, 6.0, 0.0), (1.0, 6.0, 0.0), (5.0, 6.0, 0.0), (1.0, 6.0, 0.01)]
    print(f"{'items/s in':>10} {'hours':>5} {'future':>6} {'items':>7} | {'before: items/s':>15} {'MiB':>6} | "
          f"{'now: items/s':>12} {'MiB':>6} | {'speed x':>7} {'memory x':>8}")
    for rate, hours, future in cases:
        items = stream(rate, hours, future, seed=0)

        def old() -> Callable[..., object]:
            return Baseline(cfg).add

        def new() -> Callable[..., object]:
            tracker = SurgeTracker(SurgeDetector(cfg), TICKERS)
            return lambda at, topic, tickers, s, i: tracker.add(at, topic, tickers, s, i, "v")

        runs = {"old": [], "new": []}  # interleaved: old, new, old, new
        for _ in range(1 if args.quick else 2):
            runs["old"].append(measure(old, items))
            runs["new"].append(measure(new, items))
        (o_speed, o_mem), (n_speed, n_mem) = (max(runs[k], key=lambda r: r[0]) for k in ("old", "new"))
        print(f"{rate:>10} {hours:>5} {future:>6} {len(items):>7} | {o_speed:>15.0f} {o_mem:>6.2f} | "
              f"{n_speed:>12.0f} {n_mem:>6.2f} | {n_speed / o_speed:>7.2f} {n_mem / o_mem:>8.2f}")


if __name__ == "__main__":
    main()
