"""Continual learning in the running daemon, against the real broker.

``monitor.app.Monitor`` with the online learner, on a registry serving a tiny model trained on
regime A. Items and their labels go through the input and ``labels`` topics; when the stream moves
to regime B (new sentiment keywords), the drift must start a training run, the challenger must be
promoted into the registry, the daemon must hot-swap to it, and the results after the swap must
carry the new version and read regime B correctly.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import regime_model
from kafka_io import consume, produce
from prometheus_client import CollectorRegistry
from regime_model import item, label, rows

from monitor.app import Monitor
from monitor.config import load_config
from monitor.learn.online import build_learner
from monitor.metrics import Metrics
from monitor.registry import ModelRegistry

pytestmark = pytest.mark.integration

SETTINGS: dict[str, Any] = {
    "epochs": 12, "batch_size": 16, "lr_encoder": 1e-2, "lr_head": 3e-2, "freeze_layers": 0, "patience": 3,
    "freeze_embeddings": False, "distill_weight": 0.2, "replay_ratio": 2.0, "buffer_size": 400, "val_fraction": 0.15,
    "window_size": 240, "min_new_labels": 300, "cooldown_s": 0, "min_gate_examples": 10, "min_stratum_examples": 10,
    "max_forgetting": 0.05, "max_training_s": 60, "label_free_signals": ["confidence", "sentiment_mix"],
    "label_requests": 10, "accuracy_floor": 0.0, "retrain_every_labels": 0,
}


@pytest.fixture
def regime_a_registry(tmp_path: Path) -> Path:
    return regime_model.regime_a_registry(tmp_path)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_drift_in_the_stream_retrains_promotes_and_swaps(
    kafka_broker: Any, kafka_topic_factory: Callable[..., str], regime_a_registry: Path, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    t = {name: kafka_topic_factory(name) for name in ("news", "out", "dlq", "alerts", "labels", "requests")}
    env = {
        "MONITOR__KAFKA__BOOTSTRAP_SERVERS": bootstrap, "MONITOR__KAFKA__INPUT_TOPICS": t["news"],
        "MONITOR__KAFKA__OUTPUT_TOPIC": t["out"], "MONITOR__KAFKA__DEAD_LETTER_TOPIC": t["dlq"],
        "MONITOR__KAFKA__ALERTS_TOPIC": t["alerts"], "MONITOR__KAFKA__LABELS_TOPIC": t["labels"],
        "MONITOR__KAFKA__LABEL_REQUESTS_TOPIC": t["requests"], "MONITOR__KAFKA__GROUP_ID": f"g-{t['news']}",
        "MONITOR__KAFKA__CREATE_TOPICS": "false", "MONITOR__BATCH__MAX_WAIT_MS": "100",
        "MONITOR__MODEL__PATH": str(regime_a_registry), "MONITOR__MODEL__DEVICE": "cpu",
        "MONITOR__METRICS__PORT": "0", "MONITOR__LEARNING__ENABLED": "true",
    }
    # The learner settings (a mapping) come from a config file: environment values stay strings.
    config_file = tmp_path / "monitor.yaml"
    config_file.write_text(json.dumps({"learning": {"settings": {**SETTINGS, "state_dir": str(tmp_path / "learner")}}}),
                           encoding="utf-8")
    config = load_config(config_file, env=env)
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(config, metrics=metrics, learner=build_learner(config, metrics))
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    registry = ModelRegistry(regime_a_registry)
    try:
        a, b = rows("A", 200, 5), rows("B", 300, 6)
        produce(bootstrap, t["news"], [item(r) for r in a])
        assert len(consume(bootstrap, t["out"], len(a))) == len(a)
        produce(bootstrap, t["labels"], [label(r) for r in a])
        produce(bootstrap, t["news"], [item(r) for r in b])
        assert len(consume(bootstrap, t["out"], len(a) + len(b))) == len(a) + len(b)
        produce(bootstrap, t["labels"], [label(r) for r in b])

        wait_for(lambda: registry.current_version() != "v-a", 120, "a promoted model")
        promoted = registry.current_version()
        wait_for(lambda: metrics.model_swaps._value.get() == 1, 30, "the daemon's hot swap")

        after = rows("B", 60, 7)
        produce(bootstrap, t["news"], [item(r) for r in after])
        total = len(a) + len(b) + len(after)
        results = {json.loads(m.value)["id"]: json.loads(m.value) for m in consume(bootstrap, t["out"], total)}
    finally:
        monitor.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()

    assert metrics.labels_joined.labels(outcome="joined")._value.get() == len(a) + len(b)
    assert metrics.drift_detections.labels(signal="sentiment_error")._value.get() >= 1
    assert metrics.training_runs.labels(outcome="promoted")._value.get() == 1
    event = next(e for e in registry.history() if e["event"] == "promoted" and e["version"] == promoted)
    assert event["parent"] == "v-a" and event["trigger"] == "drift on sentiment_error"

    def sentiment_accuracy(rs: list[dict[str, str]]) -> float:
        return sum(results[r["id"]]["sentiment"] == r["sentiment"] for r in rs) / len(rs)

    assert {results[r["id"]]["model_version"] for r in b} == {"v-a"}
    assert {results[r["id"]]["model_version"] for r in after} == {promoted}
    assert sentiment_accuracy(b) < 0.5 and sentiment_accuracy(after) >= 0.8, (
        sentiment_accuracy(b), sentiment_accuracy(after))

    # The A model reads B's keywords as one class: the predicted sentiment mix shifts, and the least
    # confident recent items go out as label requests (10 per label-free detection).
    published = int(metrics.label_requests._value.get())
    assert published >= 10 and metrics.drift_detections.labels(signal="sentiment_mix")._value.get() >= 1
    requests = consume(bootstrap, t["requests"], published, timeout_s=10)
    assert len(requests) == published
    produced = {r["id"] for r in a + b}
    for message in requests:
        body = json.loads(message.value)
        assert message.key == body["id"].encode() and body["id"] in produced
        assert body["reason"] in ("confidence_drift", "sentiment_mix_drift") and body["model_version"] == "v-a"
