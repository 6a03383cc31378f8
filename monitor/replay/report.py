"""The replay's HTML report: one self-contained page of interactive Plotly figures and tables.

Sections (each an element with that ``id``):

- ``summary``: items, labels, accuracy per head, training runs by outcome, alerts by scope and
  the alerts' precision, recall and detection delay against the ground truth (``quality``);
- ``alert-<n>``: one figure per alerted key: the negative share over ``alerts.window_seconds``
  at every check where it changed (the statistic the detector uses, at its resolution), its
  baseline, the raise and clear thresholds, the model's alert spans shaded red and the true
  surges (ground truth) as a green strip along the top, and the window count against
  ``alerts.min_count`` (while the count is under it the share is drawn faint: it cannot raise an
  alert); under it the volume per bucket; it opens zoomed on the key's alerts (6 h either side);
- ``explorer``: the same figure for every topic and watch-listed ticker, chosen from a menu,
  with the volume per time bucket by predicted sentiment (buckets under ``min_bucket_count``
  items masked grey, so that a bucket of one item does not look like a trend);
- ``prequential``: rolling prequential accuracy per head, drift detections, training runs
  (outcome) and promotions / model swaps marked;
- ``alerts``, ``events``: the tables.

plotly.js is embedded inline once (no network); figures are ``<div class="plot">`` filled by it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from monitor.replay.quality import Span

__all__ = ["FIGURES", "ReportData", "write_report"]

#: Fixed figure ids -> caption (``alert-<n>`` figures come on top, one per alerted key).
FIGURES = {
    "explorer": "Every topic and watch-listed ticker: the alert statistic and the volume per bucket",
    "prequential": "Prequential accuracy (rolling, test-then-train) per head; drift, training and promotion",
}
SENTIMENT_COLOURS = {"negative": "#d62728", "neutral": "#9a9a9a", "positive": "#2ca02c"}
MASKED = "#dddddd"
DRIFT_COLOURS = {"sentiment_error": "#ff7f0e", "topic_error": "#8c564b", "confidence": "#9467bd",
                 "sentiment_mix": "#e377c2"}
#: Alert figures open zoomed on the key's alerts, this much event time either side (zoom out for the rest).
ZOOM_PAD_S = 6 * 3600.0
LINES = {"negative_share": ("negative share (window)", "#d62728", "solid"),
         "baseline": ("baseline", "#1f77b4", "solid"),
         "raise_threshold": ("raise threshold", "#ff7f0e", "dash"),
         "clear_threshold": ("clear threshold", "#2ca02c", "dot")}


class ReportData:
    """Everything the report shows, already computed by the runner."""

    def __init__(self, *, summary: Mapping[str, Any], stats: pd.DataFrame, predictions: pd.DataFrame,
                 labels: pd.DataFrame, alerts: Sequence[Mapping[str, Any]], model_spans: Sequence[Span],
                 truth_spans: Sequence[Span], events: Sequence[Mapping[str, Any]], bucket: str,
                 min_count: int, min_bucket_count: int, watch_tickers: Sequence[str]) -> None:
        self.summary = summary
        self.stats = stats
        self.predictions = predictions
        self.labels = labels
        self.alerts = alerts
        self.model_spans = model_spans
        self.truth_spans = truth_spans
        self.events = events
        self.bucket = bucket
        self.min_count = min_count
        self.min_bucket_count = min_bucket_count
        self.watch_tickers = tuple(watch_tickers)


# --- per-key data ----------------------------------------------------------------------------------
def _keys(data: ReportData) -> list[tuple[str, str]]:
    """Alerted keys first (in order of their first alert), then topics by volume, then watched tickers."""
    alerted = list(dict.fromkeys((s.scope, s.key) for s in data.model_spans))
    topics: list[tuple[str, str]] = []
    if not data.predictions.empty:
        volume = data.predictions.groupby("topic").size().sort_values(ascending=False, kind="stable")
        topics = [("topic", str(t)) for t in volume.index]
    tickers = [("ticker", t) for t in data.watch_tickers]
    return list(dict.fromkeys([*alerted, *topics, *tickers]))


def _buckets(data: ReportData, scope: str, key: str) -> pd.DataFrame:
    """Per bucket of ``published_at``: count per predicted sentiment and the total, for one key."""
    import pandas as pd

    p = data.predictions
    if p.empty:
        return pd.DataFrame(columns=["bucket_start", "negative", "neutral", "positive", "count"])
    if scope == "topic":
        rows = p[p["topic"] == key]
    else:
        rows = p[p["tickers"].fillna("").str.split(";").map(lambda ts: key in ts)]
    frame = rows.assign(bucket_start=rows["published_at"].dt.floor(data.bucket))
    counts = frame.pivot_table(index="bucket_start", columns="sentiment", values="id", aggfunc="count",
                               fill_value=0)
    for name in SENTIMENT_COLOURS:
        if name not in counts.columns:
            counts[name] = 0
    counts = counts[list(SENTIMENT_COLOURS)].astype("int64")
    counts["count"] = counts.sum(axis=1)
    return counts.reset_index()


def _stats(data: ReportData, scope: str, key: str) -> pd.DataFrame:
    s = data.stats
    return s[(s["scope"] == scope) & (s["key"] == key)] if not s.empty else s


def _key_traces(data: ReportData, scope: str, key: str, *, legend: bool) -> list[tuple[Any, str]]:
    """(trace, panel) of one key: panel ``share`` (statistic, thresholds), ``count`` (its right axis), ``volume``."""
    import plotly.graph_objects as go

    out: list[tuple[Any, str]] = []
    stats = _stats(data, scope, key)
    if not stats.empty:
        low = stats["count"] < data.min_count
        out.append((go.Scatter(x=stats["at"], y=stats["negative_share"].where(low), mode="lines",
                               name="negative share, < min_count items (cannot alert)", legendgroup="low",
                               showlegend=legend, line={"color": "#f3b3b3", "width": 1, "shape": "hv"}), "share"))
        for column, (name, colour, dash) in LINES.items():
            y = stats[column].where(~low) if column == "negative_share" else stats[column]
            out.append((go.Scatter(x=stats["at"], y=y, name=name, mode="lines", legendgroup=column,
                                   showlegend=legend, line={"color": colour, "dash": dash, "shape": "hv",
                                                            "width": 2 if column == "negative_share" else 1.4}),
                        "share"))
        out.append((go.Scatter(x=stats["at"], y=stats["count"], name="items in window (right axis)", mode="lines",
                               legendgroup="count", showlegend=legend,
                               line={"color": "#555", "width": 1, "shape": "hv"}, opacity=0.6), "count"))
        ends = [stats["at"].iloc[0], stats["at"].iloc[-1]]
        out.append((go.Scatter(x=ends, y=[data.min_count] * 2, name=f"min_count {data.min_count} (right axis)",
                               mode="lines", legendgroup="min_count", showlegend=legend,
                               line={"color": "#555", "width": 1, "dash": "dot"}), "count"))
    buckets = _buckets(data, scope, key)
    if not buckets.empty:
        shown = buckets["count"] >= data.min_bucket_count
        for name, colour in SENTIMENT_COLOURS.items():
            out.append((go.Bar(x=buckets["bucket_start"], y=buckets[name].where(shown), name=f"{name} per bucket",
                               marker_color=colour, legendgroup=f"bar-{name}", showlegend=legend), "volume"))
        out.append((go.Bar(x=buckets["bucket_start"], y=buckets["count"].where(~shown),
                           name=f"masked: < {data.min_bucket_count} items", marker_color=MASKED,
                           legendgroup="bar-masked", showlegend=legend), "volume"))
    return out


def _span_shapes(data: ReportData, scope: str, key: str) -> list[dict[str, Any]]:
    """Model alerts: red over both panels; true surges: a green strip along the top of the statistic."""
    shapes = []
    for s in data.model_spans:
        if (s.scope, s.key) == (scope, key):
            shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": _iso(s.start), "x1": _iso(s.end),
                           "y0": 0.0, "y1": 1.0, "fillcolor": "#d62728", "opacity": 0.16, "line": {"width": 0},
                           "layer": "below"})
    for s in data.truth_spans:
        if (s.scope, s.key) == (scope, key):
            shapes.append({"type": "rect", "xref": "x", "yref": "y domain", "x0": _iso(s.start), "x1": _iso(s.end),
                           "y0": 0.94, "y1": 1.0, "fillcolor": "#2ca02c", "opacity": 0.75, "line": {"width": 0}})
    return shapes


def _key_figure(data: ReportData, traces: list[tuple[Any, str]], title: str, height: int = 540) -> go.Figure:
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.06,
                        specs=[[{"secondary_y": True}], [{}]])
    for trace, panel in traces:
        fig.add_trace(trace, row=2 if panel == "volume" else 1, col=1, secondary_y=panel == "count")
    fig.update_layout(
        title={"text": title, "font": {"size": 14}}, height=height, barmode="stack", bargap=0.05,
        margin={"l": 60, "r": 60, "t": 60, "b": 40}, hovermode="x unified", template="plotly_white",
        legend={"orientation": "h", "y": -0.12},
    )
    fig.update_yaxes(title_text="negative share", range=[0, 1.02], row=1, col=1, secondary_y=False)
    fig.update_yaxes(title_text="items in window", rangemode="tozero", showgrid=False, row=1, col=1,
                     secondary_y=True)
    fig.update_yaxes(title_text=f"items per {data.bucket}", row=2, col=1)
    return fig


def _title(data: ReportData, scope: str, key: str) -> str:
    model = sum(1 for s in data.model_spans if (s.scope, s.key) == (scope, key))
    truth = sum(1 for s in data.truth_spans if (s.scope, s.key) == (scope, key))
    return (f"{scope} <b>{html.escape(key)}</b>: {model} model alert(s) (red), {truth} true surge(s) from the labels "
            "(green strip) - negative share with its baseline and raise/clear thresholds")


def _time_range(data: ReportData) -> tuple[float, float]:
    """First and last ``published_at`` of the feed (Unix seconds)."""
    p = data.predictions
    if p.empty:
        return float("-inf"), float("inf")
    return float(p["published_at"].min().timestamp()), float(p["published_at"].max().timestamp())


def alert_figures(data: ReportData) -> list[go.Figure]:
    """One figure per alerted key (model alert or true surge)."""
    keys = list(dict.fromkeys((s.scope, s.key) for s in [*data.model_spans, *data.truth_spans]))
    figures = []
    for scope, key in keys:
        fig = _key_figure(data, _key_traces(data, scope, key, legend=True), _title(data, scope, key))
        fig.update_layout(shapes=[*fig.layout.shapes, *_span_shapes(data, scope, key)])
        mine = [s for s in [*data.model_spans, *data.truth_spans] if (s.scope, s.key) == (scope, key)]
        first, last = _time_range(data)
        fig.update_xaxes(range=[_iso(max(first, min(s.start for s in mine) - ZOOM_PAD_S)),
                                _iso(min(last, max(s.end for s in mine) + ZOOM_PAD_S))])
        figures.append(fig)
    return figures


def explorer_figure(data: ReportData) -> go.Figure:
    """Every key's traces in one figure; a menu shows one key at a time (with its spans)."""
    keys = _keys(data)
    all_traces: list[tuple[Any, str]] = []
    owner: list[int] = []
    for n, (scope, key) in enumerate(keys):
        traces = _key_traces(data, scope, key, legend=True)
        all_traces.extend(traces)
        owner.extend([n] * len(traces))
    fig = _key_figure(data, all_traces, _title(data, *keys[0]) if keys else "no predictions", height=600)
    base_shapes = list(fig.layout.shapes)
    buttons = []
    for n, (scope, key) in enumerate(keys):
        visible = [o == n for o in owner]
        buttons.append({"label": f"{scope}: {key}", "method": "update",
                        "args": [{"visible": visible},
                                 {"shapes": [*base_shapes, *_span_shapes(data, scope, key)],
                                  "title.text": _title(data, scope, key)}]})
    for trace, o in zip(fig.data, owner, strict=True):
        trace.visible = o == 0
    if keys:
        fig.update_layout(shapes=[*base_shapes, *_span_shapes(data, *keys[0])],
                          updatemenus=[{"buttons": buttons, "direction": "down", "x": 0.0, "xanchor": "left",
                                        "y": 1.13, "yanchor": "top", "showactive": True}])
        fig.update_layout(margin={"t": 110})
    return fig


def prequential_figure(data: ReportData, window: int = 100) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    labels = data.labels
    fig.update_layout(title={"text": "prequential accuracy (rolling) with drift, training runs and promotions",
                             "font": {"size": 14}}, height=430, template="plotly_white",
                      yaxis={"title": "accuracy", "range": [-0.02, 1.02]}, xaxis={"title": "label visible at (UTC)"},
                      legend={"orientation": "h", "y": -0.2}, margin={"l": 60, "r": 30, "t": 50, "b": 40})
    if labels.empty:
        fig.add_annotation(text="the feed has no labels: no prequential accuracy", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
        return fig
    for head, rows in labels.groupby("head", sort=True):
        w = max(1, min(window, len(rows) // 5 or 1))
        rolling = rows["correct"].astype(float).rolling(w, min_periods=max(1, w // 4)).mean()
        fig.add_trace(go.Scatter(x=rows["at"], y=rolling, name=f"{head} (rolling {w} labels)", mode="lines"))
    marks: dict[str, tuple[str, str, list[Any]]] = {}
    styles = {"drift": ("#ff7f0e", "dot"), "promoted": ("#2ca02c", "solid"), "rejected": ("#7f7f7f", "dash"),
              "failed": ("#d62728", "dash"), "model_swap": ("#1f77b4", "dashdot")}
    for e in data.events:
        kind = e.get("outcome") if e.get("type") == "training" else e.get("type")
        if kind not in styles:
            continue
        name = {"drift": f"drift ({e.get('signal')})", "model_swap": "promoted model serves (swap)"}.get(
            str(kind), f"training run: start and finish, {kind}")
        colour, dash = styles[str(kind)]
        if kind == "drift":
            colour = DRIFT_COLOURS.get(str(e.get("signal")), colour)
        marks.setdefault(name, (colour, dash, []))[2].extend([e["at"], e["at"], None])
    for name, (colour, dash, xs) in marks.items():
        ys = [v for _ in range(len(xs) // 3) for v in (0.0, 1.0, None)]
        fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines", line={"color": colour, "dash": dash,
                                                                            "width": 1.5}))
    return fig


# --- tables ----------------------------------------------------------------------------------------
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
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        value = json.dumps(value, default=str)
    text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return text if len(text) <= 160 else text[:157] + "..."


def summary_tables(summary: Mapping[str, Any]) -> str:
    """The summary as a few complete tables (nothing nested is dropped)."""
    feed = [{"figure": k, "value": summary.get(k)} for k in
            ("path", "feeds", "items", "labels", "first_published_at", "last_published_at", "batches", "batching",
             "seed", "bucket", "model_versions")]
    accuracy = [{"head": h, **v} for h, v in summary.get("accuracy", {}).items()]
    learning = dict(summary.get("learning", {}))
    runs = learning.pop("training_runs", {}) or {}
    learn_rows = [{"figure": k, "value": v} for k, v in learning.items()]
    learn_rows += [{"figure": f"training runs: {k}", "value": v} for k, v in sorted(runs.items())]
    alerts = summary.get("alerts", {})
    by_scope = [{"scope": s, **v} for s, v in alerts.get("by_scope", {}).items()]
    quality = summary.get("alert_quality", {})
    q_rows = [{"scope": s, **v} for s, v in quality.get("scores", {}).items()]
    truth = quality.get("truth", {})
    timing = [{"figure": k, "value": v} for k, v in summary.get("timing", {}).items()]
    return "".join([
        "<h3>Feed</h3>", _table(feed, ["figure", "value"]),
        "<h3>Accuracy per head (prequential: every prediction made before its label was known)</h3>",
        _table(accuracy, ["head", "labels", "accuracy"]),
        "<h3>Learning: drift, training runs by outcome</h3>", _table(learn_rows, ["figure", "value"]),
        "<h3>Alerts by scope</h3>", _table(by_scope, ["scope", "raised", "cleared"]),
        "<h3>Alert precision and recall against the labelled surges (ground truth)</h3>",
        _table(q_rows, ["scope", "alerts", "true_surges", "right", "caught", "precision", "recall",
                        "median_delay_s"]),
        f"<p>Ground truth: the same surge definition on the labels; count thresholds scaled by the labelled "
        f"share {html.escape(_short(truth.get('coverage')))} (min_count {html.escape(_short(truth.get('min_count')))}, "
        f"min_baseline_count {html.escape(_short(truth.get('min_baseline_count')))}). See docs/replay.md.</p>",
        "<h3>Timing</h3>", _table(timing, ["figure", "value"]),
    ])


# --- the page --------------------------------------------------------------------------------------
def _div(fig: go.Figure, div_id: str) -> str:
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})
    return f'<div class="plot" data-figure="{div_id}">{body}</div>'


def _iso(at: float) -> str:
    from monitor.replay.learning import iso

    return iso(at)


def write_report(path: Path, data: ReportData) -> Path:
    """Write the self-contained HTML report."""
    from plotly.offline import get_plotlyjs

    sections = []
    alert_figs = alert_figures(data)
    if alert_figs:
        parts = "".join(_div(fig, f"plot-alert-{n}") for n, fig in enumerate(alert_figs))
        sections.append(f'<section id="alert-figures"><h2>Alerted keys: the statistic behind each alert</h2>'
                        f"{parts}</section>")
    else:
        sections.append('<section id="alert-figures"><h2>Alerted keys</h2><p>no alert was raised and the labels '
                        "show no surge</p></section>")
    sections.append(f'<section id="explorer"><h2>{html.escape(FIGURES["explorer"])}</h2>'
                    f'{_div(explorer_figure(data), "plot-explorer")}</section>')
    sections.append(f'<section id="prequential"><h2>{html.escape(FIGURES["prequential"])}</h2>'
                    f'{_div(prequential_figure(data), "plot-prequential")}</section>')
    learning = [{**e, "details": {k: v for k, v in e.items() if k not in ("type", "at", "at_s")}} for e in data.events]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>monitor replay report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}.plot{{margin:1em 0 2em 0}}
table{{border-collapse:collapse;font-size:0.85em}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}</style>
<script>{get_plotlyjs()}</script>
</head><body>
<h1>monitor replay report</h1>
<section id="summary"><h2>Summary</h2>{summary_tables(data.summary)}</section>
{"".join(sections)}
<section id="alerts"><h2>Alerts</h2>
{_table(list(data.alerts), ["at", "state", "scope", "key", "negative_share", "baseline_share", "raise_threshold",
                            "clear_threshold", "window_count", "cleared_by", "raised_at", "model_version"])}
</section>
<section id="events"><h2>Learning events</h2>{_table(learning, ["at", "type", "details"])}</section>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
