"""The consuming side of the Kafka edge: micro-batches of raw messages, explicit commits.

Auto-commit is off: ``commit(messages)`` commits, per partition, the offset after the last
message of a batch, and ``monitor.app`` calls it only after that batch's results are flushed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from monitor.config import KafkaConfig

__all__ = ["KafkaSource", "RawMessage", "SourceError"]

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """The broker did not answer a commit; the caller retries (nothing is lost, nothing skipped)."""


@dataclass(frozen=True)
class RawMessage:
    """A consumed record, undecoded, with where it came from and when it was polled."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    received_at: float


class KafkaSource:
    """A consumer-group member on ``topics`` that hands out micro-batches."""

    def __init__(
        self,
        config: KafkaConfig,
        topics: Sequence[str],
        *,
        max_poll_records: int = 500,
        clock: Callable[[], float] = time.monotonic,
        consumer_factory: Callable[..., Any] = KafkaConsumer,
    ) -> None:
        self.topics = tuple(topics)
        self._clock = clock
        self._consumer = consumer_factory(
            *self.topics,
            group_id=config.group_id,
            client_id=config.client_id,
            enable_auto_commit=False,
            auto_offset_reset=config.auto_offset_reset,
            max_poll_interval_ms=config.max_poll_interval_ms,
            session_timeout_ms=config.session_timeout_ms,
            max_poll_records=max_poll_records,
            **config.client_options(),
        )

    def next_batch(self, max_batch: int, max_wait_ms: int, idle_ms: int = 500) -> list[RawMessage]:
        """Up to ``max_batch`` messages, returning ``max_wait_ms`` after the first one arrived.

        With nothing to read it returns an empty list after ``idle_ms``, so the caller's loop
        stays responsive (shutdown, model swaps, summaries).
        """
        batch: list[RawMessage] = []
        deadline = self._clock() + idle_ms / 1000.0
        while len(batch) < max_batch:
            remaining_ms = max(0, int((deadline - self._clock()) * 1000))
            polled = self._consumer.poll(timeout_ms=remaining_ms, max_records=max_batch - len(batch))
            now = self._clock()
            for records in polled.values():
                for r in records:
                    if not batch:
                        deadline = now + max_wait_ms / 1000.0
                    batch.append(RawMessage(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, now))
            if now >= deadline:
                break
        return batch

    def commit(self, messages: Sequence[RawMessage]) -> bool:
        """Commit the offsets after ``messages``; False if a rebalance took the partitions away.

        Losing a commit to a rebalance is safe: the new owner re-reads those messages
        (at-least-once, duplicates possible, nothing lost).
        """
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            if tp not in offsets or offsets[tp].offset <= m.offset:
                offsets[tp] = OffsetAndMetadata(m.offset + 1, "", -1)
        if not offsets:
            return True
        try:
            self._consumer.commit(offsets=offsets)
        except CommitFailedError as err:
            log.warning("offset commit lost to a rebalance; those messages will be re-read: %s", err)
            return False
        except KafkaError as err:  # coordinator unreachable, request timed out: retriable by the caller
            raise SourceError(f"offset commit failed: {err!r}") from err
        return True

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the high watermark, per assigned partition (from the last fetch)."""
        out = {}
        for tp in self._consumer.assignment():
            try:
                high = self._consumer.highwater(tp)
                position = self._consumer.position(tp, timeout_ms=1000)
            except KafkaError:
                continue
            if high is not None and position is not None:
                out[(tp.topic, tp.partition)] = max(0, high - position)
        return out

    def pause_all(self) -> None:
        self._consumer.pause(*self._consumer.assignment())

    def resume_all(self) -> None:
        self._consumer.resume(*self._consumer.paused())

    def close(self) -> None:
        self._consumer.close(autocommit=False)
