"""Fixtures shared by every test folder: the real Kafka broker and unique topics on it.

``kafka_broker`` starts one real single-node Apache Kafka broker per test session (fresh
KRaft data dir in a temp dir, free loopback ports; about 10 s) and stops it at the end.
Set ``MONITOR_TEST_BOOTSTRAP=host:port`` to use a broker that is already running instead
(for example one started with ``monitor broker start``); its topics are then left in place.
Topic names are unique per call, so tests never see each other's messages.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.broker import Broker, BrokerConfig, create_topics


@dataclass(frozen=True)
class KafkaHandle:
    """The broker under test: ``bootstrap`` for clients, ``broker`` when this session started it."""

    bootstrap: str
    broker: Broker | None = None


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaHandle]:
    external = os.environ.get("MONITOR_TEST_BOOTSTRAP")
    if external:
        yield KafkaHandle(bootstrap=external)
        return
    data_dir: Path = tmp_path_factory.mktemp("kafka")
    with Broker(BrokerConfig(data_dir=data_dir)) as broker:
        yield KafkaHandle(bootstrap=broker.bootstrap, broker=broker)


@pytest.fixture
def kafka_topic_factory(kafka_broker: KafkaHandle) -> Callable[..., str]:
    """``make(prefix="test", partitions=1) -> name``: create a uniquely named topic and return its name."""

    def make(prefix: str = "test", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        create_topics(kafka_broker.bootstrap, [name], partitions)
        return name

    return make


@pytest.fixture(scope="session")
def tiny_registry_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model registry serving a tiny random BERT (real tokenizer, real checkpoint); for daemon tests."""
    from kafka_io import build_tiny_registry

    return build_tiny_registry(tmp_path_factory.mktemp("models"))
