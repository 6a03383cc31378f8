"""Pure parts of the learning loop: the settings, the retrain policy and the promotion gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import ConfigError
from monitor.learn.gate import HoldoutScores, Tally, holdout_scores, judge, tally
from monitor.learn.policy import decide
from monitor.learn.settings import GateSettings, PolicySettings, describe_settings, parse_settings
from monitor.records import Example

DOC = Path(__file__).resolve().parents[2] / "docs" / "continual-learning.md"


# --- settings ------------------------------------------------------------------------------------------
def test_defaults_and_overrides() -> None:
    s = parse_settings(None)
    assert (s.drift.detector, s.train.method, s.gate.max_forgetting, s.policy.cooldown_s) == (
        "ADWIN", "replay_distill", 0.02, 600.0)
    s = parse_settings({"detector": "DDM", "detector_params": {"drift_threshold": 4}, "method": "ewc",
                        "label_free_signals": "confidence, sentiment_mix", "cooldown_s": 5})
    assert s.drift.detector_params == {"drift_threshold": 4} and s.train.method == "ewc"
    assert s.drift.label_free_signals == ("confidence", "sentiment_mix") and s.policy.cooldown_s == 5.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"detector": "FOO"}, r"^learning\.settings\.detector: unknown detector 'FOO' \(known: ADWIN, DDM, "),
        ({"detector_params": {"x": 1}}, r"^learning\.settings\.detector_params\.x: ADWIN has no parameter 'x'"),
        ({"label_free_detector": "DDM"}, r"^learning\.settings\.label_free_detector: DDM is a binary"),
        ({"label_free_signals": ["entropy"]}, r"^learning\.settings\.label_free_signals: unknown signal 'entropy'"),
        ({"method": "magic"}, r"^learning\.settings\.method: unknown method 'magic' \(known: replay_distill, "),
        ({"min_new_labels": "many"}, r"^learning\.settings\.min_new_labels: expected an integer"),
        ({"max_forgetting": 1.5}, r"^learning\.settings\.max_forgetting: must be in \[0, 1\]"),
        ({"holdout_fraction": 1.0}, r"^learning\.settings\.holdout_fraction: must be in \[0, 1\)"),
        ({"freeze_embeddings": "yes"}, r"^learning\.settings\.freeze_embeddings: expected true or false"),
        ({"detectr": "ADWIN"}, r"^learning\.settings\.detectr: unknown key"),
    ],
)
def test_invalid_settings_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(raw)


def test_every_setting_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = describe_settings()
    assert len(rows) == len({key for key, _, _ in rows}) > 30
    missing = [key for key, _, doc in rows if f"`{key}`" not in text or not doc]
    assert not missing, f"settings without a docstring or a row in {DOC.name}: {missing}"


# --- policy --------------------------------------------------------------------------------------------
POLICY = PolicySettings(min_new_labels=50, cooldown_s=600, retrain_every_labels=500)


@pytest.mark.parametrize(
    ("drift", "labels", "running", "last_end", "start", "reason"),
    [
        ("sentiment_error", 80, False, None, True, "drift on sentiment_error"),
        ("sentiment_error", 80, True, None, False, "a run is in progress"),
        ("sentiment_error", 80, False, 900.0, False, "cool-down: 500 s left"),
        ("sentiment_error", 80, False, 300.0, True, "drift on sentiment_error"),
        ("topic_error", 49, False, None, False, "waiting for labels: 49/50"),
        (None, 80, False, None, False, "no drift"),
        (None, 500, False, None, True, "periodic"),
    ],
)
def test_policy(drift: str | None, labels: int, running: bool, last_end: float | None, start: bool,
                reason: str) -> None:
    d = decide(POLICY, now=1000.0, drift=drift, new_labels=labels, running=running, last_end=last_end)
    assert (d.start, d.reason) == (start, reason)


# --- gate ----------------------------------------------------------------------------------------------
def _tally(right: int, wrong: int) -> Tally:
    truth = [Example(f"t{i}", sentiment="positive") for i in range(right + wrong)]
    return tally(truth, [("x", "positive")] * right + [("x", "negative")] * wrong)


def _holdout(known_kept: int, known_lost: int, unknown_fixed: int = 0, unknown_still: int = 0) -> HoldoutScores:
    """Holdout answers: the serving model right and the challenger right/wrong, then serving wrong and the
    challenger right/wrong."""
    groups = ((known_kept, "positive", "positive"), (known_lost, "positive", "negative"),
              (unknown_fixed, "negative", "positive"), (unknown_still, "negative", "negative"))
    truth, serving, challenger = [], [], []
    for n, s, c in groups:
        truth += [Example(f"h{len(truth) + i}", sentiment="positive") for i in range(n)]
        serving += [("x", s)] * n
        challenger += [("x", c)] * n
    return holdout_scores(truth, serving, challenger)


GATE = GateSettings(min_gate_examples=20, min_improvement=0.05, max_forgetting=0.02, min_stratum_examples=20)


def test_gate_promotes_a_better_model_that_forgets_nothing() -> None:
    v = judge(GATE, recent=(_tally(20, 20), _tally(36, 4)), holdout={"wire@1": _holdout(45, 0, 3, 2)})
    assert v.promote and v.numbers["improvement"] == pytest.approx(0.4) and v.numbers["forgetting"] == 0.0
    assert v.numbers["holdout_examples"] == 50 and v.numbers["holdout_known"] == 45
    assert v.numbers["holdout_challenger"] == pytest.approx(0.96) and v.numbers["recent_examples"] == 40


def test_gate_rejects_too_small_an_improvement() -> None:
    v = judge(GATE, recent=(_tally(30, 10), _tally(31, 9)), holdout={})
    assert not v.promote and v.reason == "improvement 0.025 < 0.050"


def test_gate_sees_forgetting_that_gains_on_a_new_regime_would_hide() -> None:
    """One stratum mixing an old regime (known, 5 of 40 lost) and a new one (unknown, 40 fixed): the
    accuracy on the holdout rises from 0.5 to 0.94, yet the challenger lost 12.5 % of what was known."""
    v = judge(GATE, recent=(_tally(20, 20), _tally(36, 4)), holdout={"wire@1": _holdout(35, 5, 40, 0)})
    assert v.numbers["holdout_challenger"] > v.numbers["holdout_serving"]
    assert not v.promote and v.reason == "forgetting 0.125 on all > 0.020"


def test_gate_takes_the_worst_stratum() -> None:
    holdout = {"wire@1": _holdout(30, 10), "wire@2": _holdout(200, 0)}  # whole: 10 of 240 lost
    v = judge(GATE, recent=(_tally(20, 20), _tally(36, 4)), holdout=holdout)
    assert not v.promote and v.numbers["forgetting_stratum"] == "wire@1" and v.numbers["forgetting"] == 0.25


def test_gate_ignores_tiny_strata_but_not_the_whole_holdout() -> None:
    holdout = {"wire@1": _holdout(0, 5), "wire@2": _holdout(40, 0)}
    v = judge(GATE, recent=(_tally(20, 20), _tally(36, 4)), holdout=holdout)
    assert not v.promote and v.numbers["forgetting_stratum"] == "all"
    assert v.numbers["forgetting"] == pytest.approx(5 / 45, abs=1e-6)


def test_gate_needs_enough_held_out_examples() -> None:
    v = judge(GATE, recent=(_tally(0, 10), _tally(10, 0)), holdout={})
    assert not v.promote and v.reason == "only 10 held-out new examples (need 20)"


def test_tally_averages_the_heads_present() -> None:
    truth = [Example("a", topic="A", sentiment="positive"), Example("b", topic="B"), Example("c", topic="A")]
    t = tally(truth, [("A", "negative"), ("B", "x"), ("B", "x")])
    assert t.total == {"topic": 3, "sentiment": 1} and t.accuracy == pytest.approx((2 / 3 + 0) / 2)
    assert Tally().accuracy is None and (t + t).total == {"topic": 6, "sentiment": 2}
    h = holdout_scores(truth, [("A", "positive"), ("A", "x"), ("A", "x")], [("B", "positive"), ("B", "x"), ("A", "x")])
    assert h.retained.total == {"topic": 2, "sentiment": 1} and h.forgetting == pytest.approx(1 - (1 / 2 + 1) / 2)
