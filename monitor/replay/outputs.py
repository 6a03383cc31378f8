"""The tables a replay writes: predictions, sentiment trends, prequential accuracy, alerts, events.

Every table is a pure function of the replay's results, so two replays of the same feed, config
and seed write byte-identical files (``summary.json`` aside: it also holds wall-clock timings).

- ``predictions``: one row per item, in event order: the prediction (labels, probabilities,
  confidence, model version) beside the item's label, if the feed has one, and whether the
  prediction got it right. ``latency_ms`` is left out: it measures this machine, not the model.
- ``trends``: per topic and time bucket of ``published_at``: count, positive, negative, neutral
  and the sentiment index ``(positive - negative) / count`` of the predicted sentiments.
- ``prequential``: per head and bucket of *label visibility time*: how many labels arrived, how
  many of those items the serving model had predicted right (test-then-train: every prediction
  was made before its label was known) and the cumulative accuracy so far.
- ``alert_stats``: per check of the surge detector at which a key's statistic or state changed:
  ``at`` (the watermark), ``scope``, ``key``, ``count`` (items in ``alerts.window_seconds``),
  ``negative_share``, ``baseline``, ``raise_threshold``, ``clear_threshold``, ``active``: what
  each alert was decided on, at the detector's own resolution.
- ``sweep``: with ``--sweep``, one row per alert setting and scope (``monitor.replay.quality``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import astuple, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.alerts import SurgeStats
from monitor.records import Alert, Prediction
from monitor.replay.feeds import Event

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "HEADS",
    "alert_stats_frame",
    "check_bucket",
    "labels_frame",
    "predictions_frame",
    "prequential_frame",
    "rows_frame",
    "trends_frame",
    "write_jsonl",
    "write_table",
]

HEADS = ("topic", "sentiment")


def check_bucket(bucket: str) -> str:
    """Validate a pandas frequency such as ``1h``, ``15min``, ``1D``; return it."""
    import pandas as pd

    try:
        span = pd.Timedelta(bucket)
    except (ValueError, TypeError):
        span = pd.Timedelta(0)
    if span <= pd.Timedelta(0):
        raise ValueError(f"--bucket {bucket!r} is not a positive time span such as 15min, 1h or 1D")
    return bucket


def predictions_frame(predictions: Sequence[Prediction], label_events: Sequence[Event]) -> pd.DataFrame:
    """One row per prediction with the item's label and correctness (module docstring)."""
    import pandas as pd

    labels = {e.id: e for e in label_events}
    rows: list[dict[str, Any]] = []
    for p in predictions:
        e = labels.get(p.id)
        label = e.label if e is not None else None
        row: dict[str, Any] = {
            "id": p.id,
            "published_at": p.published_at,
            "source": p.source,
            "kind": p.kind,
            "tickers": ";".join(p.tickers),
            "text": p.text,
            "topic": p.topic,
            "topic_prob": p.topic_probs.get(p.topic),
            "sentiment": p.sentiment,
        }
        row.update({f"p_{name}": prob for name, prob in p.sentiment_probs.items()})
        row.update({
            "confidence": p.confidence,
            "model_version": p.model_version,
            "label_topic": label.topic if label else None,
            "label_sentiment": label.sentiment if label else None,
            "label_visible_at": pd.Timestamp(e.at, unit="s", tz="UTC") if e is not None else pd.NaT,
            "topic_probs": json.dumps(p.topic_probs, ensure_ascii=False),
        })
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["published_at"] = pd.to_datetime(frame["published_at"], utc=True, format="ISO8601")
    frame["label_visible_at"] = pd.to_datetime(frame["label_visible_at"], utc=True)
    for head in HEADS:
        known = frame[f"label_{head}"].notna()
        correct = (frame[head] == frame[f"label_{head}"]).astype("boolean")
        frame[f"{head}_correct"] = correct.mask(~known)
    return frame


def trends_frame(predictions: pd.DataFrame, bucket: str) -> pd.DataFrame:
    """Counts per sentiment and sentiment index per (bucket, topic) of the predictions."""
    import pandas as pd

    columns = ["bucket_start", "topic", "count", "positive", "negative", "neutral", "sentiment_index"]
    if predictions.empty:
        return pd.DataFrame(columns=columns)
    frame = predictions.assign(bucket_start=predictions["published_at"].dt.floor(bucket))
    counts = frame.pivot_table(index=["bucket_start", "topic"], columns="sentiment", values="id", aggfunc="count",
                               fill_value=0)
    for name in ("positive", "negative", "neutral"):
        if name not in counts.columns:
            counts[name] = 0
    counts = counts[["positive", "negative", "neutral"]].astype("int64")
    counts.columns.name = None
    counts["count"] = frame.groupby(["bucket_start", "topic"]).size()
    counts["sentiment_index"] = ((counts["positive"] - counts["negative"]) / counts["count"]).round(4)
    return counts.reset_index()[columns]


def labels_frame(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per (label, head): when the label became visible, and whether the prediction was right."""
    import pandas as pd

    parts = []
    for head in HEADS:
        if predictions.empty or f"label_{head}" not in predictions:
            continue
        known = predictions[predictions[f"label_{head}"].notna()]
        parts.append(pd.DataFrame({"at": known["label_visible_at"], "head": head, "id": known["id"],
                                   "correct": known[f"{head}_correct"].astype(bool),
                                   "model_version": known["model_version"]}))
    if not parts:
        return pd.DataFrame(columns=["at", "head", "id", "correct", "model_version"])
    return pd.concat(parts).sort_values(["at", "head", "id"], kind="stable").reset_index(drop=True)


def prequential_frame(labels: pd.DataFrame, bucket: str) -> pd.DataFrame:
    """Per head and bucket of label time: labels, correct, accuracy, cumulative accuracy."""
    import pandas as pd

    columns = ["bucket_start", "head", "labels", "correct", "accuracy", "cumulative_accuracy"]
    if labels.empty:
        return pd.DataFrame(columns=columns)
    frame = labels.assign(bucket_start=labels["at"].dt.floor(bucket))
    grouped = frame.groupby(["head", "bucket_start"])["correct"].agg(labels="count", correct="sum").reset_index()
    grouped["correct"] = grouped["correct"].astype("int64")
    grouped["accuracy"] = (grouped["correct"] / grouped["labels"]).round(4)
    cum = grouped.groupby("head")[["correct", "labels"]].cumsum()
    grouped["cumulative_accuracy"] = (cum["correct"] / cum["labels"]).round(4)
    return grouped.sort_values(["bucket_start", "head"], kind="stable").reset_index(drop=True)[columns]


def alert_stats_frame(stats: Sequence[SurgeStats]) -> pd.DataFrame:
    """The surge detector's statistic per change (module docstring), ``at`` as a UTC timestamp."""
    import pandas as pd

    columns = [f.name for f in fields(SurgeStats)]
    frame = pd.DataFrame([astuple(s) for s in stats], columns=columns)
    frame["at"] = pd.to_datetime(frame["at"], unit="s", utc=True)
    return frame


def rows_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(list(rows))


def write_table(frame: pd.DataFrame, path: Path, fmt: str) -> Path:
    """Write ``frame`` as Parquet (``fmt='parquet'``) or CSV; return the path written."""
    if fmt == "parquet":
        path = path.with_suffix(".parquet")
        frame.to_parquet(path, index=False)
    elif fmt == "csv":
        path = path.with_suffix(".csv")
        frame.to_csv(path, index=False)
    else:
        raise ValueError(f"unknown table format {fmt!r} (parquet or csv)")
    return path


def write_jsonl(records: Sequence[Alert | dict[str, Any]], path: Path) -> Path:
    """One JSON object per line (alerts in their Kafka message form)."""
    with path.open("w", encoding="utf-8") as handle:
        for r in records:
            line = r.to_json().decode("utf-8") if isinstance(r, Alert) else json.dumps(r, ensure_ascii=False,
                                                                                       default=str)
            handle.write(line + "\n")
    return path
