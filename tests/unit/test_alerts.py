"""Negative-surge alerts: raised once on a surge with enough volume, held, cleared only after the clear
condition held for ``clear_seconds``; the event-time clock is a watermark no single item moves."""

from __future__ import annotations

import random
from datetime import datetime

import pytest

from monitor.alerts import SurgeDetector, SurgeStats, SurgeTracker
from monitor.config import AlertConfig
from monitor.records import Alert
from monitor.trends import MAX_SLOTS, SentimentTrends
from monitor.watermark import Watermark

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
    hold_seconds=0,
    clear_seconds=0,
    watermark_outliers=2,
    watermark_sample=20,
)


def tracker(cfg: AlertConfig = CFG, **kw: object) -> SurgeTracker:
    return SurgeTracker(SurgeDetector(cfg, **kw), watch_tickers=["NWE"])  # type: ignore[arg-type]


def feed(tr: SurgeTracker, start: float, seconds: float, every: float, negative_every: int,
         key: str = "Energy", tickers: tuple[str, ...] = ()) -> tuple[list[Alert], float]:
    """One item per ``every`` seconds; every ``negative_every``-th is negative. Returns the alert changes."""
    changes = []
    t, n = start, 0
    while t < start + seconds:
        sentiment = "negative" if n % negative_every == 0 else "neutral"
        changes.extend(tr.add(t, key, tickers, sentiment, f"{key}-{t:.0f}", "v1"))
        t += every
        n += 1
    return changes, t


def test_surge_raises_exactly_once_then_clears() -> None:
    tr = tracker()
    calm, t = feed(tr, 0.0, 3600, 10, 10)  # 10 % negative for an hour: the baseline
    assert calm == []
    surge, t = feed(tr, t, 900, 10, 1)  # all negative for 15 minutes
    assert [a.state for a in surge] == ["raised"]
    raised = surge[0]
    assert raised.key == "Energy" and raised.negative_share >= raised.raise_threshold >= 0.25
    assert raised.baseline_share < 0.2 and raised.raised_at == raised.at
    assert len(raised.example_ids) > 0
    after, _ = feed(tr, t, 1800, 10, 10)  # back to calm
    assert [a.state for a in after] == ["cleared"]
    assert after[0].alert_id == raised.alert_id and after[0].raised_at == raised.raised_at
    assert after[0].cleared_by == "share" and after[0].negative_share < after[0].clear_threshold


def test_low_volume_never_alerts() -> None:
    changes, _ = feed(tracker(), 0.0, 3600, 120, 1)  # all negative but 5 items per 10 minutes
    assert changes == []


def test_cooldown_suppresses_an_immediate_second_alert() -> None:
    tr = tracker()
    _, t = feed(tr, 0.0, 3600, 10, 10)
    first, t = feed(tr, t, 900, 10, 1)
    assert [a.state for a in first] == ["raised"]
    quiet, t = feed(tr, t, 900, 10, 10)
    assert [a.state for a in quiet] == ["cleared"]
    again, _ = feed(tr, t, 120, 5, 1)  # a new burst inside the cool-down
    assert again == []


def spans(alerts: list[Alert]) -> list[tuple[float, float]]:
    from datetime import datetime

    out = {}
    for a in alerts:
        out.setdefault(a.alert_id, []).append(datetime.fromisoformat(a.at).timestamp())
    return [(v[0], v[1]) for v in out.values() if len(v) == 2]


def test_volume_at_min_count_does_not_flap() -> None:
    """The demo's flap: a burst of just min_count items in a quiet key, whose window then slides below
    min_count. Without hysteresis it cleared (by volume, the share still high) soon after being raised;
    now it lives at least hold_seconds and ends only clear_seconds after the volume dropped."""
    cfg = AlertConfig(**{**CFG.__dict__, "hold_seconds": 1800.0, "clear_seconds": 600.0, "cooldown_seconds": 0.0})
    flappy = AlertConfig(**{**CFG.__dict__, "cooldown_seconds": 0.0})
    results = {}
    for name, c in (("hysteresis", cfg), ("none", flappy)):
        tr = tracker(c)
        _, t = feed(tr, 0.0, 7200, 120, 10, key="Macro")  # 5 items per window: under min_count
        burst, t = feed(tr, t, 300, 30, 1, key="Macro")  # 10 negative items in 5 minutes
        rest, t = feed(tr, t, 7200, 120, 10, key="Macro")
        results[name] = burst + rest
    flap = results["none"]
    assert [a.state for a in flap] == ["raised", "cleared"] and flap[1].cleared_by == "volume"
    ((up, down),) = spans(flap)
    assert down - up < 1800
    held = results["hysteresis"]
    assert [a.state for a in held] == ["raised", "cleared"]
    ((up, down),) = spans(held)
    assert down - up >= 1800.0


def test_clear_needs_the_condition_for_clear_seconds_and_a_dip_resets_it() -> None:
    cfg = AlertConfig(**{**CFG.__dict__, "hold_seconds": 0.0, "clear_seconds": 900.0})
    tr = tracker(cfg)
    _, t = feed(tr, 0.0, 3600, 10, 10)
    surge, t = feed(tr, t, 900, 10, 1)
    assert [a.state for a in surge] == ["raised"]
    # Calm for 750 s: the share falls under the clear threshold, but not for 900 s yet ...
    dip, t = feed(tr, t, 750, 10, 10)
    assert dip == []
    # ... a new burst resets the clear clock ...
    back, t = feed(tr, t, 300, 10, 1)
    assert back == []
    # ... and calm must again hold 900 s after the share fell under the threshold.
    calm, _ = feed(tr, t, 2400, 10, 10)
    assert [a.state for a in calm] == ["cleared"]
    from datetime import datetime

    assert datetime.fromisoformat(calm[0].at).timestamp() - t >= 900.0


def test_a_volume_drop_alone_ends_an_alert_only_after_clear_seconds() -> None:
    cfg = AlertConfig(**{**CFG.__dict__, "hold_seconds": 0.0, "clear_seconds": 1200.0})
    rows: list[SurgeStats] = []
    tr = tracker(cfg, on_stats=rows.append)
    _, t = feed(tr, 0.0, 3600, 10, 10)
    _, t = feed(tr, 0.0, 3600, 10, 10, key="Macro")
    surge, t = feed(tr, t, 900, 10, 1)
    assert [a.state for a in surge] == ["raised"]
    # Energy news stops; Macro news keeps the clock running and Energy's window empties.
    other, _ = feed(tr, t, 3600, 10, 10, key="Macro")
    cleared = [a for a in other if a.key == "Energy"]
    assert [a.state for a in cleared] == ["cleared"] and cleared[0].cleared_by == "volume"
    from datetime import datetime

    at = datetime.fromisoformat(cleared[0].at).timestamp()
    low = min(r.at for r in rows if r.key == "Energy" and r.active and r.count < cfg.min_count)
    assert at - low >= 1200.0  # the volume was low for clear_seconds before it cleared ...
    assert at - low < 1200.0 + 30  # ... and it cleared at the first check after that


def test_a_long_surge_does_not_clear_itself_through_its_own_baseline() -> None:
    """An hour of negative news in a quiet key: after one window the surge's items enter the baseline
    span; a baseline that followed them would put the clear threshold above the surge (the sample feed's
    Energy alert cleared 40 minutes into its hour). The baseline is frozen while the alert is active."""
    cfg = AlertConfig(**{**CFG.__dict__, "min_baseline_count": 50})
    tr = tracker(cfg)
    _, t = feed(tr, 0.0, 3600, 120, 10)  # 30 calm items: fewer than min_baseline_count, default baseline
    surge, t = feed(tr, t, 3600, 20, 1)  # an hour of negative items, 3 a minute
    assert [a.state for a in surge] == ["raised"]
    after, _ = feed(tr, t, 3600, 120, 10)
    assert [a.state for a in after] == ["cleared"]
    assert after[0].baseline_share == surge[0].baseline_share  # the thresholds it was raised on


def test_stats_trace_follows_the_alert() -> None:
    rows: list[SurgeStats] = []
    tr = tracker(on_stats=rows.append)
    _, t = feed(tr, 0.0, 3600, 10, 10)
    feed(tr, t, 900, 10, 1)
    energy = [r for r in rows if r.key == "Energy"]
    assert energy and all(r.scope == "topic" for r in energy)
    first_active = next(r for r in energy if r.active)
    assert first_active.negative_share >= first_active.raise_threshold
    assert all(not r.active for r in energy if r.at < first_active.at)
    assert len(energy) <= len({(r.count, r.negative_share, r.baseline, r.active) for r in energy}) * 2


# --- the event-time clock ---------------------------------------------------------------------------------
def test_one_item_dated_2062_does_not_stop_alerting() -> None:
    """Issue #11 point 6: the newest published_at was the clock, so one item from 2062 froze it."""
    results = []
    for poisoned in (False, True):
        tr = tracker()
        _, t = feed(tr, 0.0, 3600, 10, 10)
        if poisoned:
            tr.add(2_909_000_000.0, "Energy", (), "negative", "from-2062", "v1")
        surge, t = feed(tr, t, 900, 10, 1)
        after, _ = feed(tr, t, 1800, 10, 10)
        results.append([(a.state, datetime.fromisoformat(a.at).timestamp()) for a in surge + after])
        if poisoned:
            assert tr.now < 10_000  # the clock was not moved to 2062
    clean, dirty = results
    assert [s for s, _ in clean] == [s for s, _ in dirty] == ["raised", "cleared"]
    # While the outlier is in the watermark's sample, the clock trails one item less (10 s here).
    assert all(abs(a - b) <= 10.0 for (_, a), (_, b) in zip(clean, dirty, strict=True))


def test_outliers_plus_one_items_move_the_clock_fewer_do_not() -> None:
    w: Watermark[int] = Watermark(outliers=2, sample=10)
    for i in range(10):
        w.push(float(i), i)
    assert w.now == 7.0  # trails the newest by two items
    w.push(1e9, -1)
    w.push(1e9, -2)
    assert w.now == 9.0  # the newest regular item: the two outliers are skipped
    w.push(1e9, -3)
    assert w.now == 1e9


def test_items_wait_for_the_watermark_and_the_buffer_is_bounded() -> None:
    w: Watermark[float] = Watermark(outliers=2, sample=10, max_pending=5)
    for at in [5.0, 3.0, 4.0, 1.0, 2.0, 9.0, 8.0, 7.0, 6.0, 10.0]:
        due = w.push(at, at)
        assert due == sorted(due) and all(d <= w.now for d in due)
    assert w.pending == 2  # 9 and 10 wait: the watermark is 8
    t = 10.0
    for n in range(20):  # two items far ahead in every ten: they wait; the buffer stays bounded
        for at in (1e9 + n, 2e9 + n, *(t + k for k in range(1, 9))):
            assert all(d <= w.now for d in w.push(at, at))
            assert w.pending <= 5
        t += 8
    assert w.now == t and w.discarded >= 30  # the newest regular item


def test_isolated_outliers_never_move_the_clock() -> None:
    tr = tracker()
    for n in range(5000):
        at = 1e9 + n * 3.0 if n % 10 else 3e9 + n  # every tenth item dated decades ahead
        tr.add(at, "Energy", (), "neutral", f"i{n}", "v1")
    assert 1e9 + 4990 * 3 <= tr.now <= 1e9 + 5000 * 3


@pytest.mark.parametrize("seed", [0, 1])
def test_window_memory_is_bounded_whatever_the_timestamps(seed: int) -> None:
    rng = random.Random(seed)
    trends = SentimentTrends([900, 3600])
    tr = SurgeTracker(SurgeDetector(CFG), ["NWE"], trends)
    t = 1_700_000_000.0
    for n in range(20_000):
        t += rng.uniform(0, 5)
        kind = rng.random()
        at = t if kind < 0.9 else (t + rng.uniform(0, 1e9) if kind < 0.95 else t - rng.uniform(0, 1e7))
        tr.add(at, rng.choice(["Energy", "Macro"]), ("NWE",), rng.choice(["negative", "neutral"]), f"i{n}", "v1")
    states = list(tr.surge._keys.values())
    assert all(s.recent.slots <= MAX_SLOTS and s.history.slots <= MAX_SLOTS for s in states)
    assert all(c.slots <= MAX_SLOTS for c in trends._by_key.values())
    assert tr.clock.pending <= CFG.watermark_sample


def test_unlabelled_items_move_the_clock_without_being_counted() -> None:
    tr = tracker()
    for n in range(30):
        tr.add(float(n), "Energy", (), None, f"i{n}", "v1")
    assert tr.now == 27.0 and tr.surge._keys == {}


def test_items_count_once_the_watermark_reaches_them() -> None:
    """The windows hold items up to the watermark: in an ordered stream the newest watermark_outliers
    items are counted when the next ones arrive; far-ahead ones wait (bounded)."""
    trends = SentimentTrends([600])
    tr = SurgeTracker(SurgeDetector(CFG), (), trends)
    for n in range(10):
        tr.add(1000.0 + n, "Energy", (), "negative", f"i{n}", "v1")
    assert tr.snapshot()[("topic:Energy", 600)] == (-1.0, 10 - CFG.watermark_outliers)
    tr.add(1e10, "Energy", (), "positive", "ahead", "v1")
    tr.add(1010.0, "Energy", (), "negative", "i10", "v1")
    assert tr.snapshot()[("topic:Energy", 600)] == (-1.0, 10) and tr.clock.pending == 2  # 1010 and 1e10
