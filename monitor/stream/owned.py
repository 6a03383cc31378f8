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
from kafka.structs import TopicPartition

from monitor.config import KafkaConfig
from monitor.stream.source import KafkaSource, RawMessage

__all__ = ["OwnedSource"]

log = logging.getLogger(__name__)


class OwnedSource(KafkaSource):
    """All partitions of ``topics``, offsets committed to ``group_id`` (see the module docstring).

    Batching, commits and lag are ``KafkaSource``'s; only the assignment and the commit metadata differ.
    """

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
        self._commit_timeout_ms = int(config.flush_timeout_s * 1000)
        self._slot = None
        self.instance_id = None
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

    def _commit_metadata(self, last: RawMessage) -> str:
        return str(last.timestamp_ms)  # where a restart rewinds from (module docstring)

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
