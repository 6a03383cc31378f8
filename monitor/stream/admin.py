"""Creating the monitor's topics on the configured cluster (idempotent)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from monitor.config import ConfigError, KafkaConfig

__all__ = ["BrokerUnavailable", "ensure_topics"]


class BrokerUnavailable(RuntimeError):
    """No broker of ``kafka.bootstrap_servers`` answered."""


def ensure_topics(config: KafkaConfig, names: Iterable[str], partitions: int = 1,
                  replication: int | None = None, topic_configs: Mapping[str, str] | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    ``replication`` None (the default) sends -1 in CreateTopics: the cluster applies its own
    ``default.replication.factor``, so a 3-broker cluster with ``min.insync.replicas=2`` gets
    topics it can write to.

    With no ``names`` it only checks that the cluster answers. ``BrokerUnavailable`` when it does not.
    """
    try:
        admin = KafkaAdminClient(client_id=f"{config.client_id}-admin", **config.client_options())
    except KafkaError as err:  # NoBrokersAvailable, timeouts: kafka-python connects in __init__
        raise BrokerUnavailable(f"no broker of {config.bootstrap_servers} answers: {err!r}") from err
    try:
        try:
            existing = set(admin.list_topics())
        except KafkaError as err:
            raise BrokerUnavailable(f"the cluster at {config.bootstrap_servers} does not answer: {err!r}") from err
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        if wanted:
            try:
                with contextlib.suppress(TopicAlreadyExistsError):  # another instance created it first
                    admin.create_topics([NewTopic(n, partitions, -1 if replication is None else replication,
                                                  topic_configs=dict(topic_configs or {})) for n in wanted])
            except KafkaError as err:  # e.g. more replicas than brokers: a configuration problem
                raise ConfigError(f"kafka.replication_factor / kafka.topic_partitions: creating "
                                  f"{', '.join(wanted)} failed: {err!r}") from err
        return wanted
    finally:
        admin.close()
