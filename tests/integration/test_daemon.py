"""The daemon against the real broker: results, dead letters, alerts, metrics, crash-safe restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kafka_io import KeywordScorer, consume, item, produce
from prometheus_client import CollectorRegistry

from monitor.app import Monitor
from monitor.broker import find_free_port
from monitor.config import MonitorConfig, load_config
from monitor.metrics import Metrics, serve

pytestmark = pytest.mark.integration


def make_config(bootstrap: str, registry: Path, topics: dict[str, str], **sections: dict) -> MonitorConfig:
    raw = {
        "kafka": {"bootstrap_servers": bootstrap, "input_topics": [topics["news"]], "output_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "alerts_topic": topics["alerts"],
                  "group_id": f"g-{topics['news']}", "create_topics": False},
        "batch": {"max_batch": 32, "max_wait_ms": 100, "max_text_chars": 500},
        "model": {"path": str(registry), "device": "cpu"},
        "metrics": {"port": 0},
        "logging": {"summary_interval_s": 1.0},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return load_config(None, env={}) if not raw else _from_dict(raw)


def _from_dict(raw: dict) -> MonitorConfig:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(raw, handle)
    try:
        return load_config(handle.name, env={})
    finally:
        os.unlink(handle.name)


@pytest.fixture
def topics(kafka_topic_factory: Callable[..., str]) -> dict[str, str]:
    return {name: kafka_topic_factory(name) for name in ("news", "out", "dlq", "alerts")}


@dataclass
class Running:
    monitor: Monitor
    thread: threading.Thread

    def stop(self) -> None:
        self.monitor.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the monitor did not stop within 30 s"


@pytest.fixture
def start_monitor() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(config: MonitorConfig, **kwargs: object) -> Running:
        monitor = Monitor(config, metrics=Metrics(CollectorRegistry()), **kwargs)  # type: ignore[arg-type]
        thread = threading.Thread(target=monitor.run, daemon=True)
        thread.start()
        running = Running(monitor, thread)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


def test_every_message_gets_one_enriched_result(kafka_broker, tiny_registry, topics, start_monitor) -> None:
    config = make_config(kafka_broker.bootstrap, tiny_registry, topics)
    n = 150
    produce(kafka_broker.bootstrap, topics["news"], [item(i) for i in range(n)])
    running = start_monitor(config)
    records = consume(kafka_broker.bootstrap, topics["out"], n)
    running.stop()
    assert len(records) == n
    results = [json.loads(r.value) for r in records]
    assert {r["id"] for r in results} == {f"it-{i:05d}" for i in range(n)}
    assert all(r.key == r_json["id"].encode() for r, r_json in zip(records, results, strict=True))
    first = results[0]
    assert first["model_version"] == "v-tiny-1"
    assert first["topic"] in first["topic_probs"] and len(first["topic_probs"]) == 20
    assert set(first["sentiment_probs"]) == {"negative", "neutral", "positive"}
    assert abs(sum(first["sentiment_probs"].values()) - 1.0) < 1e-3
    assert 0.0 < first["confidence"] <= 1.0 and first["latency_ms"] >= 0.0
    assert first["tickers"] == ["ABC"] and first["source"] == "test-wire"


POISON: Sequence[tuple[bytes, str]] = (
    (b"\xff\xfe\xfa", "invalid_utf8"),
    (b"{not json", "invalid_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (json.dumps({"id": "p4", "source": "x", "published_at": "2026-01-01T00:00:00Z"}).encode(), "missing_field"),
    (json.dumps(item(9001, text="   ")).encode(), "empty_text"),
    (json.dumps(item(9002, text=123)).encode(), "wrong_type"),
    (json.dumps(item(9003, text="y" * 501)).encode(), "oversize"),
    (json.dumps(item(9004, published_at="last tuesday")).encode(), "bad_timestamp"),
)


def test_poison_messages_go_to_the_dead_letter_topic_while_good_ones_flow(
    kafka_broker, tiny_registry, topics, start_monitor
) -> None:
    config = make_config(kafka_broker.bootstrap, tiny_registry, topics)
    good = [json.dumps(item(i)).encode() for i in range(40)]
    mixed: list[bytes] = []
    for i, g in enumerate(good):
        mixed.append(g)
        if i % 5 == 0:
            mixed.append(POISON[(i // 5) % len(POISON)][0])
    produce(kafka_broker.bootstrap, topics["news"], mixed)
    running = start_monitor(config)
    out = consume(kafka_broker.bootstrap, topics["out"], len(good))
    dead = consume(kafka_broker.bootstrap, topics["dlq"], len(POISON))
    metrics = running.monitor.metrics
    running.stop()
    assert {json.loads(r.value)["id"] for r in out} == {f"it-{i:05d}" for i in range(40)}
    assert len(dead) == len(POISON)
    by_value = {r.value: dict((k, v.decode()) for k, v in r.headers) for r in dead}
    for payload, reason in POISON:
        headers = by_value[payload]  # the original bytes, unchanged
        assert headers["dlq.reason"] == reason
        assert headers["dlq.topic"] == topics["news"]
        assert int(headers["dlq.offset"]) >= 0 and headers["dlq.detail"]
        assert metrics.dead_lettered.labels(reason=reason)._value.get() == 1


def test_scripted_negative_surge_raises_exactly_one_alert_and_it_clears(
    kafka_broker, tiny_registry, topics, start_monitor
) -> None:
    config = make_config(kafka_broker.bootstrap, tiny_registry, topics,
                         alerts={"window_seconds": 600, "baseline_seconds": 3600, "min_count": 10,
                                 "min_baseline_count": 20, "cooldown_seconds": 600})
    messages = []
    at = 1_772_442_000  # 2026-03-02T09:00:00Z; one item every 10 s of event time
    # an hour at 10 % negative (the baseline), 15 minutes all negative, half an hour calm again
    for seconds, negative_every in ((3600, 10), (900, 1), (1800, 10)):
        for k in range(seconds // 10):
            text = "Oil prices plunge" if k % negative_every == 0 else "Oil output steady"
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
            messages.append(item(len(messages), text=text, published_at=stamp))
            at += 10
    produce(kafka_broker.bootstrap, topics["news"], messages)
    running = start_monitor(config, scorer=KeywordScorer())
    consume(kafka_broker.bootstrap, topics["out"], len(messages))
    alerts = [json.loads(r.value) for r in consume(kafka_broker.bootstrap, topics["alerts"], 2, timeout_s=10)]
    metrics = running.monitor.metrics
    running.stop()
    assert [a["state"] for a in alerts] == ["raised", "cleared"]
    assert alerts[0]["scope"] == "topic" and alerts[0]["key"] == "Energy | Oil"
    assert alerts[0]["alert_id"] == alerts[1]["alert_id"]
    assert metrics.alerts.labels(scope="topic", key="Energy | Oil")._value.get() == 1
    assert metrics.alerts_active.labels(scope="topic", key="Energy | Oil")._value.get() == 0


def test_metrics_endpoint_serves_the_documented_series(kafka_broker, tiny_registry, topics, start_monitor) -> None:
    config = make_config(kafka_broker.bootstrap, tiny_registry, topics)
    produce(kafka_broker.bootstrap, topics["news"], [item(i) for i in range(30)] + [b"{broken"])
    running = start_monitor(config)
    consume(kafka_broker.bootstrap, topics["out"], 30)
    registry = running.monitor.metrics  # the instruments live on a fresh registry: serve that one
    port = find_free_port()
    serve("127.0.0.1", port, registry.registry)
    time.sleep(2.5)  # let the loop record lag
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    running.stop()
    for series in (
        f'monitor_messages_consumed_total{{topic="{topics["news"]}"}} 31.0',
        "monitor_messages_published_total 30.0",
        'monitor_messages_dead_lettered_total{reason="invalid_json"} 1.0',
        "monitor_batch_size_messages_bucket",
        'monitor_stage_latency_seconds_bucket{le="0.001",stage="decode"}',
        'monitor_stage_latency_seconds_count{stage="infer"}',
        'monitor_stage_latency_seconds_count{stage="publish"}',
        "monitor_predictions_total{",
        'monitor_sentiment_index{topic="',
        'monitor_model_info{parent="",version="v-tiny-1"} 1.0',
        f'monitor_consumer_lag_messages{{partition="0",topic="{topics["news"]}"}} 0.0',
        "monitor_prediction_confidence_bucket",
    ):
        assert series in body, f"{series!r} missing from /metrics"


def test_sigterm_mid_stream_then_restart_loses_nothing(kafka_broker, tiny_registry, topics, tmp_path: Path) -> None:
    raw = {
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "input_topics": [topics["news"]],
                  "output_topic": topics["out"], "dead_letter_topic": topics["dlq"], "alerts_topic": topics["alerts"],
                  "group_id": f"g-{topics['news']}", "create_topics": False},
        "batch": {"max_batch": 16, "max_wait_ms": 50},
        "model": {"path": str(tiny_registry), "device": "cpu", "threads": 1},
        "metrics": {"port": 0},
    }
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    n = 600
    produce(kafka_broker.bootstrap, topics["news"], [item(i) for i in range(n)])
    command = [sys.executable, "-m", "monitor.cli", "run", "--config", str(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(consume(kafka_broker.bootstrap, topics["out"], 50, 2)) < 50:
        pass
    first.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    out, _ = first.communicate(timeout=30)
    assert first.returncode == 0, out
    assert time.monotonic() - stopped < 30
    assert "monitor stopped" in out
    partial = {json.loads(r.value)["id"] for r in consume(kafka_broker.bootstrap, topics["out"], n, 3)}
    assert 0 < len(partial) < n, "SIGTERM should land mid-stream"
    second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wanted = {f"it-{i:05d}" for i in range(n)}
    ids: set[str] = set()
    try:
        deadline = time.monotonic() + 120
        while ids != wanted and time.monotonic() < deadline:
            ids = {json.loads(r.value)["id"] for r in consume(kafka_broker.bootstrap, topics["out"], n * 2, 3)}
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
    assert ids == wanted  # duplicates allowed, losses not


def test_daemon_creates_missing_topics_once(kafka_broker) -> None:
    import uuid

    from kafka import KafkaConsumer

    from monitor.stream.admin import ensure_topics

    config = load_config(None, env={"MONITOR__KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap})
    names = [f"auto-{uuid.uuid4().hex[:8]}", f"auto-{uuid.uuid4().hex[:8]}"]
    assert ensure_topics(config.kafka, names, partitions=3) == names
    assert ensure_topics(config.kafka, names, partitions=3) == []  # idempotent: a second instance is fine
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    assert consumer.partitions_for_topic(names[0]) == {0, 1, 2}
    consumer.close()


def test_created_topics_take_the_brokers_replication_factor_unless_configured(kafka_broker) -> None:
    import uuid

    from monitor.config import ConfigError
    from monitor.stream.admin import ensure_topics

    config = load_config(None, env={"MONITOR__KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap})
    assert config.kafka.replication_factor is None
    name = f"rf-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(config.kafka, [name], partitions=1, replication=config.kafka.replication_factor) == [name]
    # A single broker cannot hold 3 replicas: the configured factor reaches CreateTopics as it is.
    with pytest.raises(ConfigError, match="InvalidReplicationFactor"):
        ensure_topics(config.kafka, [f"rf-{uuid.uuid4().hex[:8]}"], partitions=1, replication=3)
