"""A broker outage of 60 s on a real, dedicated broker: the same daemon stays up and finishes the stream.

The broker is stopped while the daemon is in the middle of a backlog (its flush of the batch in
hand then fails), kept down 60 s and started again on the same ports and data. Every input id
must come out (duplicates allowed), the daemon thread must never have stopped, the outage
gauge must have said since when during the outage and be 0 again after it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_io import KeywordScorer, consume, item, produce
from prometheus_client import CollectorRegistry

from monitor.app import Monitor
from monitor.broker import Broker, BrokerConfig, create_topics, find_free_port
from monitor.config import load_config
from monitor.metrics import Metrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 60.0


class SlowScorer(KeywordScorer):
    """Takes 50 ms a batch, so the backlog is still being worked on when the broker goes away."""

    def predict(self, texts, sources=None):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return super().predict(texts, sources)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(BrokerConfig(data_dir=tmp_path / "kafka", port=find_free_port(),
                                 controller_port=find_free_port()))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_a_60_s_outage_is_survived_by_the_same_daemon_with_nothing_lost(own_broker: Broker) -> None:
    bootstrap = own_broker.bootstrap
    t = {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in ("news", "out", "dlq", "alerts")}
    create_topics(bootstrap, list(t.values()), 1)
    env = {"MONITOR__KAFKA__BOOTSTRAP_SERVERS": bootstrap, "MONITOR__KAFKA__INPUT_TOPICS": t["news"],
           "MONITOR__KAFKA__OUTPUT_TOPIC": t["out"], "MONITOR__KAFKA__DEAD_LETTER_TOPIC": t["dlq"],
           "MONITOR__KAFKA__ALERTS_TOPIC": t["alerts"], "MONITOR__KAFKA__GROUP_ID": f"g-{t['news']}",
           "MONITOR__KAFKA__FLUSH_TIMEOUT_S": "5", "MONITOR__KAFKA__OUTAGE_BACKOFF_MAX_S": "4",
           "MONITOR__BATCH__MAX_BATCH": "10", "MONITOR__BATCH__MAX_WAIT_MS": "50", "MONITOR__METRICS__PORT": "0"}
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(load_config(None, env=env), metrics=metrics, scorer=SlowScorer())  # type: ignore[arg-type]
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            monitor.run()
        except BaseException as err:  # the test reports it
            crashed.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    n_before, n_after = 400, 100
    produce(bootstrap, t["news"], [item(i) for i in range(n_before)])
    deadline = time.monotonic() + 60
    while metrics.published._value.get() < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metrics.published._value.get() >= 40, "the daemon did not start publishing"

    own_broker.stop()  # mid-backlog
    stopped = time.monotonic()
    since: list[float] = []
    while time.monotonic() - stopped < OUTAGE_S:
        time.sleep(1.0)
        since.append(metrics.broker_unreachable_since._value.get())
        assert thread.is_alive(), f"the daemon stopped during the outage: {crashed}"
    own_broker.start()

    produce(bootstrap, t["news"], [item(i) for i in range(n_before, n_before + n_after)])
    wanted = {item(i)["id"] for i in range(n_before + n_after)}
    got: set[str] = set()
    deadline = time.monotonic() + 120
    while not wanted <= got and time.monotonic() < deadline:
        records = consume(bootstrap, t["out"], expected=len(wanted) + 10**6, timeout_s=5)
        got = {json.loads(r.value)["id"] for r in records}
    try:
        assert not crashed and thread.is_alive()
        assert wanted <= got, f"{len(wanted - got)} ids lost"
        assert max(since) > 0, "the outage gauge never said since when the broker was unreachable"
        retries = [metrics.broker_retries.labels(operation=op)._value.get() for op in ("flush", "commit")]
        assert sum(retries) >= 1, "no flush or commit was retried during the outage"
        deadline = time.monotonic() + 30
        while metrics.broker_unreachable_since._value.get() != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert metrics.broker_unreachable_since._value.get() == 0
    finally:
        monitor.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()
