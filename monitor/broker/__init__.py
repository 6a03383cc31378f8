"""A real single-node Apache Kafka broker (KRaft, combined broker + controller) run locally.

The broker is plain Apache Kafka from Maven Central: ``deploy/kafka/pom.xml`` pins
``kafka_2.13`` and the log4j SLF4J binding, :func:`ensure_jars` resolves them once into a jar
cache, and :class:`Broker` formats a KRaft data dir and runs ``java ... kafka.Kafka``. No
Docker, no download site, no ZooKeeper; Java 17+ and (for the first resolve) Maven.

Data dir layout (one broker per data dir)::

    <data_dir>/server.properties   written on every start
    <data_dir>/kraft/              log.dirs (topics, offsets, the KRaft metadata log)
    <data_dir>/broker.log          the broker's own stdout/stderr (appended)
    <data_dir>/format.log          output of the last StorageTool format
    <data_dir>/broker.json         state file: pid, ports, cluster id, start time, while it runs

Choices worth knowing:

* Loopback only, ports chosen up front (``0`` = a free port) so parallel runs do not collide;
  a taken port is reported before Java starts.
* ``auto.create.topics.enable=false``: a typo in a topic name fails loudly instead of silently
  creating a new topic; the monitor creates its topics with :func:`create_topics`.
* An existing formatted data dir is reused (topics and committed offsets survive a restart);
  a fresh one is formatted with a cluster id generated in Python.
* Test-friendly defaults: replication 1 everywhere, ``group.initial.rebalance.delay.ms=0``,
  one partition for the internal topics and a 2 MiB cleaner buffer (the 128 MiB default sits on heap).
"""

from monitor.broker.admin import create_topics, find_free_port, is_serving, port_in_use
from monitor.broker.errors import BrokerError
from monitor.broker.jars import KAFKA_DEPLOY_DIR, MARKER, default_lib_dir, ensure_jars
from monitor.broker.process import (
    LOG_FILE,
    STATE_FILE,
    Broker,
    BrokerConfig,
    BrokerState,
    new_cluster_id,
    read_state,
    server_properties,
    stop_broker,
)

__all__ = [
    "KAFKA_DEPLOY_DIR",
    "LOG_FILE",
    "MARKER",
    "STATE_FILE",
    "Broker",
    "BrokerConfig",
    "BrokerError",
    "BrokerState",
    "create_topics",
    "default_lib_dir",
    "ensure_jars",
    "find_free_port",
    "is_serving",
    "new_cluster_id",
    "port_in_use",
    "read_state",
    "server_properties",
    "stop_broker",
]
