"""Model versions on the compacted topic and the single-owner lease, on the real broker."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from monitor.cli import main
from monitor.config import load_config
from monitor.registry import ModelRegistry
from monitor.stream.lease import Lease
from monitor.stream.versions import VersionFollower, ensure_versions_topic

pytestmark = pytest.mark.integration


def kafka_config(bootstrap: str, **extra: str) -> Any:
    env = {"MONITOR__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
           "MONITOR__KAFKA__VERSIONS_TOPIC": f"v-{uuid.uuid4().hex[:8]}",
           "MONITOR__KAFKA__SESSION_TIMEOUT_MS": "6000", "MONITOR__KAFKA__HEARTBEAT_INTERVAL_MS": "1000", **extra}
    return load_config(None, env=env).kafka


def test_rollback_announces_the_older_version_and_a_new_replica_reads_it(
    kafka_broker: Any, tiny_registry_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    root = tmp_path / "registry"
    shutil.copytree(tiny_registry_path, root)
    registry = ModelRegistry(root)
    first = registry.current_version()
    assert first is not None
    shutil.copytree(registry.path(first), registry.path("v2"))
    meta = registry.path("v2") / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": "v2"}))
    kafka = kafka_config(kafka_broker.bootstrap)
    monkeypatch.setenv("MONITOR__KAFKA__VERSIONS_TOPIC", kafka.versions_topic)
    args = ["model", "--registry", str(root)]
    assert main([*args, "promote", "v2", "--announce", kafka_broker.bootstrap]) == 0
    assert main([*args, "rollback", first, "--announce", kafka_broker.bootstrap]) == 0

    follower = VersionFollower(kafka)
    try:
        latest = follower.catch_up()
    finally:
        follower.close()
    assert latest is not None and latest.version == first and latest.event == "rollback"
    assert set(latest.checksums) >= {"meta.json", "model.safetensors"}
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, kafka.versions_topic)])
    finally:
        admin.close()
    assert "compact" in str(described)


def test_one_lease_holder_at_a_time_and_a_quick_takeover(kafka_broker: Any) -> None:
    ensure = kafka_config(kafka_broker.bootstrap, MONITOR__KAFKA__LEASE_TOPIC_PREFIX=f"lease-{uuid.uuid4().hex[:6]}-")
    ensure_versions_topic(ensure)
    first = Lease(ensure, "learner")
    assert first._consumer.config["heartbeat_interval_ms"] == 1000  # the configured heartbeat, not the client's 3 s
    deadline = time.monotonic() + 60
    while not first.held:
        assert time.monotonic() < deadline, "the first instance never got the lease"
    second = Lease(ensure, "learner")
    try:
        for _ in range(10):  # the newcomer joins, the group rebalances: never two holders at once
            assert not (first.held and second.held)
            time.sleep(0.3)
        assert first.keeps() and not second.held  # the sticky assignor gave the partition back to its holder
        first.close()
        left = time.monotonic()
        while not second.held:
            assert time.monotonic() - left < 30, "the standby did not take over"
        assert time.monotonic() - left < 15
    finally:
        second.close()
