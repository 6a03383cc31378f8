"""The real local Kafka broker: produce/consume round trip, committed offsets, and start errors."""

from __future__ import annotations

import argparse
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from monitor.broker import Broker, BrokerConfig, BrokerError, create_topics, read_state
from monitor.commands import broker as broker_command

if TYPE_CHECKING:
    from conftest import KafkaHandle

pytestmark = pytest.mark.integration

N = 200


def _consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                         enable_auto_commit=False, consumer_timeout_ms=10_000)


def _drain(consumer: KafkaConsumer, expected: int) -> list[tuple[bytes | None, bytes]]:
    """Poll until ``expected`` records arrived (or the consumer timeout ends the iteration)."""
    out: list[tuple[bytes | None, bytes]] = []
    for record in consumer:
        out.append((record.key, record.value))
        if len(out) == expected:
            break
    return out


def test_produce_consume_and_resume_from_committed_offsets(
    kafka_broker: KafkaHandle, kafka_topic_factory: Callable[..., str]
) -> None:
    topic = kafka_topic_factory("roundtrip", partitions=2)
    sent = {f"k{i}".encode(): f"message {i} é".encode() for i in range(N)}
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, linger_ms=5)
    for key, value in sent.items():
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=30)
    producer.close()

    group = f"{topic}-group"
    first = _consumer(kafka_broker.bootstrap, topic, group)
    head = _drain(first, N // 2)
    first.commit()
    first.close()
    assert len(head) == N // 2

    # A new member of the same group resumes after the committed offsets: no repeats, nothing lost.
    second = _consumer(kafka_broker.bootstrap, topic, group)
    tail = _drain(second, N - len(head))
    committed = {p: second.committed(TopicPartition(topic, p)) for p in (0, 1)}
    second.close()

    received = head + tail
    assert len(received) == N
    assert dict(received) == sent  # every key once, with its own value
    assert sum(c or 0 for c in committed.values()) == len(head)


def test_create_topics_is_idempotent(kafka_broker: KafkaHandle, kafka_topic_factory: Callable[..., str]) -> None:
    existing = kafka_topic_factory("idem")
    fresh = f"{existing}-new"
    assert create_topics(kafka_broker.bootstrap, [existing, fresh]) == [fresh]
    assert create_topics(kafka_broker.bootstrap, [existing, fresh]) == []


def test_port_already_taken_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=rf"port {port} on 127\.0\.0\.1 is already in use"):
            Broker(BrokerConfig(data_dir=tmp_path, port=port)).start()
    assert read_state(tmp_path) is None


def test_second_start_on_same_data_dir_says_already_running(kafka_broker: KafkaHandle) -> None:
    if kafka_broker.broker is None:
        pytest.skip("MONITOR_TEST_BOOTSTRAP: the broker under test was not started by this session")
    running = kafka_broker.broker
    with pytest.raises(BrokerError, match="already running") as info:
        Broker(BrokerConfig(data_dir=running.data_dir)).start()
    assert f"{running.bootstrap} (pid {running.pid})" in str(info.value)
    assert running.running


def test_jvm_crash_reports_the_broker_log(tmp_path: Path) -> None:
    # A heap too small for the JVM to boot: it exits at once, after the data dir was formatted.
    with pytest.raises(BrokerError, match="exited with code") as info:
        Broker(BrokerConfig(data_dir=tmp_path, heap="1k")).start()
    message = str(info.value)
    assert "last" in message and "broker.log" in message
    assert "heap" in message.lower()  # the JVM's own complaint, from the log tail
    assert read_state(tmp_path) is None


def _run_cli(*argv: str) -> int:
    """``monitor broker ...`` through this command's own parser (the full CLI imports torch: slow)."""
    parser = argparse.ArgumentParser(prog="monitor")
    broker_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["broker", *argv])
    code: int = args.func(args)
    return code


def test_cli_finds_the_running_broker_by_its_data_dir(
    kafka_broker: KafkaHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    if kafka_broker.broker is None:
        pytest.skip("MONITOR_TEST_BOOTSTRAP: the broker under test was not started by this session")
    data_dir = str(kafka_broker.broker.data_dir)
    assert _run_cli("status", "--data-dir", data_dir) == 0
    assert f"running at {kafka_broker.bootstrap}" in capsys.readouterr().out
    name = f"cli-{uuid.uuid4().hex[:10]}"
    assert _run_cli("create-topics", "--data-dir", data_dir, "--partitions", "2", name) == 0
    assert capsys.readouterr().out == f"{name}: created\n"
    assert _run_cli("create-topics", "--data-dir", data_dir, name) == 0
    assert capsys.readouterr().out == f"{name}: exists\n"
    assert _run_cli("start", "--data-dir", data_dir, "--port", "0", "--controller-port", "0") == 1
    assert "already running" in capsys.readouterr().err
