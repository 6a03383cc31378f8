"""The delivery order: no offset is committed before the outputs of its batch are flushed.

A recording source checks, at every commit, that the producer holds nothing unacknowledged;
the producer's flushes fail (time out as in a broker outage, or expire every pending message)
for a while. Moving ``_commit`` before ``_flush`` in ``Monitor.handle`` makes these tests fail.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes import FakeProducer, RecordingSource, raw_message
from kafka_io import KeywordScorer
from prometheus_client import CollectorRegistry

from monitor.app import Monitor
from monitor.config import load_config
from monitor.metrics import Metrics
from monitor.resilience import Outage
from monitor.stream.sink import KafkaSink

ENV = {"MONITOR__KAFKA__INPUT_TOPICS": "news", "MONITOR__KAFKA__OUTPUT_TOPIC": "out",
       "MONITOR__KAFKA__DEAD_LETTER_TOPIC": "dlq"}


def item(i: int) -> bytes:
    return json.dumps({"id": f"n{i}", "text": f"oil {i}", "source": "wire",
                       "published_at": "2026-03-02T09:00:00Z"}).encode()


def build(fail_flushes: int = 0, fail_futures: int = 0) -> tuple[Monitor, FakeProducer, RecordingSource, list[Any]]:
    log: list[Any] = []
    producer = FakeProducer(log)
    producer.fail_flushes, producer.fail_futures = fail_flushes, fail_futures
    messages = [raw_message(item(i) if i % 7 else b"not json", i) for i in range(40)]
    source = RecordingSource(messages, log)
    cfg = load_config(None, env={**ENV, "MONITOR__BATCH__MAX_BATCH": "8"})
    sink = KafkaSink(cfg.kafka, producer_factory=lambda **kw: producer)
    monitor = Monitor(cfg, metrics=Metrics(CollectorRegistry()), scorer=KeywordScorer(),  # type: ignore[arg-type]
                      source=source, sink=sink)  # type: ignore[arg-type]
    monitor.outage = Outage(monitor.metrics, backoff_min_s=0.001, backoff_max_s=0.004)

    def check(messages: list[Any]) -> None:
        assert not producer.unflushed and sink.unacknowledged == 0, (
            f"commit of offsets {messages[0].offset}..{messages[-1].offset} before their outputs were flushed")
        wanted = {f"n{m.offset}" for m in messages if m.offset % 7}
        delivered = {json.loads(v)["id"] for _, _, v, _ in producer.on("out")}
        assert wanted <= delivered, f"committed without results for {sorted(wanted - delivered)}"
        dead = {int(dict(h or [])["dlq.offset"]) for _, _, _, h in producer.on("dlq")}
        assert {m.offset for m in messages if not m.offset % 7} <= dead

    source.before_commit = check
    return monitor, producer, source, log


def drain(monitor: Monitor, source: RecordingSource) -> None:
    while not source.exhausted:
        monitor.handle(source.next_batch(8, 0))


@pytest.mark.parametrize(("fail_flushes", "fail_futures"), [(0, 0), (5, 0), (0, 3), (4, 4)])
def test_offsets_are_committed_only_after_a_successful_flush(fail_flushes: int, fail_futures: int) -> None:
    monitor, producer, source, log = build(fail_flushes, fail_futures)
    drain(monitor, source)
    assert source.committed == {("news", 0): 40}
    ids = {json.loads(v)["id"] for _, _, v, _ in producer.on("out")}
    assert ids == {f"n{i}" for i in range(40) if i % 7}  # nothing lost (duplicates allowed)
    # Every commit directly follows a successful flush of everything sent before it.
    for n, event in enumerate(log):
        if event[0] == "commit":
            assert log[n - 1][0] == "flush", log[max(0, n - 4): n + 1]
    failures = sum(1 for e in log if e[0] in ("flush-timeout", "flush-expired"))
    assert failures == fail_flushes + fail_futures
    retries = monitor.metrics.broker_retries.labels(operation="flush")._value.get()
    assert retries == failures
    assert monitor.metrics.broker_unreachable_since._value.get() == 0  # reachable again at the end


def test_the_outage_gauge_says_since_when_while_flushes_fail() -> None:
    monitor, _, source, _ = build(fail_flushes=3)
    seen: list[float] = []
    original = monitor.outage.failed

    def spy(operation: str, err: BaseException) -> float:
        delay = original(operation, err)
        seen.append(monitor.metrics.broker_unreachable_since._value.get())
        return delay

    monitor.outage.failed = spy  # type: ignore[method-assign]
    monitor.handle(source.next_batch(8, 0))
    assert len(seen) == 3 and seen[0] > 1e9 and len(set(seen)) == 1  # one outage, one start time
    assert monitor.metrics.broker_unreachable_since._value.get() == 0


def test_a_stop_during_an_outage_exits_without_committing() -> None:
    monitor, _, source, log = build(fail_flushes=10**6)
    original = monitor.outage.failed
    calls: list[str] = []

    def stop_on_second(operation: str, err: BaseException) -> float:
        calls.append(operation)
        if len(calls) == 2:
            monitor.stop()  # SIGTERM while the broker is away
        return original(operation, err)

    monitor.outage.failed = stop_on_second  # type: ignore[method-assign]
    assert monitor.run() == 0
    assert calls == ["flush", "flush"] and not source.committed and ("source-close",) in log


def test_a_producer_stuck_after_an_outage_is_rebuilt_and_everything_is_sent_again() -> None:
    from monitor.stream.sink import REBUILD_AFTER

    log: list[Any] = []
    producers: list[FakeProducer] = []

    def factory(**_: Any) -> FakeProducer:
        producer = FakeProducer(log)
        producer.fail_flushes = 10**6 if not producers else 0  # the first never recovers
        producers.append(producer)
        return producer

    cfg = load_config(None, env=ENV)
    sink = KafkaSink(cfg.kafka, producer_factory=factory)
    monitor = Monitor(cfg, metrics=Metrics(CollectorRegistry()), scorer=KeywordScorer(),  # type: ignore[arg-type]
                      source=RecordingSource([raw_message(item(i), i) for i in range(5)], log),  # type: ignore[arg-type]
                      sink=sink)
    monitor.outage = Outage(monitor.metrics, backoff_min_s=0.001, backoff_max_s=0.002)
    monitor.handle(monitor.source.next_batch(8, 0))
    assert len(producers) == 2
    assert sum(1 for e in log if e[0] == "flush-timeout") == REBUILD_AFTER
    assert {json.loads(v)["id"] for _, _, v, _ in producers[1].on("out")} == {f"n{i}" for i in range(5)}
    assert monitor.source.committed == {("news", 0): 5}  # type: ignore[attr-defined]
