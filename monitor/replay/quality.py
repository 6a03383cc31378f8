"""Alert quality in a replay: the model's surge alerts against the surges the labels show.

**Ground truth.** The same surge definition (``monitor.alerts``: the same windows, thresholds,
hysteresis and event-time watermark, ``SurgeTracker``) applied to the labels instead of the
predictions: every item moves the clock, but only labelled items are counted, with their
labelled sentiment, under their labelled topic (the predicted topic when the label has only a
sentiment); tickers are inputs, so ticker keys are the same. Since only part of a feed is
labelled, the count thresholds (``min_count``, ``min_baseline_count``) are scaled by the
labelled share of the items (rounded up), so that a true surge needs the same real volume as a
model alert. The ground truth is hindsight: it uses labels at ``published_at``, not when they
became visible.

**Matching.** An alert is the span from ``raised`` to ``cleared`` (or the end of the feed). A
model alert is *right* when it overlaps a true surge of the same scope and key; a true surge is
*caught* when a model alert overlaps it. Per scope (``topic``, ``ticker``, ``all``):

- precision = right model alerts / model alerts; recall = caught true surges / true surges
  (``None`` when there is nothing to divide by);
- detection delay of a caught surge = raised time of the first model alert that overlaps it minus
  the surge's raised time (event-time seconds; negative when the model raised first); the median
  is reported.

``sweep`` repeats this for a grid of ``alerts.*`` settings (model alerts and ground truth both
under each setting), on the predictions of one replay: the model's predictions do not depend on
the alert settings, so no model runs again.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from monitor.alerts import SurgeDetector, SurgeStats, SurgeTracker
from monitor.config import AlertConfig
from monitor.records import Alert, Label, Prediction

__all__ = ["DEFAULT_GRID", "SCOPES", "Span", "alert_spans", "model_alerts", "parse_grid", "score", "sweep",
           "truth_alerts", "truth_config"]

SCOPES = ("topic", "ticker", "all")
#: The grid ``monitor replay --sweep`` runs without a spec: 3 x 3 = 9 settings (the others: the config's).
DEFAULT_GRID: dict[str, tuple[float, ...]] = {"ratio": (1.5, 2.0, 3.0), "min_count": (5.0, 10.0, 20.0)}


@dataclass(frozen=True)
class Span:
    scope: str
    key: str
    start: float
    end: float
    alert_id: str


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def model_alerts(predictions: Sequence[Prediction], config: AlertConfig, watch_tickers: Iterable[str],
                 on_stats: Callable[[SurgeStats], None] | None = None) -> list[Alert]:
    """The alerts of the daemon's detector on ``predictions`` (in event order): what the replay raised."""
    tracker = SurgeTracker(SurgeDetector(config, on_stats), watch_tickers)
    out: list[Alert] = []
    for p in predictions:
        out.extend(tracker.add(_ts(p.published_at), p.topic, p.tickers, p.sentiment, p.id, p.model_version))
    return out


def truth_config(config: AlertConfig, coverage: float) -> AlertConfig:
    """``config`` with its count thresholds scaled by ``coverage`` (labelled share of the items)."""
    coverage = min(max(coverage, 1e-9), 1.0)
    return replace(config, min_count=max(1, math.ceil(config.min_count * coverage)),
                   min_baseline_count=max(1, math.ceil(config.min_baseline_count * coverage)))


def truth_alerts(predictions: Sequence[Prediction], labels: Mapping[str, Label], config: AlertConfig,
                 watch_tickers: Iterable[str], on_stats: Callable[[SurgeStats], None] | None = None) -> list[Alert]:
    """The ground-truth alerts (module docstring); ``config`` is already scaled (``truth_config``)."""
    tracker = SurgeTracker(SurgeDetector(config, on_stats), watch_tickers)
    out: list[Alert] = []
    for p in predictions:
        label = labels.get(p.id)
        sentiment = label.sentiment if label is not None else None
        topic = label.topic if label is not None and label.topic else p.topic
        out.extend(tracker.add(_ts(p.published_at), topic, p.tickers, sentiment, p.id, "labels"))
    return out


def alert_spans(alerts: Iterable[Alert | Mapping[str, Any]], end: float) -> list[Span]:
    """One span per alert: raised to cleared, or to ``end`` while still active."""
    opened: dict[str, Span] = {}
    out: list[Span] = []
    for a in alerts:
        body = a if isinstance(a, Mapping) else a.__dict__
        if body["state"] == "raised":
            opened[body["alert_id"]] = Span(body["scope"], body["key"], _ts(body["at"]), end, body["alert_id"])
        elif body["alert_id"] in opened:
            out.append(replace(opened.pop(body["alert_id"]), end=_ts(body["at"])))
    out.extend(opened.values())
    return sorted(out, key=lambda s: (s.start, s.scope, s.key))


def _overlap(a: Span, b: Span) -> bool:
    return a.scope == b.scope and a.key == b.key and a.start <= b.end and b.start <= a.end


def score(model: Sequence[Span], truth: Sequence[Span], *, labelled: bool = True) -> dict[str, dict[str, Any]]:
    """Precision, recall and detection delay per scope (module docstring); all ``None`` when the feed
    has no labels (``labelled=False``: no ground truth, which is not the same as no true surge)."""
    out: dict[str, dict[str, Any]] = {}
    for scope in SCOPES:
        m = [s for s in model if scope in ("all", s.scope)]
        t = [s for s in truth if scope in ("all", s.scope)]
        right = sum(1 for s in m if any(_overlap(s, u) for u in t))
        delays = []
        for u in t:
            hits = [s.start for s in m if _overlap(s, u)]
            if hits:
                delays.append(min(hits) - u.start)
        out[scope] = {
            "alerts": len(m),
            "true_surges": len(t),
            "right": right,
            "caught": len(delays),
            "precision": round(right / len(m), 4) if m and labelled else None,
            "recall": round(len(delays) / len(t), 4) if t else None,
            "median_delay_s": round(statistics.median(delays), 1) if delays else None,
        }
    return out


@dataclass(frozen=True)
class Quality:
    """What ``evaluate`` found for one setting."""

    config: AlertConfig
    truth_config: AlertConfig
    model: list[Alert]
    truth: list[Alert]
    scores: dict[str, dict[str, Any]]


def evaluate(predictions: Sequence[Prediction], labels: Mapping[str, Label], config: AlertConfig,
             watch_tickers: Sequence[str], *, model: Sequence[Alert] | None = None,
             on_stats: Callable[[SurgeStats], None] | None = None,
             on_truth_stats: Callable[[SurgeStats], None] | None = None) -> Quality:
    """Model alerts (recomputed unless given) and ground truth under ``config``, and their scores."""
    coverage = sum(1 for p in predictions if p.id in labels and labels[p.id].sentiment) / max(1, len(predictions))
    tcfg = truth_config(config, coverage)
    found = list(model) if model is not None else model_alerts(predictions, config, watch_tickers, on_stats)
    truth = truth_alerts(predictions, labels, tcfg, watch_tickers, on_truth_stats)
    end = max((_ts(p.published_at) for p in predictions), default=0.0)
    return Quality(config, tcfg, found, truth, score(alert_spans(found, end), alert_spans(truth, end),
                                                     labelled=coverage > 0))


def parse_grid(specs: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``["ratio=1.5,2", "min_count=10,20"]`` -> ``{"ratio": (1.5, 2.0), "min_count": (10.0, 20.0)}``."""
    known = {f.name for f in fields(AlertConfig)}
    grid: dict[str, tuple[float, ...]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().removeprefix("alerts.")
        if not sep or key not in known:
            raise ValueError(f"--sweep {spec!r}: expected KEY=V1,V2,... with KEY one of {', '.join(sorted(known))}")
        try:
            grid[key] = tuple(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"--sweep {spec!r}: values must be numbers") from None
        if not grid[key]:
            raise ValueError(f"--sweep {spec!r}: no values")
    return grid


def settings(base: AlertConfig, grid: Mapping[str, Sequence[float]]) -> list[AlertConfig]:
    """Every combination of ``grid`` applied to ``base`` (validated as a config would be)."""
    from monitor.config import ConfigError

    types = {f.name: f.type for f in fields(AlertConfig)}
    out = []
    for combo in itertools.product(*grid.values()):
        changes: dict[str, Any] = {k: (int(v) if types[k] in (int, "int") else v)
                                   for k, v in zip(grid, combo, strict=True)}
        try:
            out.append(replace(base, **changes))
        except ConfigError as err:
            raise ValueError(f"--sweep setting {changes}: {err}") from None
    return out


def sweep(predictions: Sequence[Prediction], labels: Mapping[str, Label], base: AlertConfig,
          watch_tickers: Sequence[str], grid: Mapping[str, Sequence[float]]) -> list[dict[str, Any]]:
    """One row per (setting, scope): the setting's values, then the scores."""
    rows = []
    for cfg in settings(base, grid):
        quality = evaluate(predictions, labels, cfg, watch_tickers)
        for scope, figures in quality.scores.items():
            rows.append({**{k: getattr(cfg, k) for k in grid}, "scope": scope, **figures})
    return rows


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of ``rows`` (``monitor replay`` prints it)."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    text = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(t, widths, strict=True)) for t in text]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
