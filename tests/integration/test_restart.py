"""SIGKILL mid-stream, three times, on the real broker: no id is lost and a restart commits within seconds.

``monitor run`` (the real CLI, a tiny model) works through a backlog and is killed with SIGKILL
three times at different points, then restarted; the last instance finishes the stream. Every
input id must have a result (duplicates allowed). Each replacement's first commit is timed from
its start: static group membership (``kafka.group_instance_id: auto``) gives it its partitions
back without waiting for the killed member's 45 s session timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from kafka_io import consume, item, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: From "monitor running" (model loaded, clients built) to the first commit: the part static
#: membership removes the 45 s session timeout from. Without it this takes 45 s or more.
JOIN_LIMIT_S = 5.0
#: From the process start (interpreter, torch, model): the issue's 10 s (3.3 s measured on an idle
#: 2-core machine; importing torch and transformers took up to 20 s when other jobs loaded it).
RECOVERY_LIMIT_S = 10.0


def committed(admin: KafkaAdminClient, group: str) -> int:
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except KafkaError:  # no coordinator for a group that has not committed yet
        return 0
    return sum(meta.offset for meta in offsets.values() if meta.offset >= 0)


def test_three_sigkills_lose_nothing_and_each_restart_commits_quickly(
    kafka_broker, tiny_registry, kafka_topic_factory, tmp_path: Path
) -> None:
    topics = {name: kafka_topic_factory(name, partitions=3 if name == "news" else 1)
              for name in ("news", "out", "dlq", "alerts")}
    group = f"g-{topics['news']}"
    raw = {
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "input_topics": [topics["news"]],
                  "output_topic": topics["out"], "dead_letter_topic": topics["dlq"], "alerts_topic": topics["alerts"],
                  "group_id": group, "create_topics": False},
        "batch": {"max_batch": 16, "max_wait_ms": 50},
        "model": {"path": str(tiny_registry), "device": "cpu", "threads": 1},
        "metrics": {"port": 0},
    }
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    n = 3000
    produce(kafka_broker.bootstrap, topics["news"], [item(i) for i in range(n)])
    command = [sys.executable, "-m", "monitor.cli", "run", "--config", str(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    recoveries: list[float] = []
    joins: list[float] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        for kill in range(4):  # three killed instances, then the one that finishes
            before = committed(admin, group)
            started = time.monotonic()
            log = tmp_path / f"daemon-{kill}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            first_commit = running = None
            deadline = started + 90
            while time.monotonic() < deadline and proc.poll() is None:
                if running is None and "monitor running" in log.read_text(errors="replace"):
                    running = time.monotonic() - started
                now_committed = committed(admin, group)
                if first_commit is None and now_committed > before:
                    first_commit = time.monotonic() - started
                if first_commit is not None and (kill == 3 or now_committed >= before + 150 * (kill + 1)):
                    break
                if now_committed >= n:
                    break
                time.sleep(0.1)
            assert proc.poll() is None, f"instance {kill} exited with {proc.returncode}"
            assert first_commit is not None, f"instance {kill} committed nothing in 90 s"
            if before > 0:
                recoveries.append(first_commit)
                joins.append(first_commit - (running if running is not None else 0.0))
            if kill < 3:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        deadline = time.monotonic() + 180
        while committed(admin, group) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        admin.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
    ids = {json.loads(r.value)["id"] for r in consume(kafka_broker.bootstrap, topics["out"], n * 3, 20)}
    lost = {item(i)["id"] for i in range(n)} - ids
    print(f"SIGKILL x3: lost={len(lost)}, first commit after restart: {[round(r, 1) for r in recoveries]} s "
          f"from the process start, {[round(j, 1) for j in joins]} s from 'monitor running'")
    assert not lost, f"{len(lost)} ids lost"
    assert len(recoveries) == 3
    assert max(joins) < JOIN_LIMIT_S, joins
    assert max(recoveries) < RECOVERY_LIMIT_S, recoveries


def test_sigterm_while_waiting_for_the_broker_exits_0(tiny_registry, tmp_path: Path) -> None:
    from monitor.broker import find_free_port

    command = [sys.executable, "-m", "monitor.cli", "run", "--model", str(tiny_registry), "--bootstrap",
               f"127.0.0.1:{find_free_port()}", "--metrics-port", "0"]
    proc = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        lines.append(line)
        if "broker unreachable since" in line or time.monotonic() > deadline:
            break
    assert any("broker unreachable since" in line for line in lines), lines
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(lines) + out
