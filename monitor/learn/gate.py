"""The promotion gate: may a retrained challenger replace the serving model? Pure, no model here.

Two questions, both answered on labelled data that neither model trained on:

- **Better now?** On the held-out part of the new labelled window, the challenger's accuracy
  minus the serving model's must be at least ``min_improvement``.
- **Still good on the old?** On the replay holdout, the challenger may lose at most
  ``max_forgetting`` accuracy. Forgetting is the *worst* loss over the holdout as a whole and over
  each of its strata (source, period) with at least ``min_stratum_examples`` examples, so a gain
  on the new regime cannot hide a loss on an old one.

Accuracy of a set is the mean over the heads that have labels in it of each head's accuracy on
the examples labelled for that head (partial labels are the norm).

    >>> s = GateSettings(min_gate_examples=2, min_improvement=0.05, max_forgetting=0.02)
    >>> truth = [Example("a", sentiment="positive"), Example("b", sentiment="negative")]
    >>> serving = tally(truth, [("T", "negative"), ("T", "negative")])
    >>> challenger = tally(truth, [("T", "positive"), ("T", "negative")])
    >>> v = judge(s, recent=(serving, challenger), holdout={})
    >>> v.promote, v.reason, v.numbers["improvement"]
    (True, 'improvement 0.500 >= 0.050; forgetting 0.000 <= 0.020 (holdout empty)', 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.learn.settings import GateSettings
from monitor.records import Example

__all__ = ["Tally", "Verdict", "judge", "tally"]


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
class Verdict:
    promote: bool
    reason: str
    numbers: dict[str, Any]
    """recent_serving, recent_challenger, improvement, holdout_serving, holdout_challenger,
    forgetting, forgetting_stratum, recent_examples, holdout_examples (for the registry and metrics)."""


def judge(
    settings: GateSettings,
    *,
    recent: tuple[Tally, Tally],
    holdout: Mapping[str, tuple[Tally, Tally]],
) -> Verdict:
    """Decide on ``recent`` = (serving, challenger) tallies on the held-out new examples and
    ``holdout`` = {stratum: (serving, challenger)} tallies on the replay holdout."""
    serving, challenger = recent
    numbers: dict[str, Any] = {
        "recent_examples": serving.examples,
        "recent_serving": serving.accuracy,
        "recent_challenger": challenger.accuracy,
    }
    whole_s, whole_c = Tally(), Tally()
    for s, c in holdout.values():
        whole_s, whole_c = whole_s + s, whole_c + c
    numbers.update(holdout_examples=whole_s.examples, holdout_serving=whole_s.accuracy,
                   holdout_challenger=whole_c.accuracy)
    drops: dict[str, float] = {}
    if whole_s.accuracy is not None and whole_c.accuracy is not None:
        drops["all"] = whole_s.accuracy - whole_c.accuracy
    for name, (s, c) in sorted(holdout.items()):
        if s.examples >= settings.min_stratum_examples and s.accuracy is not None and c.accuracy is not None:
            drops[name] = s.accuracy - c.accuracy
    worst = max(drops, key=drops.__getitem__) if drops else None
    forgetting = round(max(0.0, drops[worst]), 6) if worst else 0.0
    numbers.update(forgetting=forgetting, forgetting_stratum=worst)
    note = "" if drops else " (holdout empty)"

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
