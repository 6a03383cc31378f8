"""The daemon's roles for scale-out (``monitor serve`` is ``monitor.app.Monitor`` without state).

``analytics`` and ``learner`` are single-owner roles: ``Elected`` waits for the role's lease and
only then builds the worker, so that a standby instance reads the offsets, the learner state and
the model registry as the previous owner left them, not as they were when it started.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from monitor.config import MonitorConfig
    from monitor.metrics import Metrics

log = logging.getLogger(__name__)

__all__ = ["Elected", "OwnerLoop", "Worker", "build_role", "rebuild_seconds"]


class Worker(Protocol):
    def run(self) -> int: ...

    def stop(self) -> None: ...


class OwnerLoop:
    """The run loop of a single-owner role: poll, ``handle``, ``between`` batches, until stopped or the
    lease is lost. Flushes and commits go through ``deliver``, retried like the daemon's
    (``monitor.resilience.Outage.retry``) for as long as a broker outage lasts."""

    role = "owner"

    def __init__(self, config: MonitorConfig, metrics: Metrics, source: Any, sink: Any, lease: Any) -> None:
        from monitor.resilience import Outage

        self.config, self.metrics, self.source, self.sink, self.lease = config, metrics, source, sink, lease
        self.outage = Outage(metrics, backoff_max_s=config.kafka.outage_backoff_max_s)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def handle(self, messages: Any) -> Any: ...

    def between(self) -> None:
        """Work between two batches (none by default)."""

    def deliver(self, messages: Any) -> None:
        """Flush the outputs, then commit ``messages`` (the at-least-once order), each retried."""
        from monitor.stream.sink import SinkError
        from monitor.stream.source import SourceError

        self.outage.retry("flush", self.sink.flush, self._stop, (SinkError,))
        self.outage.retry("commit", lambda: self.source.commit(messages), self._stop, (SourceError,))

    def run(self) -> int:
        from monitor.resilience import Abandoned

        batch = self.config.batch
        try:
            log.info("%s running", self.role)
            while not self._stop.is_set():
                messages = self.source.next_batch(batch.max_batch, batch.max_wait_ms)
                if messages:
                    self.handle(messages)
                if self.lease is not None and not self.lease.keeps():
                    log.warning("%s lease lost: stopping so that the new holder is the only one", self.role)
                    break
                self.between()
        except Abandoned as err:
            log.warning("%s", err)
        finally:
            self.close()
        return 0

    def close(self) -> None: ...


class Elected:
    """Run the worker that ``build(lease)`` makes once this instance holds ``lease``."""

    def __init__(self, lease: Any, build: Callable[[Any], Worker]) -> None:
        self.lease = lease
        self._build = build
        self._stop = threading.Event()
        self._worker: Worker | None = None

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.stop()

    def run(self) -> int:
        try:
            if not self.lease.wait(self._stop.is_set):
                return 0
            self._worker = self._build(self.lease)
            if self._stop.is_set():
                self._worker.stop()
            return self._worker.run()
        finally:
            self.lease.close()


def rebuild_seconds(config: MonitorConfig) -> float:
    """Kafka time the analytics owner re-reads at start to rebuild its windows and alert states."""
    a = config.alerts
    return a.window_seconds + a.baseline_seconds + a.hold_seconds + a.clear_seconds


def build_role(role: str, config: MonitorConfig, metrics: Metrics) -> Worker:
    """The worker of ``role`` wired to Kafka (``run()`` until ``stop()``)."""
    from monitor.stream.sink import KafkaSink
    from monitor.stream.versions import VersionAnnouncer, VersionFollower, ensure_versions_topic

    kafka = config.kafka
    if kafka.create_topics:
        ensure_versions_topic(kafka)
    if role == "serve":
        from monitor.app import Monitor

        return Monitor(config, metrics=metrics, learner=None, analytics=False, versions=VersionFollower(kafka))

    from monitor.stream.lease import Lease
    from monitor.stream.owned import OwnedSource

    if role == "analytics":
        from monitor.roles.analytics import AnalyticsOwner

        def analytics(lease: Lease) -> Worker:
            source = OwnedSource(kafka, [kafka.output_topic], f"{kafka.group_id}-analytics",
                                 rewind_ms=int(rebuild_seconds(config) * 1000))
            return AnalyticsOwner(config, metrics=metrics, source=source, sink=KafkaSink(kafka), lease=lease)

        return Elected(Lease(kafka, "analytics"), analytics)
    if role == "learn":
        from monitor.learn.online import build_learner
        from monitor.roles.learner import LearnerRole

        def learner(lease: Lease) -> Worker:
            source = OwnedSource(kafka, [kafka.output_topic, kafka.labels_topic], f"{kafka.group_id}-learner")
            return LearnerRole(config, metrics=metrics, learner=build_learner(config, metrics), source=source,
                               sink=KafkaSink(kafka), announcer=VersionAnnouncer(kafka),
                               follower=VersionFollower(kafka), lease=lease)

        return Elected(Lease(kafka, "learner"), learner)
    raise ValueError(f"unknown role {role!r}")
