"""Drift signals: pure functions from a prediction (and its label, once known) to numbers.

Label-based signals are *prequential*: the prediction was made before the label was looked at,
so "was it wrong" is an honest test of the serving model on the current stream.

- ``topic_error`` / ``sentiment_error``: 1.0 when the head's prediction differs from the label,
  0.0 when it agrees; only for the heads a label carries. A rise means the model degrades.
- ``confidence``: ``1 - confidence`` of the prediction (the uncertainty); a rise means the stream
  moved away from what the model knows. Needs no label.
- ``sentiment_mix``: the predicted polarity (negative -1, neutral 0, positive +1); a shift either
  way means the mix of predicted classes changed, which may be the world or the model. Needs no label.

    >>> head_errors("Macro", "positive", topic="Macro", sentiment="negative")
    {'topic': 0.0, 'sentiment': 1.0}
    >>> label_free_values(0.8, "negative", ("confidence", "sentiment_mix"))
    {'confidence': 0.2, 'sentiment_mix': -1.0}
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "HARMFUL_DIRECTION",
    "HEADS",
    "LABEL_FREE_SIGNALS",
    "SIGNALS",
    "error_signal",
    "head_errors",
    "label_free_values",
    "polarity",
]

#: The classifier's heads, in the order the model returns them.
HEADS: tuple[str, ...] = ("topic", "sentiment")

#: Signals that need no label.
LABEL_FREE_SIGNALS: tuple[str, ...] = ("confidence", "sentiment_mix")

#: Every signal name: the values of the ``signal`` label of ``monitor_drift_detections_total``.
SIGNALS: tuple[str, ...] = ("topic_error", "sentiment_error", *LABEL_FREE_SIGNALS)

#: Which change of a signal counts as drift: "up", "down" or "both".
HARMFUL_DIRECTION: dict[str, str] = {
    "topic_error": "up",
    "sentiment_error": "up",
    "confidence": "up",
    "sentiment_mix": "both",
}

_POLARITY = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}


def error_signal(head: str) -> str:
    """The signal name of a head's prequential error.

    >>> error_signal("topic")
    'topic_error'
    """
    return f"{head}_error"


def head_errors(
    predicted_topic: str, predicted_sentiment: str, *, topic: str | None, sentiment: str | None
) -> dict[str, float]:
    """Prequential 0/1 error per head, for the heads that have a label."""
    out: dict[str, float] = {}
    if topic is not None:
        out["topic"] = float(predicted_topic != topic)
    if sentiment is not None:
        out["sentiment"] = float(predicted_sentiment != sentiment)
    return out


def polarity(sentiment: str) -> float:
    """-1 / 0 / +1 for negative / neutral / positive (0 for any other class name).

    >>> polarity("positive"), polarity("neutral"), polarity("bullish")
    (1.0, 0.0, 0.0)
    """
    return _POLARITY.get(sentiment, 0.0)


def label_free_values(confidence: float, predicted_sentiment: str, names: Sequence[str]) -> dict[str, float]:
    """The label-free signals ``names`` of one prediction."""
    out: dict[str, float] = {}
    for name in names:
        if name == "confidence":
            out[name] = round(1.0 - confidence, 12)
        elif name == "sentiment_mix":
            out[name] = polarity(predicted_sentiment)
        else:
            raise ValueError(f"unknown label-free signal {name!r} (known: {', '.join(LABEL_FREE_SIGNALS)})")
    return out
