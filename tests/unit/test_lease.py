"""The lease's view of its group membership, without a broker (the integration test has the real group)."""

from __future__ import annotations

from kafka import TopicPartition

from monitor.stream.lease import Membership

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
