"""The consuming side of the Kafka edge: micro-batches of raw messages, explicit commits.

Auto-commit is off: ``commit(messages)`` commits, per partition, the offset after the last
message of a batch, and ``monitor.app`` calls it only after that batch's results are flushed.

Static group membership (``kafka.group_instance_id``) makes a restart cheap: a member that
rejoins under the same instance id gets its partitions back at once, instead of waiting for
the dead member's session to time out (``kafka.session_timeout_ms``, 45 s) and a rebalance.
``auto`` (the default) derives an id that is stable across restarts and unique per instance:
``<hostname>-<group>-<slot>``, where the slot is the lowest number whose lock file
(``<tmpdir>/monitor-<group>-<slot>.lock``) this process can lock. The kernel releases the lock
when a process dies, even by SIGKILL, so a restarted instance takes its old slot again, and two
instances on one host never share an id (which would fence one of them).
"""

from __future__ import annotations

import fcntl
import logging
import re
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from monitor.config import KafkaConfig
from monitor.stream.group import resume_stalled_join

__all__ = ["KafkaSource", "RawMessage", "SourceError"]

log = logging.getLogger(__name__)


LOST_TO_REBALANCE = (CommitFailedError, RebalanceInProgressError, IllegalGenerationError, UnknownMemberIdError)
"""Commit errors that mean the group moved on: the partitions may be gone; poll to rejoin."""


class SourceError(RuntimeError):
    """The broker did not answer a commit; the caller retries (nothing is lost, nothing skipped)."""


def claim_instance_id(group_id: str, lock_dir: str | None = None, max_slots: int = 64) -> tuple[str, Any]:
    """``(instance id, open lock file)`` for ``group_instance_id: auto``; keep the file open while running."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:100] or "host"
    safe_group = re.sub(r"[^A-Za-z0-9._-]", "_", group_id)[:100]
    directory = lock_dir or tempfile.gettempdir()
    for slot in range(max_slots):
        handle = open(f"{directory}/monitor-{safe_group}-{slot}.lock", "a")  # noqa: SIM115 - held while running
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return f"{host}-{safe_group}-{slot}", handle
    raise RuntimeError(f"more than {max_slots} instances of group {group_id} on this host")


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
        self._commit_timeout_ms = int(config.flush_timeout_s * 1000)
        self._slot: Any = None
        instance_id = config.group_instance_id
        if instance_id == "auto":
            instance_id, self._slot = claim_instance_id(config.group_id)
        self.instance_id = instance_id
        if instance_id is not None:
            log.info("static group membership as %s", instance_id)
        self._consumer = consumer_factory(
            *self.topics,
            group_id=config.group_id,
            client_id=config.client_id,
            enable_auto_commit=False,
            auto_offset_reset=config.auto_offset_reset,
            max_poll_interval_ms=config.max_poll_interval_ms,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            group_instance_id=instance_id,
            max_poll_records=max_poll_records,
            **config.client_options(),
        )

    def next_batch(self, max_batch: int, max_wait_ms: int, idle_ms: int = 500,
                   adaptive: bool = False) -> list[RawMessage]:
        """Up to ``max_batch`` messages, returning ``max_wait_ms`` after the first one arrived.

        ``adaptive``: return as soon as the consumer has caught up (its position is at the high
        watermark of every assigned partition, as of the last fetch), instead of waiting the rest of
        ``max_wait_ms`` for messages that are not there. With nothing to read it returns an empty
        list after ``idle_ms``, so the caller's loop stays responsive (shutdown, model swaps, summaries).
        """
        batch: list[RawMessage] = []
        deadline = self._clock() + idle_ms / 1000.0
        while len(batch) < max_batch:
            remaining_ms = max(0, int((deadline - self._clock()) * 1000))
            polled = self._consumer.poll(timeout_ms=remaining_ms, max_records=max_batch - len(batch))
            resume_stalled_join(self._consumer)  # a rejoin the client left unfinished (monitor.stream.group)
            now = self._clock()
            for records in polled.values():
                for r in records:
                    if not batch:
                        deadline = now + max_wait_ms / 1000.0
                    batch.append(RawMessage(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, now))
            if now >= deadline or (adaptive and batch and self._caught_up()):
                break
        return batch

    def _caught_up(self) -> bool:
        """Whether no assigned partition has messages beyond this consumer's position (from the last fetch)."""
        try:
            for tp in self._consumer.assignment():
                high = self._consumer.highwater(tp)
                if high is None or self._consumer.position(tp, timeout_ms=100) < high:
                    return False
        except KafkaError:
            return False
        return True

    def commit(self, messages: Sequence[RawMessage]) -> bool:
        """Commit the offsets after ``messages``; False if a rebalance took the partitions away.

        Losing a commit to a rebalance is safe: the new owner re-reads those messages
        (at-least-once, duplicates possible, nothing lost). A rebalance in progress is such a loss,
        not an outage: only the next ``poll()`` completes it, so retrying the commit would wait forever.
        """
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            if tp not in offsets or offsets[tp].offset <= m.offset:
                offsets[tp] = OffsetAndMetadata(m.offset + 1, self._commit_metadata(m), -1)
        if not offsets:
            return True
        try:
            self._consumer.commit(offsets=offsets, timeout_ms=self._commit_timeout_ms)
        except LOST_TO_REBALANCE as err:
            log.warning("offset commit lost to a rebalance; those messages will be re-read: %s", err)
            return False
        except KafkaError as err:  # coordinator unreachable, request timed out: retriable by the caller
            raise SourceError(f"offset commit failed: {err!r}") from err
        return True

    def _commit_metadata(self, last: RawMessage) -> str:
        """The metadata committed with a partition's offset (``last``: its newest committed message)."""
        return ""

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
        if self._slot is not None:
            self._slot.close()
