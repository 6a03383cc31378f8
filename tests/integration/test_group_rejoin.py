"""A leader's rejoin after a metadata change finishes (monitor.stream.group), on the real broker."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewPartitions, NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

from monitor.stream.group import resume_stalled_join

pytestmark = pytest.mark.integration


class Heard(ConsumerRebalanceListener):
    """The assignment the group last handed this member (None between a revocation and the next)."""

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] | None = None

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.assigned = None

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned = set(assigned)


def member(bootstrap: str, group: str, topic: str, **options: Any) -> tuple[KafkaConsumer, Heard]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000, metadata_max_age_ms=1000,
                             partition_assignment_strategy=[StickyPartitionAssignor], **options)
    heard = Heard()
    consumer.subscribe([topic], listener=heard)
    return consumer, heard


def poll(consumer: KafkaConsumer) -> None:
    consumer.poll(timeout_ms=200)  # as the lease does: short polls, other work in between
    resume_stalled_join(consumer)
    time.sleep(0.3)


def test_a_leader_that_rejoins_for_a_new_partition_gets_its_assignment(kafka_broker: Any) -> None:
    topic = f"rejoin-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    leader, heard = member(kafka_broker.bootstrap, topic, topic)
    # a second member that stops polling: the group waits for it (up to its 3 s rebalance timeout) at the next rebalance
    slow, heard_slow = member(kafka_broker.bootstrap, topic, topic, max_poll_interval_ms=3000)
    try:
        deadline = time.monotonic() + 30
        while not (heard.assigned and heard_slow.assigned is not None):
            assert time.monotonic() < deadline, "the two members never settled"
            poll(leader)
            poll(slow)
        assert heard.assigned == {TopicPartition(topic, 0)}  # the first member, and the sticky assignor kept it there
        admin.create_partitions({topic: NewPartitions(2)})  # the leader sees the new partition and rejoins
        deadline = time.monotonic() + 25  # without the resumed join, the leader stays "rebalancing" for good
        while heard.assigned != {TopicPartition(topic, 0), TopicPartition(topic, 1)}:
            assert time.monotonic() < deadline, f"the leader's rejoin never finished (it heard {heard.assigned})"
            poll(leader)
    finally:
        leader.close(autocommit=False)
        slow.close(autocommit=False)
        admin.close()
