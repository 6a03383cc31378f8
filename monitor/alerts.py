"""Negative-surge alerts per topic and per watch-listed ticker, with hysteresis in event time.

Statistics, per key, at event time ``now`` (the watermark, ``monitor.watermark``):

- ``share``: the negative share of the ``count`` items in ``(now - window_seconds, now]``;
- ``baseline``: the negative share over the ``baseline_seconds`` before that window
  (``default_baseline`` until that span holds ``min_baseline_count`` items);
- raise threshold ``max(baseline * ratio, baseline + min_delta)``; clear threshold
  ``max(baseline * clear_ratio, baseline + clear_delta)`` (the delta keeps it above the noise of
  a small share: with a baseline of 0.1 and 15 items a window, 2 negatives are 0.133).

The state machine (this is the one place it is written down; checked after every item):

    QUIET --raise--> ACTIVE --clear--> COOLING --cooldown over--> QUIET

- *raise*: ``count >= min_count`` and ``share >= raise threshold``, and the key is not cooling
  down. Emits a ``raised`` Alert; the alert is active from ``now``.
- while ACTIVE, the baseline (and so both thresholds) stays at its value when the alert was
  raised: the surge's own items, as they move into the baseline span, must not raise the bar the
  surge is measured against (otherwise an hour-long surge clears itself after one window);
- while ACTIVE, the *clear condition* is ``share < clear threshold`` or ``count < min_count``
  (a volume drop). ``clear_since`` is the first check at which it held; any check at which it
  does not hold resets it.
- *clear*: the alert has been active for at least ``hold_seconds`` **and** the clear condition
  has held continuously for at least ``clear_seconds``. Emits a ``cleared`` Alert (with
  ``cleared_by``: ``share`` or ``volume``). A volume drop alone therefore never ends an alert
  sooner than ``clear_seconds`` after it began, and no alert ends within ``hold_seconds``.
- COOLING: no new alert for the key until ``cooldown_seconds`` after the clear.

Checks happen when items arrive: after a gap with no items the first check sees the emptied
window, and the alert clears ``clear_seconds`` of event time later (not at the gap's start).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.config import AlertConfig
from monitor.records import Alert
from monitor.trends import RollingCounts, SentimentTrends
from monitor.watermark import Watermark

__all__ = ["SurgeDetector", "SurgeStats", "SurgeTracker", "describe"]


@dataclass(frozen=True)
class SurgeStats:
    """The statistic of one key at one check, as the detector saw it (for reports)."""

    at: float
    scope: str
    key: str
    count: int
    negative_share: float
    baseline: float
    raise_threshold: float
    clear_threshold: float
    active: bool


@dataclass
class _KeyState:
    recent: RollingCounts
    history: RollingCounts  # recent + baseline span; baseline = history minus recent
    active_since: float | None = None
    frozen_baseline: float = 0.0  # the baseline when the alert was raised (used while active)
    clear_since: float | None = None
    quiet_until: float = float("-inf")
    last: tuple[int, float, float, bool] | None = None  # the last traced (count, share, baseline, active)


class SurgeDetector:
    """Watches negative shares per ``(scope, key)``; ``update`` then ``check(now)`` returns state changes.

    ``on_stats`` (optional) receives a ``SurgeStats`` for every key whose statistic or state
    changed at a check: the series a report plots against the thresholds.
    """

    def __init__(self, config: AlertConfig, on_stats: Callable[[SurgeStats], None] | None = None) -> None:
        self.config = config
        self.on_stats = on_stats
        self._keys: dict[tuple[str, str], _KeyState] = {}
        self._sorted: list[tuple[tuple[str, str], _KeyState]] = []  # the keys in the order they are checked
        self._dirty: set[tuple[str, str]] = set()  # keys with items added since the last check

    def update(self, scope: str, key: str, at: float, sentiment: str, item_id: str) -> None:
        state = self._keys.get((scope, key))
        if state is None:
            state = _KeyState(
                recent=RollingCounts(self.config.window_seconds),
                history=RollingCounts(self.config.window_seconds + self.config.baseline_seconds),
            )
            self._keys[(scope, key)] = state
            self._sorted = sorted(self._keys.items())
        state.recent.add(at, sentiment, item_id)
        state.history.add(at, sentiment, item_id)
        self._dirty.add((scope, key))

    @property
    def active(self) -> list[tuple[str, str]]:
        return [k for k, s in self._keys.items() if s.active_since is not None]

    def _baseline(self, state: _KeyState) -> float:
        base_count = state.history.count - state.recent.count
        if base_count < self.config.min_baseline_count:
            return self.config.default_baseline
        base_negative = state.history.share("negative") * state.history.count - (
            state.recent.share("negative") * state.recent.count
        )
        return base_negative / base_count

    def thresholds(self, baseline: float) -> tuple[float, float]:
        """``(raise threshold, clear threshold)`` of the negative share for ``baseline``."""
        cfg = self.config
        return (max(baseline * cfg.ratio, baseline + cfg.min_delta),
                max(baseline * cfg.clear_ratio, baseline + cfg.clear_delta))

    def check(self, model_version: str, now: float) -> list[Alert]:
        """Evaluate every key at event time ``now``; return raised and cleared alerts (module docstring)."""
        cfg = self.config
        changes = []
        dirty, self._dirty = self._dirty, set()
        for (scope, key), state in self._sorted:
            expired = state.recent.expire(now) | state.history.expire(now)
            cooling = state.quiet_until > float("-inf")
            if not (expired or cooling or state.active_since is not None or (scope, key) in dirty):
                continue  # quiet, and its counts did not change: its raise condition is still false
            share = state.recent.share("negative")
            count = state.recent.count
            baseline = self._baseline(state) if state.active_since is None else state.frozen_baseline
            raise_at, clear_at = self.thresholds(baseline)
            if state.active_since is None:
                if count >= cfg.min_count and share >= raise_at and now >= state.quiet_until:
                    state.active_since, state.clear_since, state.frozen_baseline = now, None, baseline
                    changes.append(self._alert("raised", scope, key, state, share, baseline, now, model_version))
                if now >= state.quiet_until:
                    state.quiet_until = float("-inf")  # the cool-down is over
            else:
                volume_low = count < cfg.min_count
                if volume_low or share < clear_at:
                    state.clear_since = now if state.clear_since is None else state.clear_since
                else:
                    state.clear_since = None
                if (state.clear_since is not None and now - state.clear_since >= cfg.clear_seconds
                        and now - state.active_since >= cfg.hold_seconds):
                    changes.append(self._alert("cleared", scope, key, state, share, baseline, now, model_version,
                                               cleared_by="volume" if volume_low else "share"))
                    state.active_since = state.clear_since = None
                    state.quiet_until = now + cfg.cooldown_seconds
            if self.on_stats is not None:
                self._trace(now, scope, key, state, count, share, baseline)
        return changes

    def _trace(self, now: float, scope: str, key: str, state: _KeyState, count: int, share: float,
               baseline: float) -> None:
        assert self.on_stats is not None
        current = (count, round(share, 4), round(baseline, 4), state.active_since is not None)
        if current == state.last:
            return
        state.last = current
        raise_at, clear_at = self.thresholds(baseline)
        self.on_stats(SurgeStats(now, scope, key, count, current[1], current[2], round(raise_at, 4),
                                 round(clear_at, 4), current[3]))

    def _alert(self, status: str, scope: str, key: str, state: _KeyState, share: float, baseline: float,
               now: float, model_version: str, cleared_by: str = "") -> Alert:
        assert state.active_since is not None
        started = datetime.fromtimestamp(state.active_since, UTC).isoformat()
        alert_id = hashlib.sha1(f"{scope}|{key}|{started}".encode()).hexdigest()[:16]
        raise_at, clear_at = self.thresholds(baseline)
        return Alert(
            alert_id=alert_id,
            state=status,
            scope=scope,
            key=key,
            negative_share=round(share, 4),
            baseline_share=round(baseline, 4),
            window_count=state.recent.count,
            window_seconds=self.config.window_seconds,
            at=datetime.fromtimestamp(now, UTC).isoformat(),
            model_version=model_version,
            example_ids=tuple(state.recent.recent_ids("negative", 5)),
            raised_at=started,
            raise_threshold=round(raise_at, 4),
            clear_threshold=round(clear_at, 4),
            cleared_by=cleared_by,
        )


class SurgeTracker:
    """One item at a time, in this order: advance the watermark (``monitor.watermark``); release the
    items it has reached into the sentiment windows (``trends``, optional) and the surge windows (the
    topic, and each watch-listed ticker); check every key at the watermark.

    The daemon's pipeline, a replay and the replay's ground truth all go through ``add``, so
    they agree on the clock and on which items a window holds.
    """

    def __init__(self, surge: SurgeDetector, watch_tickers: Iterable[str] = (),
                 trends: SentimentTrends | None = None) -> None:
        cfg = surge.config
        self.surge = surge
        self.trends = trends
        self.watch_tickers = frozenset(t.upper() for t in watch_tickers)
        self.clock: Watermark[tuple[float, str, tuple[str, ...], str, str]] = Watermark(
            cfg.watermark_outliers, cfg.watermark_sample)

    @property
    def now(self) -> float:
        return self.clock.now

    def add(self, at: float, topic: str, tickers: Iterable[str], sentiment: str | None, item_id: str,
            model_version: str) -> list[Alert]:
        """Observe one item (``sentiment=None``: it moves the clock but is not counted); return alert changes."""
        for r_at, r_topic, r_tickers, r_sentiment, r_id in self.clock.push(
                at, (at, topic, tuple(tickers), sentiment or "", item_id)):
            if not r_sentiment:
                continue
            if self.trends is not None:
                self.trends.update(f"topic:{r_topic}", r_at, r_sentiment)
            self.surge.update("topic", r_topic, r_at, r_sentiment, r_id)
            for ticker in r_tickers:
                if ticker in self.watch_tickers:
                    if self.trends is not None:
                        self.trends.update(f"ticker:{ticker}", r_at, r_sentiment)
                    self.surge.update("ticker", ticker, r_at, r_sentiment, r_id)
        if self.clock.now == float("-inf"):
            return []
        return self.surge.check(model_version, self.clock.now)

    def snapshot(self) -> dict[tuple[str, float], tuple[float, int]]:
        """The sentiment index per (key, window) at the watermark (empty without ``trends``)."""
        if self.trends is None or self.clock.now == float("-inf"):
            return {}
        return self.trends.snapshot(self.clock.now)


def describe(alert: Alert) -> str:
    """One log line for a state change, in event time (the daemon's log times are wall-clock times).

    >>> a = Alert("id", "cleared", "topic", "Energy | Oil", 0.1, 0.2, 3, 900.0, "2026-03-03T23:44:04+00:00", "v1",
    ...           raised_at="2026-03-03T22:27:25+00:00", raise_threshold=0.4, clear_threshold=0.26,
    ...           cleared_by="volume")
    >>> for part in describe(a).split("; "):
    ...     print(part)
    surge alert cleared: topic=Energy | Oil at 2026-03-03T23:44:04+00:00 (event time), 77 min after it was raised
    by volume: n=3 (share 0.10, clear threshold 0.26)
    """
    head = f"surge alert {alert.state}: {alert.scope}={alert.key} at {alert.at} (event time)"
    if alert.state == "raised":
        return (f"{head}; share {alert.negative_share:.2f} >= raise threshold {alert.raise_threshold:.2f} "
                f"(baseline {alert.baseline_share:.2f}), n={alert.window_count}")
    minutes = (datetime.fromisoformat(alert.at) - datetime.fromisoformat(alert.raised_at)).total_seconds() / 60
    return (f"{head}, {minutes:.0f} min after it was raised; by {alert.cleared_by}: n={alert.window_count} "
            f"(share {alert.negative_share:.2f}, clear threshold {alert.clear_threshold:.2f})")

