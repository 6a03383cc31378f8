"""Negative-surge alerts: raised once on a surge with enough volume, cleared when it ends."""

from __future__ import annotations

from monitor.alerts import SurgeDetector
from monitor.config import AlertConfig

CFG = AlertConfig(
    window_seconds=600,
    baseline_seconds=3600,
    min_count=10,
    ratio=2.0,
    min_delta=0.15,
    clear_ratio=1.3,
    cooldown_seconds=600,
    default_baseline=0.2,
    min_baseline_count=20,
)


def feed(det: SurgeDetector, start: float, seconds: int, every: float, negative_every: int, key: str = "Energy"):
    """One item per ``every`` seconds; every ``negative_every``-th is negative. Returns alerts per step."""
    changes = []
    t = start
    n = 0
    while t < start + seconds:
        sentiment = "negative" if n % negative_every == 0 else "neutral"
        det.update("topic", key, t, sentiment, f"id{n}")
        changes.extend(det.check("v1"))
        t += every
        n += 1
    return changes, t


def test_surge_raises_exactly_once_then_clears() -> None:
    det = SurgeDetector(CFG)
    calm, t = feed(det, 0.0, 3600, 10, 10)  # 10 % negative for an hour: the baseline
    assert calm == []
    surge, t = feed(det, t, 900, 10, 1)  # all negative for 15 minutes
    assert [a.state for a in surge] == ["raised"]
    assert surge[0].key == "Energy" and surge[0].negative_share >= 0.25
    assert surge[0].baseline_share < 0.2
    assert len(surge[0].example_ids) > 0
    after, _ = feed(det, t, 1800, 10, 10)  # back to calm
    assert [a.state for a in after] == ["cleared"]
    assert after[0].alert_id == surge[0].alert_id


def test_low_volume_never_alerts() -> None:
    det = SurgeDetector(CFG)
    changes, _ = feed(det, 0.0, 3600, 120, 1)  # all negative but 5 items per 10 minutes
    assert changes == []


def test_cooldown_suppresses_an_immediate_second_alert() -> None:
    det = SurgeDetector(CFG)
    _, t = feed(det, 0.0, 3600, 10, 10)
    first, t = feed(det, t, 900, 10, 1)
    assert [a.state for a in first] == ["raised"]
    quiet, t = feed(det, t, 610, 10, 10)
    assert [a.state for a in quiet] == ["cleared"]
    again, _ = feed(det, t, 120, 5, 1)  # a new burst inside the cool-down
    assert again == []
