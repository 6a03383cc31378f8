"""A real Prometheus scraping a real exporter: the values it stores are the values the monitor set.

The exporter is ``monitor.metrics.Metrics`` on a fresh registry served by ``monitor.metrics.serve``;
Prometheus runs the project's scrape config and rules (1 s intervals, see conftest.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(prometheus_server: Callable[[list[str]], str], promql: Any, metrics_exporter: Any) -> Iterator[Any]:
    exporter = metrics_exporter()
    api = promql(prometheus_server([exporter.target]))
    api.wait_for('up{job="monitor"} == 1', bool)
    yield exporter.metrics, api


def test_sentiment_index_is_stored_as_set(setup: Any) -> None:
    metrics, api = setup
    metrics.sentiment_index.labels(topic="Earnings", window="900s").set(-0.42)
    metrics.sentiment_window_count.labels(topic="Earnings", window="900s").set(30)
    metrics.sentiment_index.labels(topic="Macro", window="900s").set(0.25)
    metrics.sentiment_window_count.labels(topic="Macro", window="900s").set(10)
    api.wait_for_value('monitor_sentiment_index{topic="Earnings", window="900s"}', -0.42)
    api.wait_for_value('monitor_sentiment_index{topic="Macro", window="900s"}', 0.25)
    # The dashboard's item-weighted combination over (here) one instance is the index itself.
    weighted = ('sum by (topic) (monitor_sentiment_index{window="900s"}'
                ' * monitor_sentiment_window_items{window="900s"})'
                ' / sum by (topic) (monitor_sentiment_window_items{window="900s"})')
    result = {r["metric"]["topic"]: float(r["value"][1]) for r in api.query(weighted)}
    assert result == pytest.approx({"Earnings": -0.42, "Macro": 0.25})


def test_alert_counter_and_active_gauge(setup: Any) -> None:
    metrics, api = setup
    metrics.alerts.labels(scope="topic", key="Energy | Oil").inc(3)
    metrics.alerts_active.labels(scope="topic", key="Energy | Oil").set(1)
    api.wait_for_value('monitor_alerts_raised_total{scope="topic", key="Energy | Oil"}', 3)
    assert api.value('monitor_alerts_active{scope="topic", key="Energy | Oil"}') == 1
    metrics.alerts.labels(scope="topic", key="Energy | Oil").inc(2)
    metrics.alerts_active.labels(scope="topic", key="Energy | Oil").set(0)
    api.wait_for_value('monitor_alerts_raised_total{scope="topic", key="Energy | Oil"}', 5)
    assert api.value('monitor_alerts_active{scope="topic", key="Energy | Oil"}') == 0


def test_consumed_counter_increment_is_exact(setup: Any) -> None:
    metrics, api = setup
    counter = metrics.consumed.labels(topic="comments")
    counter.inc(0)
    api.wait_for_value('monitor_messages_consumed_total{topic="comments"}', 0)
    counter.inc(250)
    api.wait_for_value('monitor_messages_consumed_total{topic="comments"}', 250)
    span = 'max_over_time(monitor_messages_consumed_total{topic="comments"}[1m])' \
           ' - min_over_time(monitor_messages_consumed_total{topic="comments"}[1m])'
    assert api.value(span) == 250


def test_message_rate_matches_the_rate_fed(setup: Any) -> None:
    """Feed about 200 messages/s for a few seconds; Prometheus' rate() agrees within 20%."""
    metrics, api = setup
    counter = metrics.consumed.labels(topic="news")
    log: list[tuple[float, float]] = []
    stop = threading.Event()

    def feed() -> None:
        total = 0.0
        while not stop.is_set():
            counter.inc(20)
            total += 20
            log.append((time.time(), total))
            time.sleep(0.1)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        time.sleep(5.5)
        window = 4.0
        result = api.query(f'sum by (topic) (rate(monitor_messages_consumed_total{{topic="news"}}[{window:.0f}s]))')
        now = time.time()
    finally:
        stop.set()
        thread.join()
    fed = [(t, n) for t, n in log if now - window <= t <= now]
    actual = (fed[-1][1] - fed[0][1]) / (fed[-1][0] - fed[0][0])
    assert len(result) == 1 and result[0]["metric"] == {"topic": "news"}
    measured = float(result[0]["value"][1])
    assert measured == pytest.approx(actual, rel=0.2), f"rate() {measured:.1f}/s, fed {actual:.1f}/s"


def test_rules_load_and_evaluate_on_real_data(setup: Any) -> None:
    """The project's rules evaluate without error on the exporter's series; the surge alert goes pending."""
    metrics, api = setup
    metrics.alerts_active.labels(scope="ticker", key="ACME").set(1)

    def evaluated(_: Any) -> bool:
        rules = [r for g in api.get("/api/v1/rules")["groups"] for r in g["rules"]]
        return bool(rules) and all(r["health"] != "unknown" for r in rules)

    api.wait_for("vector(1)", evaluated)
    groups = api.get("/api/v1/rules")["groups"]
    assert {g["name"] for g in groups} == {"monitor.sentiment", "monitor.stream", "monitor.learning"}
    bad = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert bad == []

    def surge_pending(_: Any) -> bool:
        alerts = api.get("/api/v1/alerts")["alerts"]
        return any(a["labels"].get("alertname") == "MonitorNegativeSentimentSurge"
                   and a["labels"].get("key") == "ACME" and a["state"] == "pending" for a in alerts)

    api.wait_for("vector(1)", surge_pending)
