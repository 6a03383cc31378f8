"""The Grafana dashboard: its structure, and every query run against a real Prometheus.

The integration test serves a fresh ``Metrics`` registry, populated through every instrument
with label values from the real label sets, lets a real Prometheus scrape it, and runs every
panel query, variable query and annotation query of deploy/grafana/dashboards/monitor.json
through the HTTP API: each must succeed, name only metrics the monitor exports, and return
finite values.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import KafkaConfig, MetricsConfig
from monitor.labels import DEFAULT_TOPICS, SENTIMENTS
from monitor.metrics import DEAD_LETTER_REASONS, STAGES, Metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "monitor.json"
METRIC = re.compile(r"(?<![\w:])monitor_[a-z0-9_]+")
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")

# Values substituted for the dashboard variables when its queries run in the test.
VALUES = {"job": "monitor", "instance": ".*", "window": "900s",
          "__rate_interval": "30s", "__interval": "15s", "__range": "5m"}
TICKERS = ("AAPL", "TSLA")
DRIFT_SIGNALS = ("error_rate", "confidence")
OUTCOMES = ("promoted", "rejected", "failed")
JOIN_OUTCOMES = ("joined", "unknown", "late", "inline")
HEADS = ("topic", "sentiment")


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(where, expr) for every panel target and every Prometheus annotation."""
    out = [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in panels() for t in p["targets"]]
    out += [(f"annotation {a['name']!r}", a["expr"]) for a in dashboard()["annotations"]["list"] if "expr" in a]
    return out


def variable_queries() -> list[tuple[str, str, str]]:
    """(name, metric selector, label) of every ``label_values(selector, label)`` variable."""
    out = []
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
            assert m, f"variable {var['name']}: unsupported query {var['query']}"
            out.append((var["name"], m.group(1), m.group(2)))
    return out


def substitute(expr: str) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in VALUES, f"unknown variable ${name} in {expr!r}"
        return VALUES[name]

    return VARIABLE.sub(value, expr)


# --- structure (no server) -------------------------------------------------------------------------

def test_panel_ids_unique_and_layout_without_overlap() -> None:
    all_panels = dashboard()["panels"]
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in all_panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_every_query_uses_the_datasource_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    uses = [p["datasource"] for p in panels()]
    uses += [t["datasource"] for p in panels() for t in p["targets"]]
    uses += [a["datasource"] for a in dashboard()["annotations"]["list"] if "expr" in a]
    uses += [v["datasource"] for v in variables.values() if v["type"] == "query"]
    assert uses and all(u == {"type": "prometheus", "uid": "${datasource}"} for u in uses)
    for p in panels():
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_expected_panels_and_annotations_present() -> None:
    titles = {p["title"] for p in panels()}
    for title in ("Sentiment index per topic", "Messages consumed by input topic", "Predictions by topic and sentiment",
                  "Alerts raised", "Active alerts", "Prediction confidence", "Latency per stage", "Throughput",
                  "Consumer lag", "Dead letters by reason", "Model version", "Training runs", "Replay buffer size",
                  "Prequential accuracy"):
        assert title in titles
    names = {a["name"] for a in dashboard()["annotations"]["list"]}
    assert {"Drift detected", "Model promoted"} <= names


def test_every_instrument_has_a_panel(metric_families: dict[str, frozenset[str]]) -> None:
    used = {name for _, expr in queries() for name in METRIC.findall(expr)}
    missing = sorted(family for family, names in metric_families.items() if not names & used)
    assert missing == [], "instruments with no panel or annotation on the dashboard"


def test_provisioning_points_at_the_dashboards() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "${PROMETHEUS_URL}"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "monitor.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    compose = yaml.safe_load((ROOT / "deploy" / "docker" / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{provider['options']['path']}:ro" in mounts


# --- every query against a real Prometheus ------------------------------------------------------------

def populate(m: Metrics, round_: int) -> None:
    """Touch every instrument with label values from the real label sets; counters grow each round."""
    now = time.time()
    kafka, windows = KafkaConfig(), [f"{w}s" for w in MetricsConfig().windows_seconds]
    for topic in (*kafka.input_topics, kafka.labels_topic):
        m.consumed.labels(topic=topic).inc(100 * round_)
        for partition in ("0", "1"):
            m.consumer_lag.labels(topic=topic, partition=partition).set(10 * round_)
    m.published.inc(90 * round_)
    for reason in DEAD_LETTER_REASONS:
        m.dead_lettered.labels(reason=reason).inc(round_)
    for size in (1, 8, 64):
        m.batch_size.observe(size)
    for stage in STAGES:
        m.stage_latency.labels(stage=stage).observe(0.004 * round_)
    m.end_to_end_latency.observe(0.05)
    m.last_consumed.set(now)
    m.broker_unreachable_since.set(now - 60)
    m.broker_retries.labels(operation="flush").inc(round_)
    m.model_load_failures.inc()
    for i, topic in enumerate(DEFAULT_TOPICS):
        for sentiment in SENTIMENTS:
            m.predictions.labels(topic=topic, sentiment=sentiment).inc(round_)
        for window in windows:
            m.sentiment_index.labels(topic=topic, window=window).set(-0.5 + i / 20)
            m.sentiment_window_count.labels(topic=topic, window=window).set(10 + i)
    for ticker in TICKERS:
        for window in windows:
            m.ticker_sentiment_index.labels(ticker=ticker, window=window).set(0.1)
    for confidence in (0.35, 0.72, 0.97):
        m.confidence.observe(confidence)
    m.alerts.labels(scope="topic", key="Earnings").inc(round_)
    m.alerts.labels(scope="ticker", key="AAPL").inc(round_)
    m.alerts_active.labels(scope="topic", key="Earnings").set(1)
    m.alerts_active.labels(scope="ticker", key="AAPL").set(0)
    m.model_info.info({"version": f"v{round_}", "parent": "v0"})
    m.model_created.set(now - 86400)
    m.model_swaps.inc()
    for outcome in JOIN_OUTCOMES:
        m.labels_joined.labels(outcome=outcome).inc(round_)
    for signal in DRIFT_SIGNALS:
        m.drift_detections.labels(signal=signal).inc()
    m.label_requests.inc(round_)
    for outcome in OUTCOMES:
        m.training_runs.labels(outcome=outcome).inc()
    m.training_duration.observe(42.0)
    m.training_active.set(round_ % 2)
    m.replay_buffer_size.set(1000 * round_)
    m.shadow_labels.set(10 * round_)
    for head in HEADS:
        m.prequential_accuracy.labels(head=head).set(0.8)
    m.forgetting.set(0.01)
    m.last_promotion.set(now - 3600)


@pytest.fixture(scope="module")
def prom(prometheus_server: Callable[[list[str]], str], promql: Any, metrics_exporter: Any) -> Any:
    """A real Prometheus that has scraped a populated exporter twice (round 1, then round 2)."""
    exporter = metrics_exporter()
    api = promql(prometheus_server([exporter.target]))
    populate(exporter.metrics, 1)
    api.wait_for_value("monitor_messages_published_total", 90)
    populate(exporter.metrics, 2)  # grown counters in a later scrape: rates and increases > 0
    api.wait_for_value("monitor_messages_published_total", 270)
    return api


@pytest.mark.integration
def test_variable_queries_return_the_values_the_test_substitutes(prom: Any) -> None:
    for name, selector, label in variable_queries():
        values = prom.get(f"/api/v1/label/{label}/values", **{"match[]": substitute(selector)})
        assert values, f"variable {name}: no values for {selector}"
        if name in VALUES and VALUES[name] != ".*":
            assert VALUES[name] in values, f"variable {name}: {values}"


@pytest.mark.integration
@pytest.mark.parametrize(("where", "expr"), queries(), ids=[w for w, _ in queries()])
def test_query_runs_on_known_metrics_and_returns_finite_values(
    prom: Any, metric_names: frozenset[str], where: str, expr: str
) -> None:
    names = set(METRIC.findall(expr)) | set(re.findall(r"\b(up)\{", expr))  # up: Prometheus' own
    assert names, f"{where}: no metric found in {expr!r}"
    assert names <= metric_names | {"up"}, f"{where}: unknown metrics {sorted(names - metric_names)}"
    result = prom.query(substitute(expr))  # raises on a PromQL error
    assert result, f"{where}: no data for {substitute(expr)!r}"
    values = [float(r["value"][1]) for r in result]
    assert all(math.isfinite(v) for v in values), f"{where}: {result}"


@pytest.mark.integration
def test_scraped_metric_names_are_all_declared(prom: Any, metric_names: frozenset[str]) -> None:
    scraped = {r["metric"]["__name__"] for r in prom.query('count by (__name__) ({__name__=~"monitor_.*"})')}
    assert len(scraped) > 20
    assert scraped <= metric_names
