"""The producing side of the Kafka edge: results, dead letters, alerts, label requests.

``flush()`` waits for every message sent since the last flush and raises ``SinkError`` if
any of them failed, so that the caller never commits input offsets for results the broker
does not have.

Dead letters keep the original bytes as the message value (and the original key); the
reason and origin travel in headers: ``dlq.reason``, ``dlq.detail``, ``dlq.topic``,
``dlq.partition``, ``dlq.offset``, ``dlq.timestamp_ms``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from monitor.config import KafkaConfig
from monitor.records import Alert, Prediction
from monitor.stream.source import RawMessage

__all__ = ["KafkaSink", "SinkError"]


class SinkError(RuntimeError):
    """The broker did not acknowledge some results: offsets must not be committed."""


class KafkaSink:
    """An idempotent producer (acks=all) with per-flush delivery checking."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        flush_timeout_s: float = 30.0,
        producer_factory: Callable[..., Any] = KafkaProducer,
    ) -> None:
        self.config = config
        self.flush_timeout_s = flush_timeout_s
        self._producer = producer_factory(
            client_id=f"{config.client_id}-producer",
            acks="all",
            linger_ms=5,
            **config.client_options(),
        )
        self._pending: list[Any] = []

    def _send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self._pending.append(self._producer.send(topic, value=value, key=key, headers=headers))

    def prediction(self, p: Prediction) -> None:
        self._send(self.config.output_topic, p.to_json(), p.id.encode("utf-8"))

    def alert(self, a: Alert) -> None:
        self._send(self.config.alerts_topic, a.to_json(), f"{a.scope}:{a.key}".encode())

    def label_request(self, item_id: str, body: bytes) -> None:
        self._send(self.config.label_requests_topic, body, item_id.encode("utf-8"))

    def dead_letter(self, message: RawMessage, reason: str, detail: str) -> None:
        headers = [
            ("dlq.reason", reason.encode()),
            ("dlq.detail", detail.encode("utf-8", "replace")),
            ("dlq.topic", message.topic.encode()),
            ("dlq.partition", str(message.partition).encode()),
            ("dlq.offset", str(message.offset).encode()),
            ("dlq.timestamp_ms", str(message.timestamp_ms).encode()),
        ]
        self._send(self.config.dead_letter_topic, message.value or b"", message.key, headers)

    def flush(self) -> int:
        """Wait for all pending sends; return how many; raise ``SinkError`` if any failed."""
        pending, self._pending = self._pending, []
        self._producer.flush(timeout=self.flush_timeout_s)
        failures = []
        for future in pending:
            try:
                future.get(timeout=self.flush_timeout_s)
            except KafkaError as err:
                failures.append(err)
        if failures:
            raise SinkError(f"{len(failures)} of {len(pending)} messages were not acknowledged: {failures[0]!r}")
        return len(pending)

    def close(self) -> None:
        self._producer.close(timeout=self.flush_timeout_s)
