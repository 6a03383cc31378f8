"""Alert quality and the replay report, on a scripted stream through the real pipeline (a text-reading
scorer stands in for the model), and the report rendered in headless Chromium (skipped without it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from monitor.config import AlertConfig, MetricsConfig, MonitorConfig
from monitor.replay import quality
from monitor.replay.engine import run_direct
from monitor.replay.feeds import events_of, parse_rows
from monitor.replay.runner import ReplayOptions, write_outputs
from monitor.replay.schedule import plan_batches

START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
TOPICS = ("Energy | Oil", "Fed | Central Banks", "Gold | Metals | Materials")


@dataclass(frozen=True)
class Scored:
    topic: str
    topic_probs: dict[str, float]
    sentiment: str
    sentiment_probs: dict[str, float]
    confidence: float


class TextScorer:
    """Reads ``topic#sentiment#...`` off the text: a model whose every prediction is known."""

    version = "text-v1"
    model = SimpleNamespace(topics=(), sentiments=())  # no label sets: the scripted feed has no labels inline

    def predict(self, texts: Sequence[str], sources: Sequence[str] | None = None) -> list[Scored]:
        out = []
        for text in texts:
            topic, sentiment, _ = text.split("#", 2)
            out.append(Scored(topic, {topic: 0.9}, sentiment, {sentiment: 0.9}, 0.9))
        return out


def scripted_rows(hours: int = 12) -> list[dict[str, Any]]:
    """An item a minute per topic; Energy (ticker NWE) turns negative from hour 6 to 7. Every second item is
    labelled with what the text says, except that the model also reads Gold as negative from hour 9 to
    9.5 while the labels say neutral: one false alarm."""
    rows = []
    for minute in range(hours * 60):
        for n, topic in enumerate(TOPICS):
            at = START + timedelta(minutes=minute, seconds=n * 20)
            truth = "negative" if (minute % 10 == 0) else ("positive" if minute % 3 else "neutral")
            if topic == TOPICS[0] and 360 <= minute < 420 and minute % 5:
                truth = "negative"
            said = truth
            if topic == TOPICS[2] and 540 <= minute < 570:
                said = "negative"
            i = len(rows)
            row: dict[str, Any] = {"id": f"i{i:05d}", "text": f"{topic}#{said}#{i}", "source": "wire",
                                   "published_at": at.isoformat().replace("+00:00", "Z"),
                                   "tickers": ["NWE"] if topic == TOPICS[0] else []}
            if i % 2 == 0:
                row.update(topic=topic, sentiment=truth, label_delay_s=300)
            rows.append(row)
    return rows


def scripted_config() -> MonitorConfig:
    return MonitorConfig(metrics=MetricsConfig(watch_tickers=("NWE", "ZZZ")),
                         alerts=AlertConfig(min_count=10, min_baseline_count=30, hold_seconds=1200,
                                            clear_seconds=600, cooldown_seconds=1800))


def run_scripted(out: Path, config: MonitorConfig | None = None) -> tuple[dict[str, Any], Any, list[Any]]:
    config = config or scripted_config()
    events = events_of(parse_rows(scripted_rows(), "scripted"))
    batches = plan_batches(events, max_batch=16, with_labels=False)
    result = run_direct(batches, config, TextScorer(), progress=False)
    out.mkdir(parents=True, exist_ok=True)
    labels = [e for e in events if e.kind == "label"]
    summary = write_outputs(out, result, labels, [], ReplayOptions(feeds=(), out=out, sweep=(("ratio", (2.0, 20.0)),)),
                            config)
    return summary, result, labels


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Any, list[Any]]:
    out = tmp_path_factory.mktemp("report")
    summary, result, labels = run_scripted(out)
    return out, summary, result, labels


# --- alert quality --------------------------------------------------------------------------------------
def test_the_surge_is_caught_and_the_false_alarm_is_counted(scripted: Any) -> None:
    _, summary, result, _ = scripted
    raised = sorted({(a.scope, a.key) for a in result.alerts if a.state == "raised"})
    assert raised == [("ticker", "NWE"), ("topic", "Energy | Oil"), ("topic", "Gold | Metals | Materials")]
    scores = summary["alert_quality"]["scores"]
    assert scores["topic"] == {"alerts": 2, "true_surges": 1, "right": 1, "caught": 1, "precision": 0.5,
                               "recall": 1.0, "median_delay_s": scores["topic"]["median_delay_s"]}
    assert scores["ticker"]["precision"] == 1.0 and scores["ticker"]["recall"] == 1.0
    assert scores["all"]["alerts"] == 3 and scores["all"]["true_surges"] == 2
    # the labels cover half the items: the truth needs half the count
    assert summary["alert_quality"]["truth"] == {"coverage": 0.5, "min_count": 5, "min_baseline_count": 15,
                                                 "raised": 2}
    assert abs(scores["topic"]["median_delay_s"]) < 900  # both detectors see the same surge within a window


def test_recomputed_alerts_are_the_pipelines_and_the_sweep_starts_from_them(scripted: Any) -> None:
    out, summary, result, _ = scripted
    config = scripted_config()
    again = quality.model_alerts(result.predictions, config.alerts, config.metrics.watch_tickers)
    assert [a.to_json() for a in again] == [a.to_json() for a in result.alerts]
    rows = summary["sweep"]
    assert [(r["ratio"], r["scope"]) for r in rows] == [(2.0, "topic"), (2.0, "ticker"), (2.0, "all"),
                                                       (20.0, "topic"), (20.0, "ticker"), (20.0, "all")]
    assert {k: v for k, v in rows[0].items() if k not in ("ratio", "scope")} == summary["alert_quality"]["scores"][
        "topic"]
    strict = [r for r in rows if r["ratio"] == 20.0]
    assert sum(r["alerts"] for r in strict if r["scope"] != "all") < summary["alert_quality"]["scores"]["all"][
        "alerts"]
    assert (out / "sweep.csv").read_text().splitlines()[0].startswith("ratio,scope,alerts,true_surges")


def test_hold_time_is_never_broken_in_a_replay(scripted: Any) -> None:
    _, _, result, _ = scripted
    spans = quality.alert_spans(result.alerts, end=float("inf"))
    assert len(spans) == 3 and all(s.end < float("inf") for s in spans)  # all cleared within the feed
    assert all(s.end - s.start >= scripted_config().alerts.hold_seconds for s in spans)


def test_sweep_grid_parsing() -> None:
    assert quality.parse_grid(["ratio=1.5,2", "alerts.min_count=10"]) == {"ratio": (1.5, 2.0), "min_count": (10.0,)}
    with pytest.raises(ValueError, match="KEY=V1,V2"):
        quality.parse_grid(["ratio"])
    with pytest.raises(ValueError, match="KEY=V1,V2"):
        quality.parse_grid(["nope=1"])
    with pytest.raises(ValueError, match="must be >= 1"):
        quality.settings(AlertConfig(), {"ratio": (0.5,)})
    assert [c.min_count for c in quality.settings(AlertConfig(), {"min_count": (5.0, 7.0)})] == [5, 7]


def test_precision_recall_and_delay_of_spans() -> None:
    s = quality.Span
    model = [s("topic", "A", 100, 200, "m1"), s("topic", "A", 1000, 1100, "m2"), s("ticker", "X", 0, 50, "m3")]
    truth = [s("topic", "A", 150, 400, "t1"), s("topic", "B", 0, 10, "t2"), s("ticker", "X", 40, 90, "t3")]
    scores = quality.score(model, truth)
    assert scores["topic"] == {"alerts": 2, "true_surges": 2, "right": 1, "caught": 1, "precision": 0.5,
                               "recall": 0.5, "median_delay_s": -50.0}
    assert scores["ticker"]["median_delay_s"] == -40.0
    assert scores["all"]["precision"] == round(2 / 3, 4) and scores["all"]["recall"] == round(2 / 3, 4)
    assert quality.score([], [])["all"]["precision"] is None
    assert quality.score(model, [], labelled=False)["topic"]["precision"] is None  # no labels: no truth
    assert quality.score(model, [])["topic"]["precision"] == 0.0  # labels, and they show no surge


# --- the report ---------------------------------------------------------------------------------------------
def test_report_explains_every_alert_and_needs_no_network(scripted: Any) -> None:
    out, summary, _, _ = scripted
    page = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # plotly.js inline, nothing fetched
    figures = re.findall(r'<div class="plot" data-figure="([^"]+)">', page)
    keys = {(a["scope"], a["key"]) for a in summary["alert_quality"]["scores"] and
            [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]}
    keys |= {(a["scope"], a["key"]) for a in map(json.loads, (out / "truth_alerts.jsonl").read_text().splitlines())}
    assert figures == [f"plot-alert-{n}" for n in range(len(keys))] + ["plot-explorer", "plot-prequential"]
    for scope, key in keys:
        assert f"{scope} \\u003cb\\u003e{key}\\u003c" in page  # its figure's title (JSON-escaped)
    for trace in ("negative share (window)", "baseline", "raise threshold", "clear threshold", "items in window",
                  "masked: \\u003c 10 items"):
        assert trace in page, trace
    explorer = page.split('data-figure="plot-explorer"', 1)[1]
    for label in ("topic: Energy | Oil", "topic: Fed | Central Banks", "topic: Gold | Metals | Materials",
                  "ticker: NWE", "ticker: ZZZ"):
        assert label in explorer, label  # every topic and every watch-listed ticker in the menu
    for heading in ("Accuracy per head", "training runs by outcome", "Alerts by scope", "Alert precision and recall"):
        assert heading in page
    stats = (out / "alert_stats.csv").read_text().splitlines()
    assert stats[0] == "at,scope,key,count,negative_share,baseline,raise_threshold,clear_threshold,active"


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def render(page: Path, shot: Path) -> tuple[str, Any]:
    """The DOM after scripts ran, and the screenshot, of ``page`` in headless Chromium."""
    from PIL import Image

    args = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--virtual-time-budget=20000", "--window-size=1300,4000"]
    dom = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    subprocess.run([*args, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    return dom, Image.open(shot).convert("RGB")


def problems(dom: str, image: Any, figures: int) -> list[str]:
    """What is wrong with a rendered report (empty: it rendered)."""
    found = []
    rendered = dom.count('class="main-svg"')
    if rendered < figures:  # plotly draws two main-svg layers per figure
        found.append(f"{rendered} plotly svg layers for {figures} figures: plotly.js did not run")
    if dom.count('class="xtick"') + dom.count("class='xtick'") == 0 and "xtick" not in dom:
        found.append("no axis ticks drawn")
    import numpy as np

    pixels = np.asarray(image.resize((image.width // 4, image.height // 4))).reshape(-1, 3).astype(int)
    ink = float((pixels.min(axis=1) < 235).mean())
    if ink < 0.04:
        found.append(f"the page is nearly blank ({ink:.1%} of it drawn)")
    r, g, b = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    if not ((r > 180) & (g < 110) & (b < 110)).any():
        found.append("no red at all: no negative share line or alert shading")
    return found


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(scripted: Any, tmp_path: Path) -> None:
    out, _, _, _ = scripted
    page = out / "report.html"
    figures = page.read_text(encoding="utf-8").count('<div class="plot"')
    dom, image = render(page, tmp_path / "report.png")
    assert problems(dom, image, figures) == []
    # The check itself: a page whose plotly.js is missing (broken), or a blank page, fails it.
    broken = tmp_path / "broken.html"
    text = page.read_text(encoding="utf-8")
    start = text.index("<script>")
    broken.write_text(text[:start] + text[text.index("</script>", start) + len("</script>"):], encoding="utf-8")
    assert problems(*render(broken, tmp_path / "broken.png"), figures)
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    assert len(problems(*render(blank, tmp_path / "blank.png"), figures)) >= 2


def test_sample_config_replay_summary_lists_scopes(tmp_path: Path) -> None:
    config = scripted_config()
    quiet = replace(config, alerts=replace(config.alerts, ratio=50.0))
    summary, result, _ = run_scripted(tmp_path, quiet)
    assert result.alerts == [] and summary["alerts"]["by_scope"] == {"topic": {"raised": 0, "cleared": 0},
                                                                     "ticker": {"raised": 0, "cleared": 0}}
    assert summary["alert_quality"]["scores"]["all"]["precision"] is None
    assert "no alert was raised" in (tmp_path / "report.html").read_text(encoding="utf-8")
