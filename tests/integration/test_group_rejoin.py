"""A leader's rejoin after a metadata change finishes (monitor.stream.group), on the real broker; a commit
made while its member is rebalancing is lost to the rebalance, not retried as an outage (monitor.stream.source)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewPartitions, NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

from monitor.config import KafkaConfig
from monitor.stream.group import resume_stalled_join
from monitor.stream.source import KafkaSource, RawMessage

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
    deadline = time.monotonic() + 30
    while not heard.assigned:  # alone in the group first: it leads, and holds the partition
        assert time.monotonic() < deadline, "the first member never got the partition"
        poll(leader)
    # a second member that stops polling: the group waits for it (up to its 3 s rebalance timeout) at the next rebalance
    slow, heard_slow = member(kafka_broker.bootstrap, topic, topic, max_poll_interval_ms=3000)
    try:
        deadline = time.monotonic() + 30
        while not (heard.assigned and heard_slow.assigned is not None):
            assert time.monotonic() < deadline, f"never settled: {heard.assigned}, {heard_slow.assigned}"
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


def test_a_commit_during_the_members_own_rebalance_is_given_up_and_the_next_poll_rejoins(kafka_broker: Any) -> None:
    """Seen in the scale-out test: two replicas whose first batch ended mid-rejoin retried its commit for
    minutes ("broker unreachable"), never polling again, so the rejoin never finished and their partitions
    went unread. The commit must give up (the batch is re-read by whoever owns it next) and polling resume."""
    topic = f"rejoin-commit-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    for i in range(50):
        producer.send(topic, f"m{i}".encode(), partition=0)
    producer.flush()
    config = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap, group_id=topic, group_instance_id=None,
                         session_timeout_ms=6000, heartbeat_interval_ms=1000)

    def consumer(*topics: str, **options: Any) -> KafkaConsumer:
        return KafkaConsumer(*topics, **{**options, "metadata_max_age_ms": 1000,
                                         "partition_assignment_strategy": [StickyPartitionAssignor]})

    source = KafkaSource(config, [topic], consumer_factory=consumer)
    coordinator = source._consumer._coordinator  # the client's group state: what the race depends on
    read: list[RawMessage] = []
    deadline = time.monotonic() + 30
    while not read:  # alone in the group first: it leads, and reads the partition
        assert time.monotonic() < deadline, "the source never read its partition"
        read += source.next_batch(100, 200)
    slow, heard_slow = member(kafka_broker.bootstrap, topic, topic, max_poll_interval_ms=3000)
    try:
        deadline = time.monotonic() + 30
        while heard_slow.assigned is None:
            assert time.monotonic() < deadline, "the second member never joined"
            read += source.next_batch(100, 200)
            poll(slow)
        admin.create_partitions({topic: NewPartitions(2)})  # the source's member rejoins
        deadline = time.monotonic() + 25
        while not coordinator.rebalance_in_progress():
            assert time.monotonic() < deadline, "the member never began to rejoin"
            source.next_batch(100, 200)
        assert source.commit(read) is False  # lost to the rebalance: no error, no retry
        deadline = time.monotonic() + 25
        while coordinator.rebalance_in_progress():  # only polling finishes the rejoin
            assert time.monotonic() < deadline, "the rejoin never finished"
            source.next_batch(100, 200)
        assert source.commit(read) is True
    finally:
        source.close()
        slow.close(autocommit=False)
        producer.close()
        admin.close()
