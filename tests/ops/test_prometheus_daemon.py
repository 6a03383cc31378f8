"""A real Prometheus scraping a running monitor daemon that reads from the real Kafka broker.

The daemon classifies with a rule scorer ('plunge' -> negative, else neutral; every item is
Energy | Oil), so the test knows the sentiment index, message count and alerts it must see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka_io import KeywordScorer, consume, item, produce
from prometheus_client import CollectorRegistry

from monitor.app import Monitor
from monitor.config import load_config
from monitor.metrics import Metrics, serve

pytestmark = pytest.mark.integration


def test_prometheus_sees_what_the_daemon_was_fed(
    kafka_broker: Any, kafka_topic_factory: Callable[..., str], tiny_registry_path: Any,
    prometheus_server: Callable[[list[str]], str], promql: Any,
) -> None:
    news, out, dlq, alerts = (kafka_topic_factory(n) for n in ("news", "out", "dlq", "alerts"))
    env = {
        "MONITOR__KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap, "MONITOR__KAFKA__INPUT_TOPICS": news,
        "MONITOR__KAFKA__OUTPUT_TOPIC": out, "MONITOR__KAFKA__DEAD_LETTER_TOPIC": dlq,
        "MONITOR__KAFKA__ALERTS_TOPIC": alerts, "MONITOR__KAFKA__GROUP_ID": f"g-{news}",
        "MONITOR__KAFKA__CREATE_TOPICS": "false", "MONITOR__MODEL__PATH": str(tiny_registry_path),
        "MONITOR__METRICS__WINDOWS_SECONDS": "3600", "MONITOR__ALERTS__MIN_COUNT": "10",
    }
    config = load_config(None, env=env)
    # 45 minutes of event time, one item a minute: 30 calm (1 in 10 negative) then 15 all negative.
    messages = []
    at = 1_772_442_000
    for minute in range(45):
        text = "Oil prices plunge" if minute >= 30 or minute % 10 == 0 else "Oil output steady"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at + 60 * minute))
        messages.append(item(minute, text=text, published_at=stamp))
    negatives = sum("plunge" in m["text"] for m in messages)
    produce(kafka_broker.bootstrap, news, messages[:30])  # the calm half hour first, the surge later

    registry = CollectorRegistry()
    monitor = Monitor(config, metrics=Metrics(registry), scorer=KeywordScorer())  # type: ignore[arg-type]
    port = _free_port()
    serve("127.0.0.1", port, registry)
    api = promql(prometheus_server([f"127.0.0.1:{port}"]))
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        api.wait_for_value(f'monitor_messages_consumed_total{{topic="{news}"}}', 30)
        assert api.value('sum(monitor_alerts_raised_total) or vector(0)') == 0
        produce(kafka_broker.bootstrap, news, messages[30:])
        assert len(consume(kafka_broker.bootstrap, out, len(messages))) == len(messages)
        api.wait_for_value(f'monitor_messages_consumed_total{{topic="{news}"}}', len(messages))
        # The windows count items up to the event-time watermark, which trails the newest item by
        # alerts.watermark_outliers items (README "Sentiment index and alerts"): the last two wait.
        counted = messages[:len(messages) - config.alerts.watermark_outliers]
        expected_index = (0 - sum("plunge" in m["text"] for m in counted)) / len(counted)
        api.wait_for_value('monitor_sentiment_index{topic="Energy | Oil", window="3600s"}', expected_index)
        api.wait_for_value('monitor_alerts_raised_total{scope="topic", key="Energy | Oil"}', 1)
        assert api.value('monitor_alerts_active{scope="topic", key="Energy | Oil"}') == 1
        assert api.value('sum(monitor_predictions_total{sentiment="negative"})') == negatives
        # The message rate Prometheus derives: the 15 surge messages arrived within the last minute
        # (increase() extrapolates to the window's edges, so only its lower bound is exact).
        increase = api.value(f'sum(increase(monitor_messages_consumed_total{{topic="{news}"}}[1m]))')
        assert increase >= 15
        assert api.value(f'sum(rate(monitor_messages_consumed_total{{topic="{news}"}}[1m]))') > 0
    finally:
        monitor.stop()
        thread.join(timeout=30)


def _free_port() -> int:
    from monitor.broker import find_free_port

    return find_free_port()
