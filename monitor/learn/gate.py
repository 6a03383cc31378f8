"""The promotion gate: may a retrained challenger replace the serving model? Statistics, no model here.

Both questions are answered on **paired per-answer correctness**: for every labelled (example,
head) answer of a set that neither model trained on, whether the serving model and the challenger
got it right. Only the discordant answers say anything about the difference: ``b`` = serving
right, challenger wrong; ``c`` = challenger right, serving wrong; of ``n`` answers.

- **Better on recent labels?** On the gate set (a hash-chosen share of the new labels, never
  trained on, plus the holdout's labels of the same time span), McNemar's exact test,
  one-sided, mid-p: ``p = P(X > c) + P(X = c) / 2`` for ``X ~ Binomial(b + c, 1/2)``. The
  challenger is better when ``p <= 1 - confidence`` and the observed improvement
  ``(c - b) / n`` is at least ``min_improvement``. With ``better_test: probability`` the p-value
  is instead that of the paired mean **gain in the probability of the true label** (challenger
  minus serving, per answer; ``gain_test``): every answer has a say, not only the discordant
  ones, and with labels only it is the z-test of the paired accuracy difference. The observed
  accuracy improvement must still be at least ``min_improvement``, and the challenger must win
  more answers than it loses (a model only more confident in the same answers is not better).
- **Better along a lineage** (``better_than_origin``): after promotions the gate set holds only the labels since
  the last one, too few to confirm a further step of a few points. A challenger is also better when it is better
  than the lineage's first model on the recent answers (the same test) and wins at least as many of them from the
  serving model as it loses.
- **Not forgetting?** On the replay holdout (seeded with the old domain's data when the model
  entered the registry, then a share of the stream), the accuracy loss ``(b - c) / n`` has a
  one-sided upper confidence bound (Newcombe's hybrid score interval for paired proportions,
  method 10) that must be at most ``max_forgetting``: the gate must be sure, at ``forgetting_confidence``,
  that the loss is below the limit. It is tested on the whole holdout and on each stratum
  (source, period) with at least ``min_stratum_examples`` answers, so a gain on a new regime
  cannot hide a loss on an old one; a set smaller than that is reported, not tested (it could
  not show a small loss to be small).
  After promotions the same sets are also tested against the model the lineage started from
  (``origin``), so forgetting cannot build up over a chain of small losses.

    >>> s = GateSettings(min_gate_examples=10, confidence=0.9, forgetting_confidence=0.9, max_forgetting=0.05,
    ...                  min_stratum_examples=50)
    >>> v = judge(s, recent=Paired(both=20, serving_only=1, challenger_only=12, neither=7),
    ...           holdout={"tweets@?": Paired(both=180, serving_only=1, challenger_only=1, neither=18)})
    >>> v.promote, v.numbers["mcnemar_p"] < 0.01, round(v.numbers["forgetting_upper"], 3)
    (True, True, 0.011)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, NamedTuple

from monitor.learn.settings import GateSettings
from monitor.records import Example

__all__ = ["Answer", "Paired", "Verdict", "gain_test", "judge", "mcnemar_midp", "paired", "paired_interval", "wilson"]


class Answer(NamedTuple):
    """One model's answer to one example: its labels and, when known, its probabilities of every label."""

    topic: str | None
    sentiment: str | None
    topic_probs: Mapping[str, float] | None = None
    sentiment_probs: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Paired:
    """Paired correctness counts of the serving model and the challenger on one set of answers."""

    both: int = 0
    serving_only: int = 0
    """b: the serving model right, the challenger wrong."""
    challenger_only: int = 0
    """c: the challenger right, the serving model wrong."""
    neither: int = 0
    gain_sum: float | None = field(default=None, repr=False, compare=False)
    """Sum over the answers of the challenger's minus the serving model's probability of the true label
    (None: only correctness is known, and the gain of an answer is its correctness difference, -1, 0 or 1)."""
    gain_squares: float | None = field(default=None, repr=False, compare=False)
    """Sum of the squares of those per-answer gains."""

    @property
    def gains(self) -> tuple[float, float]:
        """``(sum, sum of squares)`` of the per-answer gains (from correctness when no probabilities were given)."""
        if self.gain_sum is None or self.gain_squares is None:
            return float(self.challenger_only - self.serving_only), float(self.challenger_only + self.serving_only)
        return self.gain_sum, self.gain_squares

    @property
    def n(self) -> int:
        return self.both + self.serving_only + self.challenger_only + self.neither

    @property
    def serving_accuracy(self) -> float | None:
        return (self.both + self.serving_only) / self.n if self.n else None

    @property
    def challenger_accuracy(self) -> float | None:
        return (self.both + self.challenger_only) / self.n if self.n else None

    @property
    def loss(self) -> float:
        """Serving accuracy minus challenger accuracy (0 on an empty set)."""
        return (self.serving_only - self.challenger_only) / self.n if self.n else 0.0

    def __add__(self, other: Paired) -> Paired:
        (s1, q1), (s2, q2) = self.gains, other.gains
        return Paired(self.both + other.both, self.serving_only + other.serving_only,
                      self.challenger_only + other.challenger_only, self.neither + other.neither, s1 + s2, q1 + q2)


def _as_answer(a: tuple[str, str] | Answer) -> Answer:
    return a if isinstance(a, Answer) else Answer(a[0], a[1])


def _true_probability(probs: Mapping[str, float] | None, guess: str | None, truth: str) -> float:
    if probs is None:  # labels only: the answer's probability of the truth is its correctness
        return float(guess == truth)
    return probs.get(truth, 0.0)


def paired(examples: Sequence[Example], serving: Sequence[tuple[str, str] | Answer],
           challenger: Sequence[tuple[str, str] | Answer]) -> Paired:
    """Count the labelled answers; the predictions are (topic, sentiment) or ``Answer`` per example, in order.

    With ``Answer``s that carry probabilities, each answer's gain is the difference of the two
    models' probabilities of the true label; with labels only, the difference of their correctness.

    >>> truth = [Example("a", topic="A", sentiment="positive"), Example("b", sentiment="negative")]
    >>> paired(truth, [("A", "negative"), ("T", "negative")], [("B", "positive"), ("T", "negative")])
    Paired(both=1, serving_only=1, challenger_only=1, neither=0)
    >>> soft = paired(truth[1:], [Answer("T", "negative", None, {"negative": 0.6, "neutral": 0.4})],
    ...               [Answer("T", "negative", None, {"negative": 0.9, "neutral": 0.1})])
    >>> soft, round(soft.gains[0], 3)
    (Paired(both=1, serving_only=0, challenger_only=0, neither=0), 0.3)
    """
    counts = [0, 0, 0, 0]
    gain_sum = gain_squares = 0.0
    for e, raw_s, raw_c in zip(examples, serving, challenger, strict=True):
        s, c = _as_answer(raw_s), _as_answer(raw_c)
        for truth, s_guess, c_guess, s_probs, c_probs in (
                (e.topic, s.topic, c.topic, s.topic_probs, c.topic_probs),
                (e.sentiment, s.sentiment, c.sentiment, s.sentiment_probs, c.sentiment_probs)):
            if truth is None:
                continue
            counts[2 * (s_guess != truth) + (c_guess != truth)] += 1
            gain = _true_probability(c_probs, c_guess, truth) - _true_probability(s_probs, s_guess, truth)
            gain_sum += gain
            gain_squares += gain * gain
    both, serving_only, challenger_only, neither = counts
    return Paired(both, serving_only, challenger_only, neither, gain_sum, gain_squares)


def mcnemar_midp(b: int, c: int) -> float:
    """One-sided exact McNemar mid-p that the challenger (``c`` wins) is no better than serving (``b`` wins).

    >>> mcnemar_midp(0, 0), round(mcnemar_midp(2, 10), 4), round(mcnemar_midp(10, 2), 4)
    (0.5, 0.0112, 0.9888)
    """
    n = b + c
    tail = sum(math.comb(n, k) for k in range(c + 1, n + 1))
    return (tail + 0.5 * math.comb(n, c)) / 2**n


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion (``(0, 1)`` for ``n = 0``).

    >>> tuple(round(x, 3) for x in wilson(8, 10, 1.96))
    (0.49, 0.943)
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_interval(p: Paired, confidence: float) -> tuple[float, float]:
    """Bounds ``(lower, upper)`` of the loss (serving minus challenger accuracy), each one-sided at ``confidence``.

    Newcombe (1998), method 10: Wilson intervals of both accuracies combined with the phi
    correlation of the paired answers. On an empty set: ``(-1, 1)``.

    >>> lo, hi = paired_interval(Paired(both=90, serving_only=5, challenger_only=1, neither=4), 0.95)
    >>> round(lo, 3), round(hi, 3)
    (-0.001, 0.089)
    """
    if p.n == 0:
        return -1.0, 1.0
    z = NormalDist().inv_cdf(confidence)
    p1, p2 = p.serving_accuracy or 0.0, p.challenger_accuracy or 0.0
    l1, u1 = wilson(p.both + p.serving_only, p.n, z)
    l2, u2 = wilson(p.both + p.challenger_only, p.n, z)
    a, b, c, d = p.both, p.serving_only, p.challenger_only, p.neither
    denominator = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denominator) if denominator else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, p.loss - delta), min(1.0, p.loss + epsilon)


def gain_test(p: Paired, confidence: float) -> tuple[float, float, float]:
    """``(mean gain, its one-sided lower bound at confidence, p-value that the mean gain is <= 0)``.

    The paired mean of the per-answer gains (``Paired.gains``: the challenger's minus the serving
    model's probability of the true label, or of correctness) with its normal-approximation
    standard error, ``se = sd / sqrt(n)`` (the gate decides on at least ``min_gate_examples`` answers).
    With correctness only this is the z-test of the paired accuracy difference. On an empty set
    or when every gain is equal: ``p`` is 0 for a positive gain, 0.5 for none, 1 for a loss.

    >>> mean, lower, p = gain_test(Paired(both=40, serving_only=2, challenger_only=8, neither=10), 0.8)
    >>> round(mean, 3), round(lower, 3), round(p, 4)
    (0.1, 0.057, 0.0262)
    """
    if p.n == 0:
        return 0.0, -1.0, 0.5
    total, squares = p.gains
    mean = total / p.n
    variance = max(0.0, squares - p.n * mean * mean) / (p.n - 1) if p.n > 1 else 0.0
    se = math.sqrt(variance / p.n)
    if se == 0.0:
        return mean, mean, 0.0 if mean > 0 else (0.5 if mean == 0 else 1.0)
    return mean, mean - NormalDist().inv_cdf(confidence) * se, 1.0 - NormalDist().cdf(mean / se)


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    numbers: dict[str, Any]
    """Everything the decision used (for the registry history, the log and the metrics): recent_answers,
    recent_serving, recent_challenger, improvement, improvement_lower, serving_only, challenger_only, mcnemar_p,
    holdout_answers, holdout_serving, holdout_challenger, forgetting, forgetting_upper, forgetting_stratum,
    forgetting_tested, forgets (the forgetting test failed, whatever the "better" test said), confidence,
    forgetting_confidence; after promotions origin_answers, origin_won, origin_lost, origin_improvement, origin_p (the
    recent answers against the lineage's first model) and better_than (serving, or origin: ``better_than_origin``)."""


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _p_value(settings: GateSettings, p: Paired) -> float:
    """The p-value of "the challenger is no better" on ``p`` under ``better_test``."""
    if settings.better_test == "probability":
        return gain_test(p, settings.confidence)[2]
    return mcnemar_midp(p.serving_only, p.challenger_only)


def judge(settings: GateSettings, *, recent: Paired, holdout: Mapping[str, Paired],
          origin: Mapping[str, Paired] | None = None, recent_origin: Paired | None = None) -> Verdict:
    """Decide on ``recent`` (the gate set) and ``holdout`` (its strata, by name); see the module docstring.

    ``origin``: the same holdout strata, paired with the answers of the model the serving version's
    lineage started from instead of the serving model's (when they differ). They are tested like the
    others, as ``"<stratum> vs origin"``, so a chain of promotions, each within ``max_forgetting`` of
    its parent, cannot add up to forgetting more than that of what the first model knew.

    ``recent_origin``: the recent answers (or some of them) paired with the lineage's first model's instead of
    the serving model's. With ``better_than_origin``, a challenger not shown better than the serving model is
    better when it is better than the first model on them (the same test, at ``confidence``, on at least
    ``min_gate_examples`` answers) and wins at least as many of the recent answers as it loses to the serving model.
    """
    conf, fconf = settings.confidence, settings.forgetting_confidence
    alpha = 1.0 - conf
    mcnemar_p = mcnemar_midp(recent.serving_only, recent.challenger_only)
    gain, gain_lower, gain_p = gain_test(recent, conf)
    p_value = _p_value(settings, recent)
    improvement_lower = -paired_interval(recent, conf)[1]
    improvement = -recent.loss
    numbers: dict[str, Any] = {
        "confidence": conf, "forgetting_confidence": fconf, "better_test": settings.better_test,
        "recent_answers": recent.n, "recent_serving": _r(recent.serving_accuracy),
        "recent_challenger": _r(recent.challenger_accuracy), "improvement": _r(improvement),
        "improvement_lower": _r(improvement_lower), "serving_only": recent.serving_only,
        "challenger_only": recent.challenger_only, "mcnemar_p": _r(mcnemar_p),
        "gain": _r(gain), "gain_lower": _r(gain_lower), "gain_p": _r(gain_p),
    }
    origin_p = _p_value(settings, recent_origin) if recent_origin is not None else 1.0
    if recent_origin is not None:
        numbers.update(origin_answers=recent_origin.n, origin_won=recent_origin.challenger_only,
                       origin_lost=recent_origin.serving_only, origin_improvement=_r(-recent_origin.loss),
                       origin_p=_r(origin_p))
    whole = sum(holdout.values(), Paired())
    sets = {"all": whole, **{name: holdout[name] for name in sorted(holdout)}}
    if origin:
        sets["all vs origin"] = sum(origin.values(), Paired())
        sets.update({f"{name} vs origin": origin[name] for name in sorted(origin)})
    tested = {name: s for name, s in sets.items() if s.n >= settings.min_stratum_examples}
    bounds = {name: paired_interval(s, fconf)[1] for name, s in tested.items()}
    worst = max(bounds, key=bounds.__getitem__) if bounds else None
    numbers.update(
        holdout_answers=whole.n, holdout_serving=_r(whole.serving_accuracy),
        holdout_challenger=_r(whole.challenger_accuracy), forgetting=_r(sets[worst].loss if worst else whole.loss),
        forgetting_upper=_r(bounds[worst]) if worst else None, forgetting_stratum=worst,
        forgets=worst is not None and bounds[worst] > settings.max_forgetting,
        forgetting_tested={name: {"answers": s.n, "loss": _r(s.loss), "upper": _r(bounds[name])}
                           for name, s in tested.items()},
    )
    pct, fpct = f"{conf:.0%}", f"{fconf:.0%}"
    if not settings.gate_enabled:
        return Verdict(True, "gate disabled (gate_enabled: false)", numbers)
    if recent.n < settings.min_gate_examples:
        return Verdict(False, f"only {recent.n} gate answers (need {settings.min_gate_examples})", numbers)
    better = (f"improvement {improvement:+.3f} on {recent.n} gate answers ({recent.challenger_only} won, "
              f"{recent.serving_only} lost, McNemar mid-p {mcnemar_p:.3g}, {pct} lower bound {improvement_lower:+.3f})")
    if settings.better_test == "probability":
        better += (f", true-label probability {gain:+.3f} (p {gain_p:.3g}, {pct} lower bound {gain_lower:+.3f})")
    lineage = False  # "better" shown against the lineage's first model instead of the serving model
    if settings.better_than_origin and recent_origin is not None:
        lineage = (p_value > alpha and origin_p <= alpha and recent_origin.n >= settings.min_gate_examples
                   and recent.challenger_only >= recent.serving_only)
        if lineage:
            better = (f"{better}; better than the lineage's first model: improvement {-recent_origin.loss:+.3f} on "
                      f"{recent_origin.n} answers ({recent_origin.challenger_only} won, {recent_origin.serving_only} "
                      f"lost, p {origin_p:.3g}), no worse than the serving model")
    numbers["better_than"] = "origin" if lineage else "serving"
    need = None
    if p_value > alpha and not lineage:
        need = f"p > {alpha:.3g}"
    elif improvement < settings.min_improvement:
        need = f"improvement < min_improvement {settings.min_improvement:.3f}"
    elif settings.better_test == "probability" and recent.challenger_only <= recent.serving_only:
        # the probability gain says how sure; the answers must also say "better": more won than lost
        need = "no more answers won than lost"
    if need:
        return Verdict(False, f"not better: {better}: {need}", numbers)
    if worst is not None and bounds[worst] > settings.max_forgetting:
        s = sets[worst]
        return Verdict(False, f"forgetting on {worst}: loss {s.loss:+.3f} on {s.n} holdout answers, {fpct} upper bound "
                              f"{bounds[worst]:.3f} > max_forgetting {settings.max_forgetting:.3f}", numbers)
    if worst is None:
        kept = (f"forgetting not tested: holdout has {whole.n} answers (< min_stratum_examples "
                f"{settings.min_stratum_examples})")
    else:
        kept = (f"forgetting {fpct} upper bound {bounds[worst]:.3f} <= {settings.max_forgetting:.3f} "
                f"(worst of {len(bounds)} tested sets: {worst}, {sets[worst].n} answers)")
    return Verdict(True, f"better: {better}; {kept}", numbers)

