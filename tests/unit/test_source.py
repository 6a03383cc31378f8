"""Static group membership ids, stable across restarts; commits lost to a rebalance are not outages."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaConnectionError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from monitor.config import KafkaConfig
from monitor.stream.source import KafkaSource, RawMessage, SourceError, claim_instance_id


def test_instance_ids_take_the_lowest_free_slot_and_free_it_on_exit(tmp_path: Path) -> None:
    first, lock1 = claim_instance_id("grp/1", lock_dir=str(tmp_path))
    second, lock2 = claim_instance_id("grp/1", lock_dir=str(tmp_path))
    host = socket.gethostname()
    assert (first, second) == (f"{host}-grp_1-0", f"{host}-grp_1-1")  # two live instances: two ids
    lock1.close()  # the first instance dies (the kernel drops its lock, even on SIGKILL)
    again, lock3 = claim_instance_id("grp/1", lock_dir=str(tmp_path))
    assert again == first  # its replacement takes its id back: no rebalance, no session timeout
    other, lock4 = claim_instance_id("other", lock_dir=str(tmp_path))
    assert other == f"{host}-other-0"
    for lock in (lock2, lock3, lock4):
        lock.close()


class FailingCommits:
    def __init__(self, err: Exception) -> None:
        self.err = err

    def commit(self, **_: Any) -> None:
        raise self.err


@pytest.mark.parametrize("err", [
    CommitFailedError("kicked out"), IllegalGenerationError(), UnknownMemberIdError(),
    # Raised while this member is itself rejoining: only its next poll() completes the rebalance, so
    # retrying the commit as if the broker were down left two replicas retrying forever.
    RebalanceInProgressError("undergoing a rebalance; call poll()"),
])
def test_a_commit_lost_to_a_rebalance_returns_false_for_the_loop_to_poll_again(err: Exception) -> None:
    source = KafkaSource(KafkaConfig(), ["t"], consumer_factory=lambda *a, **k: FailingCommits(err))
    message = RawMessage("t", 0, 7, None, b"{}", 0, 0.0)
    assert source.commit([message]) is False


def test_a_commit_the_broker_does_not_answer_is_an_error_to_retry() -> None:
    source = KafkaSource(KafkaConfig(), ["t"], consumer_factory=lambda *a, **k: FailingCommits(KafkaConnectionError()))
    with pytest.raises(SourceError, match="offset commit failed"):
        source.commit([RawMessage("t", 0, 7, None, b"{}", 0, 0.0)])
