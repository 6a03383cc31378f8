"""A label delayed across a restart is joined: the predictions awaiting labels survive in SQLite.

Daemon A classifies items and stops; daemon B (a new process state: new learner, new metrics)
starts on the same learner state and receives the labels for A's items: every one is joined,
none is counted ``unknown``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka_io import consume, item, produce
from prometheus_client import CollectorRegistry

from monitor.app import Monitor
from monitor.config import MonitorConfig, load_config
from monitor.learn.online import build_learner
from monitor.metrics import Metrics

pytestmark = pytest.mark.integration


def start(config: MonitorConfig) -> tuple[Monitor, Metrics, threading.Thread]:
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(config, metrics=metrics, learner=build_learner(config, metrics))
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    return monitor, metrics, thread


def test_a_label_delayed_across_a_restart_is_joined(
    kafka_broker: Any, kafka_topic_factory: Callable[..., str], tiny_registry: Path, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    t = {name: kafka_topic_factory(name) for name in ("news", "out", "dlq", "alerts", "labels", "requests")}
    settings = {"min_new_labels": 100_000, "freeze_layers": 0, "state_dir": str(tmp_path / "learner")}
    config = load_config(None, env={
        "MONITOR__KAFKA__BOOTSTRAP_SERVERS": bootstrap, "MONITOR__KAFKA__INPUT_TOPICS": t["news"],
        "MONITOR__KAFKA__OUTPUT_TOPIC": t["out"], "MONITOR__KAFKA__DEAD_LETTER_TOPIC": t["dlq"],
        "MONITOR__KAFKA__ALERTS_TOPIC": t["alerts"], "MONITOR__KAFKA__LABELS_TOPIC": t["labels"],
        "MONITOR__KAFKA__LABEL_REQUESTS_TOPIC": t["requests"], "MONITOR__KAFKA__GROUP_ID": f"g-{t['news']}",
        "MONITOR__KAFKA__CREATE_TOPICS": "false", "MONITOR__BATCH__MAX_WAIT_MS": "100",
        "MONITOR__MODEL__PATH": str(tiny_registry), "MONITOR__MODEL__DEVICE": "cpu", "MONITOR__METRICS__PORT": "0",
        "MONITOR__LEARNING__ENABLED": "true", "MONITOR__LEARNING__SETTINGS": json.dumps(settings),
    })
    n = 40
    monitor, _, thread = start(config)
    try:
        produce(bootstrap, t["news"], [item(i) for i in range(n)])
        assert len(consume(bootstrap, t["out"], n)) == n
    finally:
        monitor.stop()
        thread.join(timeout=60)
    assert (tmp_path / "learner" / "label-joins.sqlite").is_file()

    monitor, metrics, thread = start(config)  # the restart: nothing of A's memory is left
    try:
        produce(bootstrap, t["labels"], [{"id": item(i)["id"], "sentiment": "negative"} for i in range(n)]
                + [{"id": "never-classified", "sentiment": "negative"}])
        joined = metrics.labels_joined.labels(outcome="joined")
        deadline = time.monotonic() + 60
        while joined._value.get() < n and time.monotonic() < deadline:
            time.sleep(0.2)
        assert joined._value.get() == n
        time.sleep(1.0)
        assert metrics.labels_joined.labels(outcome="unknown")._value.get() == 1  # only the id never seen
        assert metrics.labels_joined.labels(outcome="late")._value.get() == 0
    finally:
        monitor.stop()
        thread.join(timeout=60)
