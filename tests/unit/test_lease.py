"""The lease's view of its group membership, without a broker (the integration test has the real group)."""

from __future__ import annotations

import logging

import pytest
from kafka import TopicPartition

from monitor.config import KafkaConfig
from monitor.stream.lease import Lease, Membership

PARTITION = {TopicPartition("lease-learner", 0)}


def test_a_revoked_assignment_is_unsettled_until_the_group_assigns_again() -> None:
    membership = Membership()
    assert membership.settled
    membership.on_partitions_revoked(PARTITION)  # a rebalance began: the old assignment may be handed out
    assert not membership.settled
    membership.on_partitions_assigned(set())  # this member got nothing this time
    assert membership.settled
    membership.on_partitions_assigned(PARTITION)
    assert membership.settled


def test_an_evicted_member_is_unsettled() -> None:
    membership = Membership()
    membership.on_partitions_lost(PARTITION)
    assert not membership.settled


class Group:
    """A consumer whose group membership the test drives: ``poll`` plays the next scripted step."""

    def __init__(self, steps: list[str]) -> None:
        self.steps, self.assigned, self.listener = steps, set(), None

    def __call__(self, **_options: object) -> Group:
        return self

    def partitions_for_topic(self, _topic: str) -> set[int]:
        return {0}

    def subscribe(self, _topics: list[str], listener: Membership) -> None:
        self.listener = listener

    def poll(self, timeout_ms: int) -> dict:
        step = self.steps.pop(0) if self.steps else "idle"
        if step == "assign":
            self.assigned = set(PARTITION)
            self.listener.on_partitions_assigned(self.assigned)
        elif step == "revoke":  # kafka-python keeps the assignment until the next one arrives
            self.listener.on_partitions_revoked(self.assigned)
        elif step == "elsewhere":
            self.assigned = set()
            self.listener.on_partitions_assigned(set())
        return {}

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def close(self, autocommit: bool) -> None:
        pass


def lease(steps: list[str]) -> Lease:
    config = KafkaConfig(create_topics=False, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    return Lease(config, "learner", consumer_factory=Group(steps))


def test_no_lease_while_the_group_rebalances_and_the_holder_keeps_it_after() -> None:
    held = lease(["assign", "revoke", "idle", "assign"])
    assert held.held  # assigned
    assert not held.held  # revoked: the old assignment is still reported, but the group may hand it out
    assert held.keeps(timeout_s=5)  # waits through the rebalance; the partition comes back


def test_a_holder_whose_partition_went_elsewhere_does_not_keep_it() -> None:
    lost = lease(["assign", "revoke", "elsewhere"])
    assert lost.held and not lost.held
    assert not lost.keeps(timeout_s=5)


def test_keeps_gives_up_when_the_rebalance_does_not_settle_in_time() -> None:
    stuck = lease(["assign", "revoke"])
    assert stuck.held and not stuck.held
    assert not stuck.keeps(timeout_s=0.3)


def test_a_standby_says_it_waits_once_the_group_has_settled(caplog: pytest.LogCaptureFixture) -> None:
    standby = lease(["revoke", "elsewhere"])  # joining: a revocation of nothing, then an assignment of nothing
    with caplog.at_level(logging.INFO, logger="monitor.stream.lease"):
        assert not standby.held and not standby.held
    assert [r.getMessage() for r in caplog.records] == [
        "learner lease not held: the group is rebalancing",
        "learner lease not held: another instance is active, waiting"]
