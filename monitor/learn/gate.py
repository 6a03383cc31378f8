"""The promotion gate: may a retrained challenger replace the serving model? Pure, no model here.

Two questions, both answered on labelled data that neither model trained on:

- **Better now?** On the held-out part of the new labelled window, the challenger's accuracy
  minus the serving model's must be at least ``min_improvement``.
- **Still good on the old?** On the replay holdout, the challenger may lose at most
  ``max_forgetting`` of what the serving model knew: forgetting is the share of the holdout
  answers the serving model got right that the challenger gets wrong. Counting only what was
  known keeps gains on a new regime (where the serving model was wrong) from hiding losses on
  an old one, even when both regimes are mixed in one stratum. It is the *worst* figure over the
  whole holdout and over each stratum (source, period) with at least ``min_stratum_examples``
  known examples.

Accuracy of a set is the mean over the heads that have labels in it of each head's accuracy on
the examples labelled for that head (partial labels are the norm).

    >>> s = GateSettings(min_gate_examples=2, min_improvement=0.05, max_forgetting=0.02)
    >>> truth = [Example("a", sentiment="positive"), Example("b", sentiment="negative")]
    >>> serving_p, challenger_p = [("T", "negative"), ("T", "negative")], [("T", "positive"), ("T", "negative")]
    >>> serving, challenger = tally(truth, serving_p), tally(truth, challenger_p)
    >>> v = judge(s, recent=(serving, challenger), holdout={"wire@1": holdout_scores(truth, serving_p, challenger_p)})
    >>> v.promote, v.reason, v.numbers["improvement"]
    (True, 'improvement 0.500 >= 0.050; forgetting 0.000 <= 0.020 (1 known holdout examples)', 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.learn.settings import GateSettings
from monitor.records import Example

__all__ = ["HoldoutScores", "Tally", "Verdict", "holdout_scores", "judge", "tally"]


@dataclass(frozen=True)
class Tally:
    """Correct and labelled counts per head of one model on one set of examples."""

    examples: int = 0
    correct: Mapping[str, int] = field(default_factory=dict)
    total: Mapping[str, int] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        """Mean over the labelled heads of the head accuracy; None when nothing is labelled."""
        heads = [h for h, n in self.total.items() if n]
        return sum(self.correct.get(h, 0) / self.total[h] for h in heads) / len(heads) if heads else None

    def __add__(self, other: Tally) -> Tally:
        heads = set(self.total) | set(other.total)
        return Tally(
            self.examples + other.examples,
            {h: self.correct.get(h, 0) + other.correct.get(h, 0) for h in heads},
            {h: self.total.get(h, 0) + other.total.get(h, 0) for h in heads},
        )


def tally(examples: Sequence[Example], predicted: Sequence[tuple[str, str]]) -> Tally:
    """Count right answers per head; ``predicted`` holds (topic, sentiment) per example, in order.

    >>> tally([Example("a", topic="A", sentiment="positive")], [("A", "negative")]).accuracy
    0.5
    """
    correct = {"topic": 0, "sentiment": 0}
    total = {"topic": 0, "sentiment": 0}
    for e, (topic, sentiment) in zip(examples, predicted, strict=True):
        for head, truth, guess in (("topic", e.topic, topic), ("sentiment", e.sentiment, sentiment)):
            if truth is not None:
                total[head] += 1
                correct[head] += int(truth == guess)
    return Tally(len(examples), correct, total)


@dataclass(frozen=True)
class HoldoutScores:
    """Both models on (a stratum of) the holdout, and what the challenger kept of the serving model's knowledge."""

    serving: Tally = field(default_factory=Tally)
    challenger: Tally = field(default_factory=Tally)
    retained: Tally = field(default_factory=Tally)
    """The challenger on the (example, head) answers the serving model got right."""

    @property
    def forgetting(self) -> float | None:
        """Share of the serving model's right answers the challenger gets wrong (None: it knew nothing)."""
        kept = self.retained.accuracy
        return None if kept is None else 1.0 - kept

    def __add__(self, other: HoldoutScores) -> HoldoutScores:
        return HoldoutScores(self.serving + other.serving, self.challenger + other.challenger,
                             self.retained + other.retained)


def holdout_scores(
    examples: Sequence[Example], serving: Sequence[tuple[str, str]], challenger: Sequence[tuple[str, str]]
) -> HoldoutScores:
    """Score both models' (topic, sentiment) answers on ``examples``.

    >>> truth = [Example("a", sentiment="positive"), Example("b", sentiment="negative")]
    >>> h = holdout_scores(truth, [("T", "positive"), ("T", "positive")], [("T", "negative"), ("T", "negative")])
    >>> h.serving.accuracy, h.challenger.accuracy, h.forgetting
    (0.5, 0.5, 1.0)
    """
    known_examples, known_total, known_kept = 0, {"topic": 0, "sentiment": 0}, {"topic": 0, "sentiment": 0}
    for e, (s_topic, s_sentiment), (c_topic, c_sentiment) in zip(examples, serving, challenger, strict=True):
        known = False
        for head, truth, s, c in (("topic", e.topic, s_topic, c_topic),
                                  ("sentiment", e.sentiment, s_sentiment, c_sentiment)):
            if truth is not None and s == truth:
                known = True
                known_total[head] += 1
                known_kept[head] += int(c == truth)
        known_examples += known
    return HoldoutScores(tally(examples, serving), tally(examples, challenger),
                         Tally(known_examples, known_kept, known_total))


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    numbers: dict[str, Any]
    """recent_examples, recent_serving, recent_challenger, improvement, holdout_examples, holdout_known,
    holdout_serving, holdout_challenger, forgetting, forgetting_stratum (for the registry and metrics)."""


def judge(
    settings: GateSettings,
    *,
    recent: tuple[Tally, Tally],
    holdout: Mapping[str, HoldoutScores],
) -> Verdict:
    """Decide on ``recent`` = (serving, challenger) tallies on the held-out new examples and
    ``holdout`` = the scores on each stratum of the replay holdout."""
    serving, challenger = recent
    numbers: dict[str, Any] = {
        "recent_examples": serving.examples,
        "recent_serving": serving.accuracy,
        "recent_challenger": challenger.accuracy,
    }
    whole = HoldoutScores()
    for scores in holdout.values():
        whole = whole + scores
    numbers.update(holdout_examples=whole.serving.examples, holdout_known=whole.retained.examples,
                   holdout_serving=whole.serving.accuracy, holdout_challenger=whole.challenger.accuracy)
    lost: dict[str, float] = {}
    if whole.forgetting is not None:
        lost["all"] = whole.forgetting
    for name, scores in sorted(holdout.items()):
        if scores.retained.examples >= settings.min_stratum_examples and scores.forgetting is not None:
            lost[name] = scores.forgetting
    worst = max(lost, key=lost.__getitem__) if lost else None
    forgetting = round(lost[worst], 6) if worst else 0.0
    numbers.update(forgetting=forgetting, forgetting_stratum=worst)
    note = f" ({whole.retained.examples} known holdout examples)" if whole.retained.examples < 50 else ""

    if serving.examples < settings.min_gate_examples or serving.accuracy is None or challenger.accuracy is None:
        return Verdict(False, f"only {serving.examples} held-out new examples (need {settings.min_gate_examples})",
                       numbers | {"improvement": None})
    improvement = round(challenger.accuracy - serving.accuracy, 6)
    numbers["improvement"] = improvement
    if improvement < settings.min_improvement:
        return Verdict(False, f"improvement {improvement:.3f} < {settings.min_improvement:.3f}", numbers)
    if forgetting > settings.max_forgetting:
        return Verdict(False, f"forgetting {forgetting:.3f} on {worst} > {settings.max_forgetting:.3f}", numbers)
    return Verdict(
        True,
        f"improvement {improvement:.3f} >= {settings.min_improvement:.3f}; "
        f"forgetting {forgetting:.3f} <= {settings.max_forgetting:.3f}{note}",
        numbers,
    )
