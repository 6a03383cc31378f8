"""The producing side of the Kafka edge: results, dead letters, alerts, label requests.

``flush()`` waits for every message sent since the last flush and raises ``SinkError`` if
any of them is not acknowledged, so that the caller never commits input offsets for results
the broker does not have. Nothing is forgotten on a failed flush: a message still in flight
stays pending, one the producer gave up on (delivery timeout in a long broker outage) is sent
again by the next ``flush()``. The caller retries ``flush()`` until it succeeds.

Dead letters keep the original bytes as the message value (and the original key); the
reason and origin travel in headers: ``dlq.reason``, ``dlq.detail``, ``dlq.topic``,
``dlq.partition``, ``dlq.offset``, ``dlq.timestamp_ms``.

Every message is measured against the producer's ``max_request_size`` before it is sent (the
producer's own estimate, so the two agree). A result or label request that does not fit is
not sent and the caller is told (``False``): ``monitor.app`` dead-letters its input with reason
``oversize``. A dead letter that does not fit is never dropped: it keeps its key and headers
and a truncated value, with ``dlq.truncated`` = the original value's length in bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError
from kafka.record.default_records import DefaultRecordBatchBuilder

from monitor.config import KafkaConfig
from monitor.records import Alert, Prediction
from monitor.stream.source import RawMessage

log = logging.getLogger(__name__)

__all__ = ["MAX_REQUEST_SIZE", "KafkaSink", "SinkError", "record_size"]

#: kafka-python's default ``max_request_size`` (bytes); the broker's ``message.max.bytes`` is a little larger.
MAX_REQUEST_SIZE = 1_048_576

#: Consecutive failed flushes after which the producer is replaced by a new one (see ``KafkaSink._rebuild``).
REBUILD_AFTER = 3

Headers = list[tuple[str, bytes]]
Record = tuple[str, bytes, bytes | None, Headers | None]


def record_size(key: bytes | None, value: bytes, headers: Headers | None = None) -> int:
    """Upper bound of the bytes one record takes in a produce request (kafka-python's estimate)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or []))


class SinkError(RuntimeError):
    """The broker did not acknowledge some results: offsets must not be committed."""


class KafkaSink:
    """An idempotent producer (acks=all) with per-flush delivery checking."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        flush_timeout_s: float | None = None,
        max_request_size: int = MAX_REQUEST_SIZE,
        producer_factory: Callable[..., Any] = KafkaProducer,
    ) -> None:
        self.config = config
        self.flush_timeout_s = config.flush_timeout_s if flush_timeout_s is None else flush_timeout_s
        self.max_request_size = max_request_size
        self._factory = producer_factory
        self._pending: list[tuple[Any, Record]] = []
        self._failed: list[Record] = []
        self._failed_flushes = 0
        self._producer: Any = None
        try:
            self._producer = self._new_producer()
        except KafkaError as err:  # the broker is not up yet: the first flush tries again
            log.error("producer could not connect (%r); retrying at the first flush", err)

    def _new_producer(self) -> Any:
        return self._factory(client_id=f"{self.config.client_id}-producer", acks="all", linger_ms=5,
                             max_request_size=self.max_request_size, **self.config.client_options())

    def _rebuild(self) -> None:
        """Replace the producer after repeated failed flushes, keeping every unacknowledged record.

        kafka-python's producer may not find a restarted broker again after a long outage (its
        metadata keeps saying "no node available"); a new client bootstraps afresh. Records the
        old one had in flight are sent again (duplicates possible, losses not).
        """
        self._failed = [record for _, record in self._pending] + self._failed
        self._pending = []
        old, self._producer = self._producer, None
        if old is not None:
            try:
                old.close(timeout=0)
            except Exception as err:  # a broken client must not stop the rebuild
                log.debug("closing the old producer: %r", err)
        try:
            self._producer = self._new_producer()
            log.warning("producer rebuilt after %d failed flushes; %d records will be sent again",
                        self._failed_flushes, len(self._failed))
        except KafkaError as err:  # broker still away (kafka-python connects in __init__): next flush retries
            log.debug("producer not rebuilt yet: %r", err)

    def fits(self, key: bytes | None, value: bytes, headers: Headers | None = None) -> bool:
        """Whether one record of this key, value and headers is within ``max_request_size``."""
        return record_size(key, value, headers) <= self.max_request_size

    def _send(self, topic: str, value: bytes, key: bytes | None, headers: Headers | None = None) -> bool:
        if not self.fits(key, value, headers):
            return False
        if self._producer is None:  # being rebuilt: sent by the next flush
            self._failed.append((topic, value, key, headers))
            return True
        try:
            future = self._producer.send(topic, value=value, key=key, headers=headers)
        except MessageSizeTooLargeError:  # the producer's own check; ours should have caught it
            return False
        except KafkaError:  # e.g. no metadata within max_block_ms in an outage: sent again by flush()
            self._failed.append((topic, value, key, headers))
            return True
        self._pending.append((future, (topic, value, key, headers)))
        return True

    def prediction(self, p: Prediction) -> bool:
        """Send one result; False (nothing sent) if it exceeds ``max_request_size``."""
        return self._send(self.config.output_topic, p.to_json(), p.id.encode("utf-8"))

    def alert(self, a: Alert) -> bool:
        return self._send(self.config.alerts_topic, a.to_json(), f"{a.scope}:{a.key}".encode())

    def label_request(self, item_id: str, body: bytes) -> bool:
        return self._send(self.config.label_requests_topic, body, item_id.encode("utf-8"))

    def dead_letter(self, message: RawMessage, reason: str, detail: str) -> None:
        """Send ``message`` to the dead-letter topic; truncated to fit, never dropped."""
        headers = [
            ("dlq.reason", reason.encode()),
            ("dlq.detail", detail[:1000].encode("utf-8", "replace")),
            ("dlq.topic", message.topic.encode()),
            ("dlq.partition", str(message.partition).encode()),
            ("dlq.offset", str(message.offset).encode()),
            ("dlq.timestamp_ms", str(message.timestamp_ms).encode()),
        ]
        key, value = message.key, message.value or b""
        if not self.fits(key, value, headers):
            headers.append(("dlq.truncated", str(len(value)).encode()))
            if key is not None and len(key) > self.max_request_size // 4:
                headers.append(("dlq.key_truncated", str(len(key)).encode()))
                key = key[: self.max_request_size // 4]
            # The length varints grow with the value: 16 bytes of slack cover them.
            room = self.max_request_size - record_size(key, b"", headers) - 16
            value = value[: max(0, room)]
        sent = self._send(self.config.dead_letter_topic, value, key, headers)
        if not sent:
            raise SinkError(f"dead letter of {message.topic}/{message.partition}@{message.offset} does not fit "
                            f"max_request_size {self.max_request_size} even truncated")

    def flush(self) -> int:
        """Wait for all pending sends; return how many; raise ``SinkError`` if any is not acknowledged.

        Failed messages are kept and sent again by the next call (duplicates are possible on the
        output topics, losses are not).
        """
        if self._producer is None or self._failed_flushes >= REBUILD_AFTER:
            self._rebuild()
        if self._producer is None:
            self._failed_flushes += 1
            raise SinkError(f"no producer (the broker does not answer); {len(self._failed)} records wait")
        for topic, value, key, headers in self._failed:
            try:
                self._pending.append((self._producer.send(topic, value=value, key=key, headers=headers),
                                      (topic, value, key, headers)))
            except KafkaError:
                self._pending.append((None, (topic, value, key, headers)))
        self._failed = []
        timed_out = False
        try:
            self._producer.flush(timeout=self.flush_timeout_s)
        except KafkaError:  # KafkaTimeoutError: the broker did not answer within flush_timeout_s
            timed_out = True
        waiting: list[tuple[Any, Record]] = []
        errors: list[BaseException] = []
        delivered = 0
        for future, record in self._pending:
            if future is None or future.failed():
                self._failed.append(record)
                errors.append(future.exception if future is not None else SinkError("could not send"))
            elif future.is_done:
                delivered += 1
            else:
                waiting.append((future, record))
        self._pending = waiting
        if self._failed or waiting:
            self._failed_flushes += 1
            first = repr(errors[0]) if errors else "flush timed out" if timed_out else "not acknowledged"
            raise SinkError(f"{len(self._failed)} failed and {len(waiting)} unacknowledged of "
                            f"{delivered + len(self._failed) + len(waiting)} messages: {first}")
        self._failed_flushes = 0
        return delivered

    @property
    def unacknowledged(self) -> int:
        """Messages sent but not yet acknowledged, or waiting to be sent again."""
        return len(self._pending) + len(self._failed)

    def close(self) -> None:
        if self._producer is None:
            return
        try:
            self._producer.close(timeout=self.flush_timeout_s)
        except KafkaError as err:  # closing during an outage: nothing unflushed was committed
            log.warning("producer did not close cleanly: %r", err)
