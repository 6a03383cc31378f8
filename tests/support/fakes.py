"""Unit-level stand-ins for the Kafka clients: a producer behind the real ``KafkaSink``, a recording source.

``FakeProducer`` enforces ``max_request_size`` like kafka-python (``MessageSizeTooLargeError`` from
``send``), resolves futures on ``flush`` and can be told to fail: ``fail_flushes`` flushes time out
(futures stay pending, as in a broker outage), ``fail_futures`` flushes fail every pending future
(as when the producer's delivery timeout expires). Every event goes to a shared ``log`` so a test
can check the order of flushes and commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.future import Future

from monitor.stream.sink import MAX_REQUEST_SIZE, record_size
from monitor.stream.source import RawMessage

Sent = tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]


class FakeProducer:
    def __init__(self, log: list[Any] | None = None, max_request_size: int = MAX_REQUEST_SIZE, **_: Any) -> None:
        self.log = [] if log is None else log
        self.max_request_size = max_request_size
        self.sent: list[Sent] = []
        self.unflushed: list[tuple[Future, Sent]] = []
        self.fail_flushes = 0
        self.fail_futures = 0

    def send(self, topic: str, value: bytes, key: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> Future:
        if record_size(key, value, headers) > self.max_request_size:
            raise MessageSizeTooLargeError("too large")
        future = Future()
        self.unflushed.append((future, (topic, key, value, headers)))
        return future

    def flush(self, timeout: float | None = None) -> None:
        if self.fail_flushes:
            self.fail_flushes -= 1
            self.log.append(("flush-timeout", len(self.unflushed)))
            raise KafkaTimeoutError("flush timed out")
        if self.fail_futures:
            self.fail_futures -= 1
            for future, _ in self.unflushed:
                future.failure(KafkaTimeoutError("expired in the accumulator"))
            self.log.append(("flush-expired", len(self.unflushed)))
            self.unflushed = []
            return
        for future, record in self.unflushed:
            future.success(None)
            self.sent.append(record)
        self.log.append(("flush", len(self.unflushed)))
        self.unflushed = []

    def close(self, timeout: float | None = None) -> None:
        self.log.append(("producer-close",))

    def on(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s[0] == topic]


def raw_message(value: bytes | None, offset: int, topic: str = "news", key: bytes | None = None,
                timestamp_ms: int = 1_772_441_000_000, partition: int = 0) -> RawMessage:
    return RawMessage(topic, partition, offset, key, value, timestamp_ms, 0.0)


class RecordingSource:
    """Hands out the given messages in batches; records each commit (and checks a hook first)."""

    def __init__(self, messages: Iterable[RawMessage], log: list[Any] | None = None) -> None:
        self._queue = list(messages)
        self.log = [] if log is None else log
        self.committed: dict[tuple[str, int], int] = {}
        self.before_commit: Any = None

    def next_batch(self, max_batch: int, max_wait_ms: int, idle_ms: int = 500,
                   adaptive: bool = False) -> list[RawMessage]:
        batch, self._queue = self._queue[:max_batch], self._queue[max_batch:]
        return batch

    @property
    def exhausted(self) -> bool:
        return not self._queue

    def commit(self, messages: Sequence[RawMessage]) -> bool:
        if self.before_commit is not None:
            self.before_commit(messages)
        for m in messages:
            key = (m.topic, m.partition)
            self.committed[key] = max(self.committed.get(key, 0), m.offset + 1)
        self.log.append(("commit", len(messages)))
        return True

    def lag(self) -> dict[tuple[str, int], int]:
        return {}

    def close(self) -> None:
        self.log.append(("source-close",))
