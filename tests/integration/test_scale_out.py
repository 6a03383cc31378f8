"""Scale-out on the real broker: 3 serving replicas, the analytics owner and the learner, as processes.

Six input partitions; the scripted two-regime stream with a negative surge in one topic. One
replica is SIGKILLed mid-stream; a second learner waits as a standby and takes over when the
first is stopped. Asserts: no id lost; every label joined; exactly one raised and one cleared
alert for the surge; every live replica serves the promoted version within 30 s of its
announcement (and the old version before); never two learners active. Regime A is paced (``PACE``);
the kill happens in regime B, sent at once: a partition delayed by the session timeout would be
minutes of event time behind in this compressed time, which live traffic never is.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import regime_model
from kafka import KafkaConsumer
from kafka_io import consume, produce
from regime_model import label, rows
from regimes import KEYWORDS, START

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEARNING = {
    "epochs": 12, "batch_size": 16, "lr_encoder": 1e-2, "lr_head": 3e-2, "freeze_layers": 0, "patience": 3,
    "freeze_embeddings": False, "distill_weight": 0.2, "replay_ratio": 2.0, "buffer_size": 400, "val_fraction": 0.15,
    "window_size": 240, "min_new_labels": 300, "cooldown_s": 0, "min_gate_examples": 10, "min_stratum_examples": 10,
    "max_forgetting": 0.05, "max_training_s": 60, "label_free_signals": [], "label_requests": 0,
    "accuracy_floor": 0.6, "floor_labels": 100, "retrain_every_labels": 0,
    # The gate also waits for shadow labels (off by default); labels come in one batch, so 5 s at most.
    "shadow_labels": 20, "shadow_wait_s": 5.0,
}
ALERTS = {"WINDOW_SECONDS": "600", "BASELINE_SECONDS": "3000", "MIN_COUNT": "30", "RATIO": "2.0",
          "MIN_DELTA": "0.2", "CLEAR_RATIO": "1.3", "HOLD_SECONDS": "300", "CLEAR_SECONDS": "120",
          "COOLDOWN_SECONDS": "3600", "DEFAULT_BASELINE": "0.33", "MIN_BASELINE_COUNT": "20"}
PACE = 50
"""Items sent per second of wall time, one second of event time apart: replicas keep up, so their
different speeds put the partitions at most a few dozen seconds of event time apart (live traffic:
a few seconds), well inside the 600 s window."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Role:
    """One ``monitor <role>`` process with its own metrics port and log file."""

    def __init__(self, role: str, env: dict[str, str], log_dir: Path, name: str, config: Path) -> None:
        self.name, self.port = name, free_port()
        self.log = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", role, "--config", str(config)],
            env={**env, "MONITOR__METRICS__PORT": str(self.port)},
            stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def metrics(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return ""

    def value(self, name: str, **labels: str) -> float:
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in self.metrics().splitlines():
            if line.startswith(name) and (not want or want in line):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def version(self) -> str | None:
        match = re.search(r'monitor_model_info\{[^}]*version="([^"]+)"', self.metrics())
        return match.group(1) if match else None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)


def results_for(bootstrap: str, topic: str, ids: set[str], timeout_s: float = 180) -> dict[str, dict[str, Any]]:
    """The newest result per id, once every id in ``ids`` has one (duplicates after a kill are expected)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    out: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while not ids <= set(out) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    body = json.loads(r.value)
                    out[body["id"]] = body
    finally:
        consumer.close()
    missing = ids - set(out)
    assert not missing, f"{len(missing)} ids have no result, e.g. {sorted(missing)[:5]}"
    return out


def surge_rows(n: int) -> list[dict[str, str]]:
    """``n`` negative Energy headlines in regime A's words."""
    words = KEYWORDS["A"]["negative"]
    return [{"id": f"S-{i:04d}", "text": f"oil shares {words[i % len(words)]}", "topic": "Energy",
             "sentiment": "negative"} for i in range(n)]


def timed(rs: list[dict[str, str]], start_s: int) -> list[dict[str, Any]]:
    return [{"id": r["id"], "text": r["text"], "source": "wire",
             "published_at": (START + timedelta(seconds=start_s + i)).isoformat()} for i, r in enumerate(rs)]


def test_three_replicas_analytics_and_a_standby_learner(
    kafka_broker: Any, kafka_topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    registry = regime_model.regime_a_registry(tmp_path)
    news, out, labels = (kafka_topic_factory(n, partitions=6) for n in ("news", "out", "labels"))
    other = {n: kafka_topic_factory(n) for n in ("dlq", "alerts", "requests")}
    other["versions"] = f"versions-{news}"  # created by the roles: compacted, one partition
    env = {
        **os.environ, "PYTHONUNBUFFERED": "1",
        "MONITOR__KAFKA__BOOTSTRAP_SERVERS": bootstrap, "MONITOR__KAFKA__INPUT_TOPICS": news,
        "MONITOR__KAFKA__OUTPUT_TOPIC": out, "MONITOR__KAFKA__LABELS_TOPIC": labels,
        "MONITOR__KAFKA__DEAD_LETTER_TOPIC": other["dlq"], "MONITOR__KAFKA__ALERTS_TOPIC": other["alerts"],
        "MONITOR__KAFKA__LABEL_REQUESTS_TOPIC": other["requests"], "MONITOR__KAFKA__VERSIONS_TOPIC": other["versions"],
        "MONITOR__KAFKA__LEASE_TOPIC_PREFIX": f"lease-{news}-", "MONITOR__KAFKA__GROUP_ID": f"g-{news}",
        "MONITOR__KAFKA__SESSION_TIMEOUT_MS": "10000", "MONITOR__KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "MONITOR__KAFKA__CREATE_TOPICS": "true", "MONITOR__BATCH__MAX_WAIT_MS": "100",
        "MONITOR__MODEL__PATH": str(registry), "MONITOR__MODEL__DEVICE": "cpu", "MONITOR__MODEL__THREADS": "1",
        **{f"MONITOR__ALERTS__{k}": v for k, v in ALERTS.items()},
    }
    config = tmp_path / "monitor.yaml"
    config.write_text(json.dumps({"learning": {"settings": {**LEARNING, "state_dir": str(tmp_path / "learner")}}}))
    logs = tmp_path / "logs"
    logs.mkdir()
    learner1 = Role("learn", env, logs, "learner1", config)
    wait_for(lambda: "lease acquired" in learner1.text(), 120, "the first learner's lease")
    learner2 = Role("learn", env, logs, "learner2", config)
    analytics = Role("analytics", env, logs, "analytics", config)
    replicas = [Role("serve", env, logs, f"replica{i}", config) for i in range(3)]
    roles = [learner1, learner2, analytics, *replicas]
    try:
        wait_for(lambda: "waiting" in learner2.text(), 120, "the standby learner")
        wait_for(lambda: all(r.version() == "v-a" for r in replicas), 120, "three replicas serving v-a")

        # Regime A with 400 s of negative Energy news after the first 120 s: 1,500 s of event time.
        part_a = rows("A", 1100, 5)
        a_items = timed(part_a[:120], 0) + timed(surge_rows(400), 120) + timed(part_a[120:], 520)
        for start in range(0, len(a_items), PACE):
            produce(bootstrap, news, a_items[start:start + PACE])
            time.sleep(1.0)
        results_for(bootstrap, out, {i["id"] for i in a_items})

        produce(bootstrap, labels, [label(r) for r in part_a])
        wait_for(lambda: learner1.value("monitor_labels_received_total", outcome="joined") >= len(part_a), 120,
                 "the first learner joining regime A's labels")
        assert learner1.value("monitor_labels_received_total", outcome="unknown") == 0
        assert "lease acquired" not in learner2.text(), "two learners active at once"
        learner1.stop()  # the standby takes over
        wait_for(lambda: "lease acquired" in learner2.text(), 60, "the standby learner taking over")

        # Regime B: new keywords; their labels make the (new) learner retrain, promote and announce.
        part_b = rows("B", 300, 6)
        b_items = timed(part_b, 1500)
        produce(bootstrap, news, b_items[:150])
        wait_for(lambda: sum(r.value("monitor_messages_published_total") for r in replicas) >= len(a_items) + 60,
                 120, "part of regime B classified")
        replicas[1].stop(signal.SIGKILL)  # mid-stream: its partitions go to the other two
        produce(bootstrap, news, b_items[150:])
        results_for(bootstrap, out, {i["id"] for i in a_items + b_items})
        produce(bootstrap, labels, [label(r) for r in part_b])
        announcements = []

        def announced() -> bool:
            for m in consume(bootstrap, other["versions"], 1, timeout_s=2):
                announcements.append(json.loads(m.value))
            return any(a["version"] != "v-a" for a in announcements)

        wait_for(announced, 240, "a promoted version announced")
        seen_at = time.monotonic()
        promoted = next(a for a in announcements if a["version"] != "v-a")
        assert promoted["parent"] == "v-a" and promoted["checksums"]
        live = [replicas[0], replicas[2]]
        wait_for(lambda: all(r.version() == promoted["version"] for r in live), 30, "every replica swapped")
        assert time.monotonic() - seen_at <= 30

        part_c = rows("B", 60, 7)
        c_items = timed(part_c, 1800)
        produce(bootstrap, news, c_items)
        results = results_for(bootstrap, out, {i["id"] for i in a_items + b_items + c_items})
        wait_for(lambda: learner2.value("monitor_labels_received_total", outcome="joined") >= len(part_b), 60,
                 "the second learner joining regime B's labels")
        assert learner2.value("monitor_labels_received_total", outcome="unknown") == 0
        alerts = [json.loads(m.value) for m in consume(bootstrap, other["alerts"], 1000, timeout_s=10)]
    finally:
        for role in roles:
            role.stop(signal.SIGKILL if role is not learner2 else signal.SIGTERM)

    assert {results[i["id"]]["model_version"] for i in b_items[:50]} == {"v-a"}
    assert {results[i["id"]]["model_version"] for i in c_items} == {promoted["version"]}
    # Regime A's alerts (event time before regime B): the surge, raised once and cleared once, by the one
    # owner, whatever replica classified which item. (Regime B is read by a model that has not learnt it
    # yet, and the kill delays some partitions by the session timeout: its alerts are not asserted.)
    regime_a = [a for a in alerts if datetime.fromisoformat(a["at"]) < START + timedelta(seconds=1500)]
    assert [(a["key"], a["state"]) for a in regime_a] == [("Energy", "raised"), ("Energy", "cleared")], alerts
    assert len({a["alert_id"] for a in regime_a}) == 1
