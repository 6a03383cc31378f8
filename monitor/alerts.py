"""Negative-surge detection per topic and per watch-listed ticker.

A surge is raised for a key when, over the last ``window_seconds`` of event time, at least
``min_count`` items were seen and the negative share is both at least ``ratio`` times its
baseline and at least ``min_delta`` above it. The baseline is the negative share over the
preceding ``baseline_seconds`` (falling back to ``default_baseline`` until that window holds
``min_baseline_count`` items). The alert clears once the share falls below
``baseline * clear_ratio`` or the volume drops below ``min_count``; after clearing, the key
stays quiet for ``cooldown_seconds``. Each change of state is returned once as an ``Alert``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.config import AlertConfig
from monitor.records import Alert
from monitor.trends import RollingCounts

__all__ = ["SurgeDetector"]


@dataclass
class _KeyState:
    recent: RollingCounts
    history: RollingCounts  # recent + baseline span; baseline = history minus recent
    active_since: float | None = None
    quiet_until: float = float("-inf")


class SurgeDetector:
    """Watches negative shares per ``(scope, key)``; ``update`` then ``check`` returns state changes."""

    def __init__(self, config: AlertConfig) -> None:
        self.config = config
        self._keys: dict[tuple[str, str], _KeyState] = {}
        self._now = float("-inf")

    def update(self, scope: str, key: str, at: float, sentiment: str, item_id: str) -> None:
        state = self._keys.get((scope, key))
        if state is None:
            state = _KeyState(
                recent=RollingCounts(self.config.window_seconds),
                history=RollingCounts(self.config.window_seconds + self.config.baseline_seconds),
            )
            self._keys[(scope, key)] = state
        state.recent.add(at, sentiment, item_id)
        state.history.add(at, sentiment, item_id)
        self._now = max(self._now, at)

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

    def check(self, model_version: str) -> list[Alert]:
        """Evaluate every key at the current event time; return raised and cleared alerts."""
        cfg = self.config
        changes = []
        for (scope, key), state in sorted(self._keys.items()):
            state.recent.expire(self._now)
            state.history.expire(self._now)
            share = state.recent.share("negative")
            count = state.recent.count
            baseline = self._baseline(state)
            if state.active_since is None:
                surging = (
                    count >= cfg.min_count
                    and share >= baseline * cfg.ratio
                    and share - baseline >= cfg.min_delta
                )
                if surging and self._now >= state.quiet_until:
                    state.active_since = self._now
                    changes.append(self._alert("raised", scope, key, state, share, baseline, model_version))
            elif count < cfg.min_count or share < baseline * cfg.clear_ratio:
                changes.append(self._alert("cleared", scope, key, state, share, baseline, model_version))
                state.active_since = None
                state.quiet_until = self._now + cfg.cooldown_seconds
        return changes

    def _alert(
        self, status: str, scope: str, key: str, state: _KeyState, share: float, baseline: float, model_version: str
    ) -> Alert:
        assert state.active_since is not None
        started = datetime.fromtimestamp(state.active_since, UTC).isoformat()
        alert_id = hashlib.sha1(f"{scope}|{key}|{started}".encode()).hexdigest()[:16]
        return Alert(
            alert_id=alert_id,
            state=status,
            scope=scope,
            key=key,
            negative_share=round(share, 4),
            baseline_share=round(baseline, 4),
            window_count=state.recent.count,
            window_seconds=self.config.window_seconds,
            at=datetime.fromtimestamp(self._now, UTC).isoformat(),
            model_version=model_version,
            example_ids=tuple(state.recent.recent_ids("negative", 5)),
        )
