"""Pure parts of the learning loop: the settings, the retrain policy and the promotion gate."""

from __future__ import annotations

import random
from pathlib import Path
from statistics import NormalDist

import pytest

from monitor.config import ConfigError
from monitor.learn.gate import Answer, Paired, gain_test, judge, mcnemar_midp, paired, paired_interval
from monitor.learn.policy import decide
from monitor.learn.settings import GateSettings, PolicySettings, describe_settings, parse_settings
from monitor.records import Example

DOC = Path(__file__).resolve().parents[2] / "docs" / "continual-learning.md"


# --- settings ------------------------------------------------------------------------------------------
def test_defaults_and_overrides() -> None:
    s = parse_settings(None)
    assert (s.drift.detector, s.train.method, s.policy.cooldown_s) == ("ADWIN", "replay_distill", 600.0)
    s = parse_settings({"detector": "DDM", "detector_params": {"drift_threshold": 4}, "method": "naive",
                        "label_free_signals": "confidence, sentiment_mix", "cooldown_s": 5})
    assert s.drift.detector_params == {"drift_threshold": 4} and s.train.method == "naive"
    assert s.drift.label_free_signals == ("confidence", "sentiment_mix") and s.policy.cooldown_s == 5.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"detector": "FOO"}, r"^learning\.settings\.detector: unknown detector 'FOO' \(known: ADWIN, DDM, "),
        ({"detector_params": {"x": 1}}, r"^learning\.settings\.detector_params\.x: ADWIN has no parameter 'x'"),
        ({"label_free_detector": "DDM"}, r"^learning\.settings\.label_free_detector: DDM is a binary"),
        ({"label_free_signals": ["entropy"]}, r"^learning\.settings\.label_free_signals: unknown signal 'entropy'"),
        ({"method": "magic"}, r"^learning\.settings\.method: unknown method 'magic' \(known: replay_distill, "),
        ({"min_new_labels": "many"}, r"^learning\.settings\.min_new_labels: Input should be a valid integer"),
        ({"max_forgetting": 1.5}, r"^learning\.settings\.max_forgetting: must be in \[0, 1\]"),
        ({"holdout_fraction": 1.0}, r"^learning\.settings\.holdout_fraction: must be in \[0, 1\)"),
        ({"freeze_embeddings": "yes"}, r"^learning\.settings\.freeze_embeddings: Input should be a valid boolean"),
        ({"confidence": 1.0}, r"^learning\.settings\.confidence: must be in \[0\.5, 1\)"),
        ({"cooldown_s": True}, r"^learning\.settings\.cooldown_s: Input should be a valid number"),
        ({"max_length": 64}, r"^learning\.settings\.max_length: no longer a learner setting: .*checkpoint"),
        ({"detectr": "ADWIN"}, r"^learning\.settings\.detectr: unknown key"),
    ],
)
def test_invalid_settings_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(raw)


@pytest.mark.parametrize("raw", [{"method": "ewc"}, {"ewc_lambda": 100}, {"ewc_gamma": 0.9}])
def test_ewc_settings_say_ewc_was_removed(raw: dict) -> None:
    """An old config that asks for EWC is refused with why, not as an unknown key or method."""
    message = rf"^learning\.settings\.{next(iter(raw))}: .*EWC was removed: .*; use method replay_distill$"
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
FLOOR = "sentiment accuracy 0.500 < floor 0.800 over 100 labels"


@pytest.mark.parametrize(
    ("drift", "floor", "labels", "running", "last_end", "start", "reason"),
    [
        ("sentiment_error", None, 80, False, None, True, "drift on sentiment_error"),
        ("sentiment_error", None, 80, True, None, False, "a run is in progress"),
        ("sentiment_error", None, 80, False, 900.0, False, "cool-down: 500 s left"),
        ("sentiment_error", None, 80, False, 300.0, True, "drift on sentiment_error"),
        ("topic_error", None, 49, False, None, False, "waiting for labels: 49/50"),
        (None, None, 80, False, None, False, "no drift, accuracy above the floor, 80/500 labels to the schedule"),
        (None, FLOOR, 80, False, None, True, f"accuracy floor: {FLOOR}"),
        (None, FLOOR, 49, False, None, False, "waiting for labels: 49/50"),
        (None, None, 500, False, None, True, "periodic"),
    ],
)
def test_policy(drift: str | None, floor: str | None, labels: int, running: bool, last_end: float | None,
                start: bool, reason: str) -> None:
    d = decide(POLICY, now=1000.0, drift=drift, new_labels=labels, running=running, last_end=last_end,
               below_floor=floor)
    assert (d.start, d.reason) == (start, reason)


def test_no_run_starts_before_the_gate_could_decide() -> None:
    """A run whose gate set is too small would be refused after training: it waits for more labels."""
    def run(answers: int) -> tuple[bool, str]:
        d = decide(POLICY, now=1000.0, drift=None, new_labels=80, running=False, last_end=None, below_floor=FLOOR,
                   gate_answers=answers, min_gate_answers=50)
        return d.start, d.reason

    assert run(49) == (False, "waiting for gate labels: 49/50 answers")
    assert run(50) == (True, f"accuracy floor: {FLOOR}")


# --- gate ----------------------------------------------------------------------------------------------
GATE = GateSettings(min_gate_examples=20, confidence=0.9, forgetting_confidence=0.9, max_forgetting=0.02,
                    min_stratum_examples=100)


def _vectors(n: int, p_serving: float, p_challenger: float, agree: float, rng: random.Random) -> Paired:
    """Synthetic per-answer correctness of two models: each answer is right with the given rates; with
    probability ``agree`` the challenger simply repeats the serving model's outcome."""
    counts = [0, 0, 0, 0]
    for _ in range(n):
        s = rng.random() < p_serving
        c = s if rng.random() < agree else rng.random() < p_challenger
        counts[2 * (not s) + (not c)] += 1
    return Paired(*counts)


def _old(n: int = 400) -> Paired:
    """An old-domain holdout on which the challenger answers exactly as the serving model."""
    return Paired(both=int(0.9 * n), neither=n - int(0.9 * n))


def test_mcnemar_and_the_paired_interval_match_hand_figures() -> None:
    assert mcnemar_midp(3, 3) == 0.5
    # b=1, c=9: P(X > 9) + P(X = 9) / 2 for X ~ Bin(10, 1/2) = (1 + 10 / 2) / 1024
    assert mcnemar_midp(1, 9) == pytest.approx(6 / 1024)
    lo, hi = paired_interval(Paired(both=90, serving_only=5, challenger_only=1, neither=4), 0.95)
    assert lo < 0.04 < hi and hi - 0.04 > 0.04 - lo  # score intervals lean away from the boundary
    assert paired_interval(Paired(), 0.9) == (-1.0, 1.0)


def test_a_clear_win_promotes() -> None:
    rng = random.Random(1)
    recent = _vectors(200, 0.70, 0.85, 0.5, rng)
    v = judge(GATE, recent=recent, holdout={"twitter_topic@?": _old()})
    assert v.promote, v.reason
    assert v.numbers["mcnemar_p"] < 0.1 and v.numbers["improvement_lower"] > 0
    assert v.numbers["recent_answers"] == 200 and v.numbers["holdout_answers"] == 400
    assert v.numbers["forgetting_upper"] <= 0.02 and v.numbers["forgetting"] == 0.0


def _passes(settings: GateSettings, challenger_accuracy: float) -> int:
    """How many of 200 seeded gate sets of 100 answers promote a challenger against a serving model at 0.75."""
    rng = random.Random(2)
    return sum(judge(settings, recent=_vectors(100, 0.75, challenger_accuracy, 0.5, rng),
                     holdout={"old@?": _old()}).promote for _ in range(200))


def test_noise_does_not_promote() -> None:
    """Two equally good models, 200 seeds of 100 gate answers: about alpha of them pass (one-sided 10 %)."""
    passed = _passes(GATE, 0.75)
    assert passed <= 0.1 * 200 + 10, passed  # mid-p is close to, not below, the nominal level
    # At the default confidence (0.6) about 40 % pass (43 of 200 at 0.8): the price of promoting more of the real
    # gains of 3-7 points that 50-120 answers cannot tell from noise (docs/continual-learning.md, "Gate").
    default = GateSettings(**{**GATE.model_dump(), "confidence": GateSettings().confidence})
    passed = _passes(default, 0.75)
    assert 0.3 * 200 < passed <= 0.4 * 200 + 12, passed  # 77 of 200 (23 at confidence 0.9)
    worse = _passes(default, 0.70)  # a challenger 2.5 points worse on the recent labels: about one gate set in five
    assert worse <= 0.25 * 200, worse  # 41 of 200 (17 at 0.8)
    # The old gate promoted on any observed gain >= min_improvement: about half of these.


def test_a_forgetting_model_is_refused() -> None:
    """Better on the new labels, but 4 points worse on the old domain: refused, naming the stratum."""
    rng = random.Random(3)
    old = Paired(both=340, serving_only=24, challenger_only=8, neither=28)  # loss (24 - 8) / 400 = 0.04
    v = judge(GATE, recent=_vectors(200, 0.70, 0.85, 0.5, rng), holdout={"twitter_topic@?": old, "wire@1": _old(50)})
    assert not v.promote and v.reason.startswith("forgetting on twitter_topic@?"), v.reason
    assert v.numbers["forgetting"] == 0.04 and v.numbers["forgetting_upper"] > 0.02
    assert "wire@1" not in v.numbers["forgetting_tested"]  # 50 answers: too few to test alone


def test_a_gain_on_a_new_regime_does_not_hide_a_loss_on_the_old_one() -> None:
    old = Paired(both=340, serving_only=24, challenger_only=8, neither=28)
    new = Paired(both=100, serving_only=0, challenger_only=200, neither=100)  # the stream's holdout: big gains
    v = judge(GATE, recent=_vectors(200, 0.70, 0.85, 0.5, random.Random(4)),
              holdout={"twitter_topic@?": old, "wire@1": new})
    assert v.numbers["holdout_challenger"] > v.numbers["holdout_serving"]
    assert not v.promote and v.numbers["forgetting_stratum"] == "twitter_topic@?"


def test_the_forgetting_bound_has_its_own_confidence() -> None:
    """The same small loss passes at forgetting_confidence 0.6 and is refused at 0.9; the McNemar side is unchanged."""
    old = Paired(both=300, serving_only=9, challenger_only=4, neither=20)  # loss 0.015 on 333 answers
    recent = _vectors(200, 0.70, 0.85, 0.5, random.Random(6))
    verdicts = {c: judge(GateSettings(**{**GATE.model_dump(), "forgetting_confidence": c}), recent=recent,
                         holdout={"twitter_topic@?": old}) for c in (0.6, 0.9)}
    assert verdicts[0.6].promote and not verdicts[0.9].promote, verdicts[0.9].reason
    assert "90% upper bound" in verdicts[0.9].reason and verdicts[0.9].numbers["forgetting_confidence"] == 0.9
    assert verdicts[0.6].numbers["mcnemar_p"] == verdicts[0.9].numbers["mcnemar_p"]


def test_forgetting_cannot_build_up_over_a_chain_of_promotions() -> None:
    """Within the limit of the serving model, 4 points below the lineage's first model: refused."""
    recent = _vectors(200, 0.70, 0.85, 0.5, random.Random(3))
    fine = Paired(both=390, serving_only=2, challenger_only=2, neither=6)  # no loss against the parent
    drifted = Paired(both=340, serving_only=24, challenger_only=8, neither=28)  # 0.04 below the origin
    assert judge(GATE, recent=recent, holdout={"twitter_topic@?": fine}).promote
    v = judge(GATE, recent=recent, holdout={"twitter_topic@?": fine}, origin={"twitter_topic@?": drifted})
    assert not v.promote and v.numbers["forgetting_stratum"] in ("all vs origin", "twitter_topic@? vs origin"), v.reason
    assert v.reason.startswith("forgetting on ") and "vs origin" in v.reason


def test_after_promotions_a_whole_gain_over_the_lineages_first_model_promotes() -> None:
    """better_than_origin: 50 recent answers cannot show the serving model's successor better (3 won, 2 lost), they
    can show it better than the first model (11 won, 2 lost); then it must not lose more answers than it wins."""
    settings = GateSettings(**{**GATE.model_dump(), "min_gate_examples": 50, "confidence": 0.8})
    step = Paired(both=38, serving_only=2, challenger_only=3, neither=7)
    whole = Paired(both=30, serving_only=2, challenger_only=11, neither=7)
    old = {"twitter_topic@?": _old()}
    assert not judge(settings, recent=step, holdout=old).promote  # no lineage: the step alone decides
    v = judge(settings, recent=step, holdout=old, recent_origin=whole)
    assert v.promote and v.numbers["better_than"] == "origin", v.reason
    assert "better than the lineage's first model" in v.reason and v.numbers["origin_answers"] == 50
    assert v.numbers["origin_won"] == 11 and v.numbers["origin_p"] < 0.2
    off = GateSettings(**{**settings.model_dump(), "better_than_origin": False})
    assert not judge(off, recent=step, holdout=old, recent_origin=whole).promote
    worse = Paired(both=38, serving_only=3, challenger_only=2, neither=7)  # loses more than it wins to serving
    assert not judge(settings, recent=worse, holdout=old, recent_origin=whole).promote
    lenient = GateSettings(**{**settings.model_dump(), "min_improvement": -0.5})  # the wins must still say so
    assert not judge(lenient, recent=worse, holdout=old, recent_origin=whole).promote
    noise = Paired(both=30, serving_only=5, challenger_only=8, neither=7)  # not clearly better than the first either
    assert not judge(settings, recent=step, holdout=old, recent_origin=noise).promote
    few = Paired(both=15, serving_only=1, challenger_only=9, neither=5)  # 30 answers: too few to decide on
    assert not judge(settings, recent=step, holdout=old, recent_origin=few).promote
    forgets = {"twitter_topic@?": Paired(both=340, serving_only=24, challenger_only=8, neither=28)}
    v = judge(settings, recent=step, holdout=forgets, recent_origin=whole)
    assert not v.promote and v.reason.startswith("forgetting on ") and v.numbers["forgets"], v.reason
    clear = judge(settings, recent=whole, holdout=old, recent_origin=whole)  # better than serving: as before
    assert clear.promote and clear.numbers["better_than"] == "serving"


def test_a_small_holdout_is_reported_not_tested() -> None:
    v = judge(GATE, recent=_vectors(200, 0.70, 0.85, 0.5, random.Random(5)), holdout={"wire@1": _old(60)})
    assert v.promote and "forgetting not tested: holdout has 60 answers" in v.reason
    assert v.numbers["forgetting_upper"] is None


def test_gate_needs_enough_answers() -> None:
    v = judge(GATE, recent=Paired(both=2, challenger_only=8), holdout={})
    assert not v.promote and v.reason == "only 10 gate answers (need 20)"


def test_paired_counts_every_labelled_answer() -> None:
    truth = [Example("a", topic="A", sentiment="positive"), Example("b", topic="B"), Example("c", topic="A")]
    p = paired(truth, [("A", "negative"), ("B", "x"), ("B", "x")], [("A", "positive"), ("A", "x"), ("B", "x")])
    assert p == Paired(both=1, serving_only=1, challenger_only=1, neither=1)
    assert (p + p).n == 8 and p.loss == 0.0 and p.serving_accuracy == 0.5


# --- the probability test (better_test: probability) ----------------------------------------------------
SOFT = GateSettings(**{**GATE.model_dump(), "confidence": 0.8, "better_test": "probability"})
LABELS = ("negative", "neutral", "positive")


def _answer(truth: str, p_true: float) -> Answer:
    """A sentiment answer giving ``p_true`` to the truth and the rest evenly to the other labels."""
    probs = {label: p_true if label == truth else (1.0 - p_true) / 2 for label in LABELS}
    return Answer(None, max(probs, key=probs.__getitem__), None, probs)


def _soft(n: int, shift: float, rng: random.Random, noise: float = 0.15) -> Paired:
    """Two models' answers on n examples: each one's true-label probability is the example's draw plus its own
    noise (sd ``noise``), the challenger's plus ``shift`` (0: two equally good models)."""
    truth = [Example(f"t{i}", sentiment=rng.choice(LABELS)) for i in range(n)]
    serving, challenger = [], []
    for e in truth:
        base = rng.betavariate(3, 1.5)  # how easy the example is; each model adds its own noise
        serving.append(_answer(e.sentiment, min(1.0, max(0.0, base + rng.gauss(0.0, noise)))))
        challenger.append(_answer(e.sentiment, min(1.0, max(0.0, base + rng.gauss(shift, noise)))))
    return paired(truth, serving, challenger)


def test_gain_test_on_correctness_is_the_paired_accuracy_z_test() -> None:
    """Without probabilities the gains are correctness differences: mean (c - b) / n, variance from b + c."""
    p = Paired(both=40, serving_only=2, challenger_only=8, neither=10)
    mean, lower, p_value = gain_test(p, 0.8)
    se = ((10 - 60 * 0.1 ** 2) / 59 / 60) ** 0.5
    assert mean == pytest.approx(0.1) and lower == pytest.approx(0.1 - 0.8416 * se, abs=1e-4)
    assert p_value == pytest.approx(1 - NormalDist().cdf(0.1 / se))
    assert gain_test(Paired(), 0.8) == (0.0, -1.0, 0.5)
    assert gain_test(Paired(both=30), 0.8)[2] == 0.5  # no difference at all: not better


def test_probability_noise_does_not_promote() -> None:
    """Two equally good models, 200 gate sets of 100 answers: about 1 - confidence (20 %) pass, at most."""
    rng = random.Random(11)
    passed = sum(judge(SOFT, recent=_soft(100, 0.0, rng), holdout={"old@?": _old()}).promote for _ in range(200))
    assert passed <= 0.2 * 200 + 12, passed


def test_probability_test_sees_a_gain_mcnemar_cannot() -> None:
    """A challenger 0.06 surer of the truth on every answer, few answers changed: McNemar refuses, the
    probability test promotes, its numbers recorded."""
    recent = _soft(60, 0.06, random.Random(12), noise=0.05)
    by_mcnemar = judge(GateSettings(**{**SOFT.model_dump(), "better_test": "mcnemar"}), recent=recent,
                       holdout={"old@?": _old()})
    by_probability = judge(SOFT, recent=recent, holdout={"old@?": _old()})
    assert recent.challenger_only > recent.serving_only  # the answers agree in direction
    assert not by_mcnemar.promote and by_probability.promote, (by_mcnemar.reason, by_probability.reason)
    n = by_probability.numbers
    assert n["better_test"] == "probability" and n["gain_p"] <= 0.2 < n["mcnemar_p"] and n["gain_lower"] > 0
    assert "true-label probability +" in by_probability.reason


def test_probability_test_refuses_a_model_only_surer_of_the_same_answers() -> None:
    """The same labels, every true-label probability 0.1 higher where right and 0.1 lower where wrong:
    the mean gain is positive, but no answer was won, so it is not better."""
    rng = random.Random(13)
    truth = [Example(f"t{i}", sentiment=rng.choice(LABELS)) for i in range(100)]
    right = [rng.random() < 0.8 for _ in truth]
    serving = [_answer(e.sentiment, 0.6 if r else 0.2) for e, r in zip(truth, right, strict=True)]
    challenger = [_answer(e.sentiment, 0.7 if r else 0.1) for e, r in zip(truth, right, strict=True)]
    recent = paired(truth, serving, challenger)
    v = judge(SOFT, recent=recent, holdout={"old@?": _old()})
    assert recent.gains[0] > 0 and recent.challenger_only == recent.serving_only == 0
    assert not v.promote and v.reason.endswith("no more answers won than lost"), v.reason


def test_a_forgetting_model_is_refused_under_the_probability_test_too() -> None:
    old = Paired(both=340, serving_only=24, challenger_only=8, neither=28)
    v = judge(SOFT, recent=_soft(200, 0.1, random.Random(14)), holdout={"twitter_topic@?": old})
    assert not v.promote and v.reason.startswith("forgetting on "), v.reason
    assert v.numbers["gain_p"] < 0.2 and v.numbers["forgetting_upper"] > 0.02
