"""Small helpers for integration tests: build input messages, produce to and read back from topics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer


def item(i: int, text: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {"id": f"it-{i:05d}", "text": text or f"Company {i} shares rise after earnings beat",
            "source": "test-wire", "published_at": "2026-03-02T09:00:00Z", "tickers": ["ABC"], "kind": "news"}
    body.update(extra)
    return body


def produce(bootstrap: str, topic: str, values: Iterable[bytes | dict[str, Any]]) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    n = 0
    for v in values:
        producer.send(topic, value=v if isinstance(v, bytes) else json.dumps(v).encode())
        n += 1
    producer.flush()
    producer.close()
    return n


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list[Any]:
    """Read ``topic`` from the beginning until ``expected`` messages arrived or time runs out."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
    finally:
        consumer.close()
    return out
