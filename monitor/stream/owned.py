"""A source for a single-owner role: every partition of its topics, no group rebalancing.

The analytics owner and the learner each read the whole ``predictions`` stream (the learner also
``labels``); only the instance holding the role's ``Lease`` runs, so partitions are assigned
manually, all of them, and offsets are committed to the role's group ``<kafka.group_id>-<role>``
(visible to ``kafka-consumer-groups`` and lag dashboards like any group).

Each commit carries, as its metadata, the Kafka timestamp of the last message committed. At
start the source rewinds each partition by ``rewind_ms`` of Kafka time before that point, so a
restarted owner rebuilds its window state from the topic itself: ``replayed(message)`` is true
for what was already committed, and the role feeds those messages to its state without emitting
anything again (the topic is the changelog).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from monitor.config import KafkaConfig
from monitor.stream.source import RawMessage

__all__ = ["OwnedSource"]

log = logging.getLogger(__name__)


class OwnedSource:
    """All partitions of ``topics``, offsets committed to ``group_id`` (see the module docstring)."""

    def __init__(
        self,
        config: KafkaConfig,
        topics: Sequence[str],
        group_id: str,
        *,
        rewind_ms: int = 0,
        clock: Callable[[], float] = time.monotonic,
        consumer_factory: Callable[..., Any] = KafkaConsumer,
    ) -> None:
        self.topics = tuple(topics)
        self._clock = clock
        self._consumer = consumer_factory(
            group_id=group_id,
            client_id=f"{config.client_id}-{group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **config.client_options(),
        )
        self._resume: dict[TopicPartition, int] = {}
        self._assign(rewind_ms)

    def _partitions(self, timeout_s: float = 30.0) -> list[TopicPartition]:
        deadline = time.monotonic() + timeout_s
        while True:
            parts: list[TopicPartition] = []
            missing: list[str] = []
            for topic in self.topics:
                ids = self._consumer.partitions_for_topic(topic)
                if ids:
                    parts.extend(TopicPartition(topic, p) for p in sorted(ids))
                else:
                    missing.append(topic)
            if not missing or time.monotonic() > deadline:
                if missing:
                    log.warning("topics not found (yet): %s", ", ".join(missing))
                return parts
            time.sleep(0.5)

    def _assign(self, rewind_ms: int) -> None:
        parts = self._partitions()
        self._consumer.assign(parts)
        for tp in parts:
            committed = self._consumer.committed(tp, metadata=True)
            if committed is None or committed.offset is None or committed.offset < 0:
                continue  # never committed: auto_offset_reset (earliest) applies, nothing to rebuild
            self._resume[tp] = committed.offset
            start = committed.offset
            try:
                last_ms = int(committed.metadata or "")
            except ValueError:
                last_ms = None
            if rewind_ms > 0 and last_ms is not None:
                found = self._consumer.offsets_for_times({tp: max(0, last_ms - rewind_ms)}).get(tp)
                if found is not None:
                    start = min(start, found.offset)
            self._consumer.seek(tp, start)
        rebuilt = {f"{tp.topic}/{tp.partition}": self._resume[tp] for tp in parts if tp in self._resume}
        log.info("owned source on %s: %d partitions, resuming at %s", ",".join(self.topics), len(parts),
                 rebuilt or "the beginning")

    def replayed(self, message: RawMessage) -> bool:
        """Already committed before this start: rebuild state from it, emit nothing."""
        resume = self._resume.get(TopicPartition(message.topic, message.partition))
        return resume is not None and message.offset < resume

    def next_batch(self, max_batch: int, max_wait_ms: int, idle_ms: int = 500) -> list[RawMessage]:
        """Up to ``max_batch`` messages, ``max_wait_ms`` after the first (as ``KafkaSource``)."""
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
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            if tp not in offsets or offsets[tp].offset <= m.offset:
                offsets[tp] = OffsetAndMetadata(m.offset + 1, str(m.timestamp_ms), -1)
        if not offsets:
            return True
        try:
            self._consumer.commit(offsets=offsets)
        except KafkaError as err:
            log.warning("offset commit failed; those messages will be re-read after a restart: %s", err)
            return False
        return True

    def at_end(self, topic: str) -> set[int]:
        """The partitions of ``topic`` read to their log end as the broker has it now (one request)."""
        tps = [tp for tp in self._consumer.assignment() if tp.topic == topic]
        try:
            ends = self._consumer.end_offsets(tps)
            return {tp.partition for tp in tps if self._consumer.position(tp, timeout_ms=1000) >= ends[tp]}
        except KafkaError:
            return set()

    def partitions(self, topic: str) -> list[int]:
        return sorted(tp.partition for tp in self._consumer.assignment() if tp.topic == topic)

    def lag(self) -> dict[tuple[str, int], int]:
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

    def close(self) -> None:
        self._consumer.close(autocommit=False)
