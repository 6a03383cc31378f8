"""At most one active instance of a role (the learner, the analytics owner), by Kafka group membership.

Every instance of a role joins the consumer group ``<kafka.group_id>-<role>-lease`` on the role's own
one-partition topic ``<kafka.lease_topic_prefix><role>`` (nothing is ever written to it). The
group coordinator assigns that single partition to exactly one member: that member holds the
lease and works; the others wait, polling, and one of them takes over when the holder leaves or
its session times out. The sticky assignor keeps the partition with its holder when a waiting
instance joins, so a newcomer never interrupts a running learner.

A holder that loses the lease (a rebalance revokes it, e.g. after a network partition longer than
the session timeout) sees ``held`` turn false at its next check and must stop writing: the
learner checks it before every promotion and announcement. ``held`` is false from the moment a
rebalance starts (the group revokes the assignment) until the group hands the partition out again:
kafka-python keeps reporting the old assignment until the new one arrives, so without that a holder
would still say "held" while the group gives the partition to a newcomer. A holder evicted because
it sent no heartbeat for ``kafka.session_timeout_ms`` (a stalled process) learns it at its next
heartbeat, at most ``kafka.heartbeat_interval_ms`` later; the lease uses the configured heartbeat
interval and poll interval, like every other consumer of the daemon. Each check also finishes a
rejoin that kafka-python left unfinished (``monitor.stream.group``): without it, the lease's first
rejoin could leave an instance "rebalancing" for good, its heartbeats off.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from kafka.errors import KafkaError

from monitor.config import KafkaConfig
from monitor.stream.admin import ensure_topics
from monitor.stream.group import resume_stalled_join

__all__ = ["Lease", "Membership"]

log = logging.getLogger(__name__)


class Membership(ConsumerRebalanceListener):
    """Whether the group's current assignment is settled: false between a revocation and the next assignment."""

    def __init__(self) -> None:
        self.settled = True

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.settled = False

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.settled = False

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.settled = True


class Lease:
    """``held`` is true while this process owns the role's single lease partition."""

    def __init__(self, config: KafkaConfig, role: str, consumer_factory: Callable[..., Any] = KafkaConsumer) -> None:
        self.role = role
        self.topic = f"{config.lease_topic_prefix}{role}"
        if config.create_topics:
            ensure_topics(config, [self.topic], partitions=1, replication=config.replication_factor)
        self._consumer = consumer_factory(
            group_id=f"{config.group_id}-{role}-lease",
            client_id=f"{config.client_id}-{role}-lease",
            enable_auto_commit=False,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            partition_assignment_strategy=[StickyPartitionAssignor],
            **config.client_options(),
        )
        self._await_partition()
        self._session_s = config.session_timeout_ms / 1000
        self._membership = Membership()
        self._consumer.subscribe([self.topic], listener=self._membership)
        self._state = ""  # the last state logged

    def _await_partition(self, timeout_s: float = 30.0) -> None:
        """Wait until the consumer's metadata shows the lease partition (a topic created a moment ago may not).

        The group's assignment is computed from the members' metadata: joined without the partition,
        the group assigns nothing, nobody holds the lease, and the consumer only looks again at its
        next periodic metadata refresh (``metadata_max_age_ms``, 5 minutes).
        """
        deadline = time.monotonic() + timeout_s
        while not self._consumer.partitions_for_topic(self.topic):
            if time.monotonic() > deadline:
                log.warning("%s lease: topic %s has no partition yet; the lease waits for it", self.role, self.topic)
                return
            time.sleep(0.2)

    @property
    def held(self) -> bool:
        """Poll the group (heartbeats, rebalances) and say whether this instance holds the lease."""
        try:
            self._consumer.poll(timeout_ms=200)  # lets the join and sync rounds of the group complete
            resume_stalled_join(self._consumer)  # a rejoin the client left unfinished (monitor.stream.group)
            held = self._membership.settled and bool(self._consumer.assignment())
        except KafkaError as err:
            log.warning("%s lease: cannot reach the group coordinator (%s); assuming lost", self.role, err)
            held = False
        state = ("acquired: this instance is active" if held else "not held: the group is rebalancing"
                 if not self._membership.settled else "not held: another instance is active, waiting")
        if state != self._state:
            log.info("%s lease %s", self.role, state)
            self._state = state
        return held

    def keeps(self, timeout_s: float | None = None) -> bool:
        """Whether this instance still holds the lease once a rebalance in progress has settled.

        A standby joining the group makes the holder rejoin: between its revocation and the new
        assignment ``held`` is false, although the sticky assignor gives the partition back. An
        active instance asks ``keeps`` instead of stopping at the first false ``held``: it waits
        (doing nothing) up to ``timeout_s`` (default: the session timeout, the longest a member can
        take to rejoin) for the assignment, and gives up only if the partition went elsewhere.
        """
        deadline = time.monotonic() + (self._session_s if timeout_s is None else timeout_s)
        while True:
            if self.held:
                return True
            if self._membership.settled or time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def wait(self, stop: Callable[[], bool], interval_s: float = 0.5) -> bool:
        """Block until the lease is held (True) or ``stop()`` says to give up (False)."""
        while not stop():
            if self.held:
                return True
            time.sleep(interval_s)
        return False

    def close(self) -> None:
        with contextlib.suppress(KafkaError):
            self._consumer.close(autocommit=False)
