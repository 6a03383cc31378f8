"""Talking to a running broker: free ports, readiness probe, topic creation."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from monitor.broker.errors import BrokerError

__all__ = ["create_topics", "find_free_port", "is_serving", "port_in_use"]

def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on ``host:port`` (a TIME_WAIT leftover does not count, as for Java)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def is_serving(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when the broker at ``host:port`` answers an admin request (not merely listens)."""
    host, _, port = bootstrap.rpartition(":")
    try:  # connect first: a failed admin bootstrap leaks a kafka-python IO thread
        socket.create_connection((host, int(port)), timeout=min(timeout_s, 1.0)).close()
        with KafkaAdminClient(bootstrap_servers=bootstrap, client_id="monitor-broker-probe",
                              bootstrap_timeout_ms=int(timeout_s * 1000),
                              request_timeout_ms=int(timeout_s * 1000)) as admin:
            admin.describe_cluster()
        return True
    except (OSError, KafkaError):
        return False



_TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1, *,
                  timeout_s: float = 30.0) -> list[str]:
    """Create ``names`` (idempotent: existing topics are left as they are); return those created.

    Waits until every topic has a leader, so producers and consumers can use it at once.
    The replication factor is the broker's default (1 on the local broker).
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    timeout_ms = int(timeout_s * 1000)
    with KafkaAdminClient(bootstrap_servers=bootstrap, client_id="monitor-admin",
                          bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms) as admin:
        response = admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": -1} for name in wanted},
            timeout_ms=timeout_ms, raise_errors=False)
        created, failed = [], []
        for topic in response["topics"]:
            if topic["error_code"] == 0:
                created.append(topic["name"])
            elif topic["error_code"] != _TOPIC_EXISTS:
                failed.append(f"{topic['name']}: {topic.get('error_message') or topic['error_code']}")
        if failed:
            raise BrokerError("could not create topics: " + "; ".join(failed))
        admin.wait_for_topics(wanted, timeout_ms=timeout_ms)
    return created
