"""Creating the monitor's topics on the configured cluster (idempotent)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from monitor.config import KafkaConfig

__all__ = ["ensure_topics"]


def ensure_topics(config: KafkaConfig, names: Iterable[str], partitions: int = 1,
                  replication: int | None = None, topic_configs: Mapping[str, str] | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    ``replication`` None (the default) sends -1 in CreateTopics: the cluster applies its own
    ``default.replication.factor``, so a 3-broker cluster with ``min.insync.replicas=2`` gets
    topics it can write to.
    """
    admin = KafkaAdminClient(client_id=f"{config.client_id}-admin", **config.client_options())
    try:
        existing = set(admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another instance created it first
                admin.create_topics([NewTopic(n, partitions, -1 if replication is None else replication,
                                              topic_configs=dict(topic_configs or {})) for n in wanted])
        return wanted
    finally:
        admin.close()
