"""A consumer-group rejoin that kafka-python 3.0 can leave unfinished, and how the daemon finishes it.

When a group's leader rejoins because the topic's metadata changed (a partition was added, or the
first metadata of a just-subscribed topic arrived after the first join: every new consumer does
this once), kafka-python 3.0.12 decides whether to go on joining from the metadata alone. The join
itself runs on the client's IO thread; if ``poll`` returns (its timeout ran out) before the
JoinGroup round ends, the IO thread finishes it, the leader's assignment makes the metadata
"current" again, and from then on ``poll`` believes nothing needs joining: the finished join is
never taken up. The member stays "rebalancing" for good: its heartbeats stay disabled, the group
evicts it after ``session_timeout_ms``, its rebalance listener never hears of an assignment, and it
goes on fetching the partitions it had before. Reproduced on the real broker
(``tests/integration/test_group_rejoin.py``): a leader that adds a partition while another member
is slow to rejoin stays stuck for as long as one cares to wait.

``resume_stalled_join`` runs after every ``poll`` of a group consumer: it notices that state (a
rejoin begun, nothing left that asks for it) and asks for the rejoin again, so that the next
``poll`` joins the group afresh (one more rebalance, seconds) instead of never.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["resume_stalled_join"]

log = logging.getLogger(__name__)


def resume_stalled_join(consumer: Any) -> bool:
    """Ask a group consumer to rejoin when a join it began is no longer driven; True when it did."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not getattr(coordinator, "rejoining", False):
        return False
    if coordinator.need_rejoin():  # the next poll goes on with the join it began
        return False
    log.warning("group %s: a rejoin was left unfinished by the Kafka client; joining again",
                coordinator.group_id)
    coordinator.request_rejoin()
    return True
