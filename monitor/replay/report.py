"""The replay's HTML report: key figures, three plots (PNG, embedded as base64), alerts and events.

Plots: the sentiment index per topic over time with the surge alerts marked (raised to cleared
shaded), the rolling prequential accuracy per head with drift detections and training outcomes
marked, and the volume per time bucket split by predicted sentiment. One self-contained file:
no external scripts, styles or images.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["PLOTS", "render_plots", "write_report"]

#: Plot id -> caption; each is an ``<img id="plot-<id>">`` in the report.
PLOTS = {
    "sentiment": "Sentiment index per topic (predicted sentiment, per time bucket); surge alerts shaded",
    "prequential": "Prequential accuracy (rolling, test-then-train) per head; drift and training marked",
    "volume": "Volume per time bucket by predicted sentiment",
}
SENTIMENT_COLOURS = {"negative": "#d62728", "neutral": "#7f7f7f", "positive": "#2ca02c"}
MAX_TOPICS = 6


def _figure() -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(11, 4.2), dpi=100, layout="constrained")


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#555")
    ax.set_xticks([])
    ax.set_yticks([])


def _alert_spans(alerts: Sequence[Mapping[str, Any]], end: pd.Timestamp) -> list[tuple[str, str, Any, Any]]:
    """(scope, key, raised at, cleared at or the end of the feed) per alert."""
    import pandas as pd

    opened: dict[str, Mapping[str, Any]] = {}
    spans = []
    for a in alerts:
        if a["state"] == "raised":
            opened[a["alert_id"]] = a
        elif a["alert_id"] in opened:
            r = opened.pop(a["alert_id"])
            spans.append((r["scope"], r["key"], pd.Timestamp(r["at"]), pd.Timestamp(a["at"])))
    spans.extend((r["scope"], r["key"], pd.Timestamp(r["at"]), end) for r in opened.values())
    return spans


def plot_sentiment(trends: pd.DataFrame, alerts: Sequence[Mapping[str, Any]]) -> bytes:
    """Small multiples: one panel per topic (alerted topics first, then by volume), alerts shaded."""
    from matplotlib.figure import Figure

    if trends.empty:
        fig = _figure()
        _empty(fig.subplots(), "no predictions")
        return _png(fig)
    spans = _alert_spans(alerts, trends["bucket_start"].max())
    volume = trends.groupby("topic")["count"].sum().sort_values(ascending=False, kind="stable")
    alerted = [k for s, k, _, _ in spans if s == "topic" and k in volume.index]
    topics = list(dict.fromkeys([*alerted, *volume.index]))[:MAX_TOPICS]
    rows = (len(topics) + 1) // 2
    fig = Figure(figsize=(11, 1.9 * rows + 0.6), dpi=100, layout="constrained")
    axes = fig.subplots(rows, 2, sharex=True, sharey=True, squeeze=False).ravel()
    first, last = trends["bucket_start"].min(), trends["bucket_start"].max()
    for ax, topic in zip(axes, topics, strict=False):
        data = trends[trends["topic"] == topic].set_index("bucket_start")["sentiment_index"]
        ax.fill_between(data.index, 0, data.values, where=data.values >= 0, color=SENTIMENT_COLOURS["positive"],
                        alpha=0.35, interpolate=True)
        ax.fill_between(data.index, 0, data.values, where=data.values < 0, color=SENTIMENT_COLOURS["negative"],
                        alpha=0.35, interpolate=True)
        ax.plot(data.index, data.values, color="#333", lw=0.9, marker=".", ms=3)
        ax.set_title(f"{topic}  ({int(volume[topic])} items)", fontsize=9, loc="left")
        for scope, key, start, stop in spans:
            if scope == "topic" and key == topic:
                ax.axvspan(start, stop, color="#d62728", alpha=0.18)
                ax.annotate("surge alert", (start, 0.95), xycoords=("data", "axes fraction"), fontsize=8,
                            color="#d62728", va="top")
            elif scope == "ticker":  # named in the title: ticker alerts often start together
                ax.axvline(start, color="#9467bd", ls="--", lw=1.0)
        ax.axhline(0.0, color="#999", lw=0.6)
        ax.set_ylim(-1.05, 1.05)
        if last > first:
            ax.set_xlim(first, last)
        ax.grid(alpha=0.3)
    for ax in axes[len(topics):]:
        ax.set_visible(False)
    for i, ax in enumerate(axes[:len(topics)]):
        if i + 2 >= len(topics):  # the lowest visible panel of its column carries the time axis
            ax.tick_params(axis="x", labelbottom=True, labelrotation=20, labelsize=8)
    ticker = sorted({k for s, k, _, _ in spans if s == "ticker"})
    note = f"; dashed: ticker surge alerts ({', '.join(ticker)})" if ticker else ""
    fig.suptitle(f"sentiment index (pos - neg) / n per bucket; shaded red: topic surge alert{note}", fontsize=9)
    return _png(fig)


def plot_prequential(labels: pd.DataFrame, events: Sequence[Mapping[str, Any]], window: int = 100) -> bytes:
    import pandas as pd
    from matplotlib.dates import date2num

    fig = _figure()
    ax = fig.subplots()
    if labels.empty:
        _empty(ax, "the feed has no labels: no prequential accuracy")
        return _png(fig)
    for head, rows in labels.groupby("head", sort=True):
        w = max(1, min(window, len(rows) // 5 or 1))
        rolling = rows["correct"].astype(float).rolling(w, min_periods=max(1, w // 4)).mean()
        ax.plot(rows["at"], rolling, lw=1.5, label=f"{head} (rolling {w} labels)")
    drift_colours = {"sentiment_error": "#ff7f0e", "topic_error": "#8c564b", "confidence": "#9467bd",
                     "sentiment_mix": "#e377c2"}
    styles = {"drift": ("#ff7f0e", ":"), "promoted": ("#2ca02c", "-"), "rejected": ("#7f7f7f", "--"),
              "failed": ("#d62728", "--"), "model_swap": ("#1f77b4", "-.")}
    seen: set[str] = set()
    for e in events:
        kind = e.get("outcome") if e.get("type") == "training" else e.get("type")
        if kind not in styles:
            continue
        colour, style = styles[kind]
        if kind == "drift":
            colour = drift_colours.get(str(e.get("signal")), colour)
        name = f"drift ({e.get('signal')})" if kind == "drift" else str(kind)
        at = date2num(pd.Timestamp(e["at"]))
        ax.axvline(at, color=colour, ls=style, lw=1.3, label=None if name in seen else name)
        seen.add(name)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_xlabel("label visible at (UTC)")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_volume(trends: pd.DataFrame) -> bytes:
    fig = _figure()
    ax = fig.subplots()
    if trends.empty:
        _empty(ax, "no predictions")
        return _png(fig)
    totals = trends.groupby("bucket_start")[["negative", "neutral", "positive"]].sum()
    width = (totals.index[1] - totals.index[0]) * 0.9 if len(totals) > 1 else 0.03
    bottom = None
    for name in ("negative", "neutral", "positive"):
        ax.bar(totals.index, totals[name], width=width, bottom=bottom, color=SENTIMENT_COLOURS[name], label=name,
               align="edge")
        bottom = totals[name] if bottom is None else bottom + totals[name]
    ax.set_ylabel("items per bucket")
    ax.set_xlabel("published_at (UTC)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def render_plots(
    trends: pd.DataFrame, labels: pd.DataFrame, alerts: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]]
) -> dict[str, bytes]:
    """``{plot id: PNG bytes}`` for every plot in ``PLOTS``."""
    import matplotlib

    matplotlib.use("Agg")
    return {
        "sentiment": plot_sentiment(trends, alerts),
        "prequential": plot_prequential(labels, events),
        "volume": plot_volume(trends),
    }


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], limit: int = 200) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows[:limit]:
        cells = "".join(f"<td>{html.escape(_short(r.get(c, '')))}</td>" for c in columns)
        body.append(f"<tr>{cells}</tr>")
    more = f"<p>... {len(rows) - limit} more in the JSONL file</p>" if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _short(value: Any) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _figures(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key, value in summary.items():
        if isinstance(value, Mapping):
            rows.extend({"figure": f"{key}.{k}", "value": v} for k, v in value.items() if not isinstance(v, Mapping))
        else:
            rows.append({"figure": key, "value": value})
    return rows


def write_report(
    path: Path,
    *,
    summary: Mapping[str, Any],
    plots: Mapping[str, bytes],
    alerts: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
) -> Path:
    """Write the self-contained HTML report."""
    sections = []
    for plot_id, caption in PLOTS.items():
        data = base64.b64encode(plots[plot_id]).decode("ascii")
        sections.append(f'<section id="{plot_id}"><h2>{html.escape(caption)}</h2>'
                        f'<img id="plot-{plot_id}" alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                        "</section>")
    learning = [{**e, "details": {k: v for k, v in e.items() if k not in ("type", "at", "at_s")}} for e in events]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>monitor replay report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}img{{max-width:100%}}
table{{border-collapse:collapse;font-size:0.85em}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}</style>
</head><body>
<h1>monitor replay report</h1>
<section id="summary"><h2>Summary</h2>{_table(_figures(summary), ["figure", "value"], limit=1000)}</section>
{"".join(sections)}
<section id="alerts"><h2>Alerts</h2>
{_table(alerts, ["at", "state", "scope", "key", "negative_share", "baseline_share", "window_count", "model_version"])}
</section>
<section id="events"><h2>Learning events</h2>{_table(learning, ["at", "type", "details"])}</section>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
