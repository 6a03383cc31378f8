"""Drift signals, the river detector factory (a contract test over every name) and DriftWatch."""

from __future__ import annotations

import random

import pytest

from monitor.config import ConfigError
from monitor.drift import DETECTORS, DriftWatch, head_errors, is_binary, label_free_values, make_detector
from monitor.drift.signals import HARMFUL_DIRECTION, SIGNALS, error_signal

#: Detectors that do not detect change: NoDrift never fires, DummyDriftDetector fires on a schedule.
NOT_DETECTING = {"NoDrift", "DummyDriftDetector"}
#: Measured false alarms after a *fall* of the error rate (500 values, seeds 0-1): EDDM alarms on
#: stationary streams now and then (river 0.26); every other detector never does.
FALSE_ALARMS = {"EDDM": 2}


def _errors(p_before: float, p_after: float, seed: int, n: int = 500) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < (p_before if i < n else p_after)) for i in range(2 * n)]


def _harmful_at(name: str, stream: list[float], n: int = 500) -> list[int]:
    """Positions (relative to the change at ``n``) where a rising-error watch reports drift."""
    watch = DriftWatch(make_detector(name, {}, "learning.settings.detector"), direction="up")
    return [i - n for i, x in enumerate(stream) if watch.update(x)]


def test_every_river_detector_is_supported() -> None:
    assert {"ADWIN", "KSWIN", "PageHinkley", "DDM", "EDDM", "FHDDM", "HDDMA", "HDDMW"} <= set(DETECTORS)
    assert "DriftRetrainingClassifier" not in DETECTORS  # a classifier wrapper, not a detector


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_contract(name: str) -> None:
    """Every name builds (any case), takes the error stream, and reports rises but not falls."""
    detector = make_detector(name.lower(), {}, "learning.settings.detector")
    assert type(detector).__name__ == name
    rising = [_harmful_at(name, _errors(0.05, 0.6, seed)) for seed in range(2)]
    falling = [_harmful_at(name, _errors(0.6, 0.05, seed)) for seed in range(2)]
    if name == "NoDrift":
        assert rising == falling == [[], []]
    elif name == "DummyDriftDetector":  # river's periodic trigger: every t_0 = 300 values, drift or not
        assert all({(at + 500 + 1) % 300 for at in fired} == {0} for fired in rising if fired)
    else:
        for fired in rising:  # detected within a bounded delay after the error rate rose
            assert any(0 <= at < 250 for at in fired), (name, fired)
        for fired in falling:  # a falling error rate (a better model) is not reported as drift
            assert sum(at >= 0 for at in fired) <= FALSE_ALARMS.get(name, 0), (name, fired)


@pytest.mark.parametrize("name", sorted(n for n in DETECTORS if not is_binary(n) and n not in NOT_DETECTING))
def test_real_valued_detectors_see_uncertainty_rise(name: str) -> None:
    rng = random.Random(1)
    stream = [rng.uniform(0.05, 0.25) for _ in range(500)] + [rng.uniform(0.3, 0.6) for _ in range(500)]
    fired = _harmful_at(name, stream)
    assert any(0 <= at < 300 for at in fired), fired


def test_factory_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^learning\.settings\.detector: unknown detector 'FOO' \(known: ADWIN, "):
        make_detector("FOO", {}, "learning.settings.detector")
    with pytest.raises(ConfigError, match=r"learning\.settings\.detector_params\.dleta: ADWIN has no parameter"):
        make_detector("ADWIN", {"dleta": 0.1}, "learning.settings.detector")
    with pytest.raises(ConfigError, match=r"learning\.settings\.detector_params: KSWIN.*rejected"):
        make_detector("KSWIN", {"alpha": 2.0}, "learning.settings.detector")
    assert make_detector("PageHinkley", {"threshold": 5.0}, "k").threshold == 5.0  # type: ignore[union-attr]


def test_watch_keeps_rolling_mean_and_counts() -> None:
    watch = DriftWatch(make_detector("NoDrift", {}, "k"), direction="up", window=4)
    for x in (1, 1, 0, 0, 0, 0):
        watch.update(x)
    assert watch.mean == 0.0 and watch.count == 6 and watch.detections == 0 and not watch.drift_detected
    with pytest.raises(ValueError, match="direction"):
        DriftWatch(make_detector("ADWIN", {}, "k"), direction="sideways")


def test_watch_direction_down_and_both() -> None:
    stream = _errors(0.6, 0.05, seed=0)
    for direction, expect in (("down", True), ("both", True), ("up", False)):
        watch = DriftWatch(make_detector("ADWIN", {}, "k"), direction=direction)
        fired = [i for i, x in enumerate(stream) if watch.update(x)]
        assert any(i >= 500 for i in fired) is expect, direction


def test_signals() -> None:
    assert head_errors("A", "positive", topic=None, sentiment="positive") == {"sentiment": 0.0}
    assert head_errors("A", "positive", topic="B", sentiment=None) == {"topic": 1.0}
    assert label_free_values(0.9, "positive", ("sentiment_mix", "confidence")) == {"sentiment_mix": 1.0,
                                                                                 "confidence": 0.1}
    with pytest.raises(ValueError, match="unknown label-free signal"):
        label_free_values(0.9, "positive", ("entropy",))
    assert set(HARMFUL_DIRECTION) == set(SIGNALS) and error_signal("sentiment") in SIGNALS


def test_accuracy_floor_needs_a_full_window_of_the_serving_version() -> None:
    from monitor.drift import DriftTracker

    t = DriftTracker("ADWIN", {}, "ADWIN", {}, (), window=200, version="v1", floor_window=50)
    for _ in range(49):  # wrong from the first label, but fewer labels than the floor's window
        t.update_label("v1", "A", "positive", topic=None, sentiment="negative")
    assert t.below_floor(0.8) is None and t.recent_accuracy("sentiment") == (0.0, 49)
    t.update_label("v1", "A", "positive", topic=None, sentiment="negative")
    assert t.below_floor(0.8) == "sentiment accuracy 0.000 < floor 0.800 over 50 labels"
    t.update_label("v0", "A", "positive", topic="A", sentiment=None)  # another version's label: ignored
    assert t.recent_accuracy("topic") == (None, 0)
    for _ in range(50):  # right answers push the wrong ones out of the window
        t.update_label("v1", "A", "negative", topic=None, sentiment="negative")
    assert t.below_floor(0.8) is None and t.below_floor(1.01) is not None
    t.update_prediction("v2", confidence=0.9, sentiment="neutral")  # a new serving version starts afresh
    assert t.recent_accuracy("sentiment") == (None, 0) and t.below_floor(0.8) is None
