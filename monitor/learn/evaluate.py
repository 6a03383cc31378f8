"""Evaluation of the classifier on labelled examples, one report per head.

Partial labels are the norm (PhraseBank has no topics, the Twitter topic set no sentiments), so
each head is scored only on the examples that carry its label, and a head with no labelled
example is simply absent from the report. The overall score used for early stopping and model
promotion is the mean macro-F1 over the heads present.

Per head: accuracy, per-class precision/recall/F1/support, micro/macro/weighted averages and
the confusion matrix (rows = true label, columns = predicted), computed with scikit-learn over
the labels that occur in the truth or the predictions (its ``classification_report`` rule). A
true label the model does not know (e.g. a topic added after it was trained) is kept: it
counts as an error and shows up as its own row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from monitor.model.batching import Tokenizer
from monitor.model.network import MultiTaskClassifier
from monitor.model.predictor import Predictor
from monitor.records import Example

__all__ = ["ClassScores", "EvalReport", "HeadReport", "evaluate", "score_head"]


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class HeadReport:
    """Scores of one head on the examples that carry its label."""

    head: str
    labels: tuple[str, ...]
    accuracy: float
    per_class: Mapping[str, ClassScores]
    averages: Mapping[str, ClassScores]  # "micro", "macro", "weighted"
    confusion: tuple[tuple[int, ...], ...]  # [true][predicted], in ``labels`` order

    @property
    def support(self) -> int:
        return sum(c.support for c in self.per_class.values())

    @property
    def macro_f1(self) -> float:
        return self.averages["macro"].f1

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body.update(support=self.support, macro_f1=self.macro_f1)
        body["labels"], body["confusion"] = list(self.labels), [list(row) for row in self.confusion]
        return body


@dataclass(frozen=True)
class EvalReport:
    heads: Mapping[str, HeadReport]
    examples: int
    seconds: float

    @property
    def macro_f1(self) -> float:
        """Mean macro-F1 over the heads present; NaN when no example has a label."""
        if not self.heads:
            return math.nan
        return sum(h.macro_f1 for h in self.heads.values()) / len(self.heads)

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "seconds": self.seconds,
            "macro_f1": None if math.isnan(self.macro_f1) else self.macro_f1,
            "heads": {name: head.to_dict() for name, head in self.heads.items()},
        }


def evaluate(
    predictor_or_model: Predictor | MultiTaskClassifier,
    examples: Sequence[Example],
    tokenizer: Tokenizer | None = None,
    *,
    batch_size: int = 64,
    max_length: int = 128,
) -> EvalReport:
    """Score ``examples`` with a :class:`Predictor`, or a model plus its ``tokenizer``.

    A bare model is run on the device it is on (and left in eval mode).
    """
    started = time.perf_counter()
    if isinstance(predictor_or_model, Predictor):
        predictor = predictor_or_model
    else:
        if tokenizer is None:
            raise TypeError("evaluate(model, ...) needs the model's tokenizer")
        device = next(predictor_or_model.parameters()).device
        predictor = Predictor(
            predictor_or_model, tokenizer, "eval", device=device, max_length=max_length, batch_size=batch_size
        )
    heads: dict[str, HeadReport] = {}
    labelled = [e for e in examples if e.topic is not None or e.sentiment is not None]
    scored = predictor.predict([e.text for e in labelled], [e.source for e in labelled])
    model = predictor.model
    for head, known in (("topic", model.topics), ("sentiment", model.sentiments)):
        pairs = [
            (getattr(e, head), getattr(s, head)) for e, s in zip(labelled, scored, strict=True) if getattr(e, head)
        ]
        if pairs:
            y_true, y_pred = zip(*pairs, strict=True)
            heads[head] = score_head(head, y_true, y_pred, known)
    return EvalReport(heads, len(labelled), time.perf_counter() - started)


def score_head(head: str, y_true: Sequence[str], y_pred: Sequence[str], known: Sequence[str]) -> HeadReport:
    """Scores for one head from true and predicted label names.

    ``known`` fixes the label order (the model's); labels absent from both sequences are left out.

    >>> r = score_head("sentiment", ["neg", "pos", "pos"], ["neg", "pos", "neg"], ["neg", "neu", "pos"])
    >>> r.labels, r.accuracy, r.confusion
    (('neg', 'pos'), 0.6666666666666666, ((1, 0), (1, 1)))
    """
    present = set(y_true) | set(y_pred)
    labels = [label for label in known if label in present]
    labels += sorted(present - set(labels))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        label: ClassScores(float(p), float(r), float(f), int(s))
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    }
    averages = {}
    for average in ("micro", "macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average, zero_division=0)
        averages[average] = ClassScores(float(p), float(r), float(f), len(y_true))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    accuracy = sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)
    return HeadReport(
        head=head,
        labels=tuple(labels),
        accuracy=accuracy,
        per_class=per_class,
        averages=averages,
        confusion=tuple(tuple(int(v) for v in row) for row in matrix),
    )
