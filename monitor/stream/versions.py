"""Model versions announced on a compacted Kafka topic (default ``model-versions``).

The learner (the only writer of versions) announces every promotion and every rollback as one
JSON record keyed by version; the topic has one partition, so offsets order the records, and
it is compacted, so it keeps the newest record of each version for ever. The newest record is
the serving version. A serving replica reads the topic from the beginning at start
(``VersionFollower``) and then keeps reading it between batches: whatever was announced last
is what it should serve, however long it was down.

Record (``model-versions``, key = version)::

    {"version": "run-0003", "parent": "demo-v1", "event": "promoted",
     "location": "/shared/models/versions/run-0003", "checksums": {"model.safetensors": "9f…"},
     "gate": {"decision": "promote", "improvement": 0.041, "n": 412},
     "created_at": "2026-03-03T14:05:00+00:00", "announced_at": "2026-03-03T14:06:10+00:00"}
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from monitor.artifacts import Artifact, ArtifactError, ArtifactStore, DirectoryStore
from monitor.config import KafkaConfig
from monitor.registry import ModelRegistry
from monitor.stream.admin import ensure_topics

__all__ = ["AnnouncedVersions", "VersionAnnouncement", "VersionAnnouncer", "VersionFollower", "announcement",
           "ensure_versions_topic"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionAnnouncement:
    version: str
    location: str
    checksums: dict[str, str]
    parent: str | None = None
    event: str = "promoted"
    """``promoted`` (by the learner's gate or ``model add --promote``) or ``rollback``."""
    gate: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    announced_at: str = ""

    @property
    def artifact(self) -> Artifact:
        return Artifact(self.version, self.location, dict(self.checksums))

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> VersionAnnouncement:
        body = json.loads(raw.decode("utf-8"))
        if not isinstance(body, dict) or not isinstance(body.get("version"), str):
            raise ValueError("not a model-version record (no 'version')")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in body.items() if k in known})


def announcement(registry: ModelRegistry, version: str, store: ArtifactStore | None = None) -> VersionAnnouncement:
    """The record for ``version`` of ``registry``, published to ``store`` (default: the registry's versions)."""
    store = store or DirectoryStore(registry.root / "versions")
    artifact = store.publish(version, registry.path(version))
    meta = json.loads((registry.path(version) / "meta.json").read_text(encoding="utf-8"))
    history = [e for e in registry.history() if e.get("version") == version]
    event: Mapping[str, Any] = history[-1] if history else {}
    return VersionAnnouncement(
        version=version, location=artifact.location, checksums=artifact.checksums, parent=meta.get("parent"),
        event="rollback" if event.get("event") == "rollback" else "promoted",
        gate={k: v for k, v in event.items() if k not in ("at", "event", "version")},
        created_at=str(meta.get("created_at", "")))


def ensure_versions_topic(config: KafkaConfig) -> None:
    """Create the compacted, single-partition versions topic if it is missing."""
    ensure_topics(config, [config.versions_topic], partitions=1, replication=config.replication_factor,
                  topic_configs={"cleanup.policy": "compact"})


class VersionAnnouncer:
    """Publishes announcements; ``announce`` returns once the broker has acknowledged."""

    def __init__(self, config: KafkaConfig) -> None:
        self.topic = config.versions_topic
        self._producer = KafkaProducer(client_id=f"{config.client_id}-versions", acks="all",
                                       **config.client_options())

    def announce(self, record: VersionAnnouncement) -> None:
        if not record.announced_at:
            record = VersionAnnouncement(**{**asdict(record),
                                            "announced_at": datetime.now(UTC).isoformat(timespec="seconds")})
        self._producer.send(self.topic, value=record.to_json(), key=record.version.encode()).get(timeout=30)
        log.info("announced model version %s (%s) on %s", record.version, record.event, self.topic)

    def close(self) -> None:
        self._producer.close(timeout=10)


class VersionFollower:
    """Reads the versions topic from its beginning; ``poll()`` returns a newer announcement once."""

    def __init__(self, config: KafkaConfig) -> None:
        self._consumer = KafkaConsumer(client_id=f"{config.client_id}-versions", group_id=None,
                                       enable_auto_commit=False, **config.client_options())
        self._tp = TopicPartition(config.versions_topic, 0)
        self._consumer.assign([self._tp])
        self._consumer.seek_to_beginning(self._tp)
        self._latest: VersionAnnouncement | None = None
        self._delivered: str | None = None

    @property
    def latest(self) -> VersionAnnouncement | None:
        """The newest announcement read so far (the version every replica should serve)."""
        return self._latest

    def catch_up(self, timeout_s: float = 10.0) -> VersionAnnouncement | None:
        """Read up to the end of the topic as it is now (at start); return the newest record."""
        try:
            end = self._consumer.end_offsets([self._tp]).get(self._tp, 0)
        except KafkaError as err:
            log.warning("model-versions topic unreadable (%s); serving the model on disk", err)
            return self._latest
        deadline = time.monotonic() + timeout_s
        while self._consumer.position(self._tp) < end and time.monotonic() < deadline:
            self._read(200)
        return self._latest

    def poll(self) -> VersionAnnouncement | None:
        """The newest announcement if it differs from the one last returned, else None."""
        self._read(0)
        if self._latest is None or self._latest.version == self._delivered:
            return None
        return self._latest

    def delivered(self, version: str) -> None:
        """The caller now serves ``version``: ``poll`` stays quiet until a different one is announced."""
        self._delivered = version

    def _read(self, timeout_ms: int) -> None:
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as err:
            log.warning("cannot read the model-versions topic: %s", err)
            return
        for records in batches.values():
            for r in records:
                try:
                    self._latest = VersionAnnouncement.from_json(r.value or b"")
                except (ValueError, TypeError, UnicodeDecodeError) as err:
                    log.warning("ignoring a malformed model-versions record at offset %d: %s", r.offset, err)

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class AnnouncedVersions:
    """A serving replica's view of the versions topic, with the interface of ``serving.RegistryWatcher``.

    ``changed()`` polls the follower and, for a newly announced version, fetches its artifact
    (every file's sha256 checked) and returns the verified directory. A fetch, or a load the
    caller reports with ``failed``, is retried after a doubling backoff up to ``retry_max_s``,
    while the replica keeps serving the model it has; ``loaded`` marks the version as served.
    """

    def __init__(self, follower: VersionFollower, store: ArtifactStore, serving_version: str,
                 retry_max_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.follower = follower
        self.store = store
        self.retry_max_s = retry_max_s
        self._clock = clock
        self._backoff = 0.0
        self._retry_at = float("-inf")
        self.follower.delivered(serving_version)

    def changed(self) -> Path | None:
        record = self.follower.poll()
        if record is None or self._clock() < self._retry_at:
            return None
        try:
            return self.store.fetch(record.artifact)
        except ArtifactError as err:
            log.warning("model version %s not fetched (%s); the old one keeps serving", record.version, err)
            self.failed(record.version)
            return None

    def failed(self, version: str) -> float:
        """Loading ``version`` failed: try it again after the backoff (returned, in seconds)."""
        self._backoff = min(self.retry_max_s, max(1.0, self._backoff * 2))
        self._retry_at = self._clock() + self._backoff
        return self._backoff

    def loaded(self, version: str) -> None:
        self.follower.delivered(version)
        self._backoff = 0.0
