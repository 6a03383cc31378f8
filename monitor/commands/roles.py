"""``monitor serve``, ``monitor analytics``, ``monitor learn``: the daemon split into roles for scale-out.

All three take the same options and configuration as ``monitor run`` (the all-in-one):

- ``serve``: a stateless serving replica (decode, classify, publish results and dead letters);
  run N of them in one consumer group, up to the input partition count. It follows the model
  versions announced on ``kafka.versions_topic``.
- ``analytics``: the single owner of the sentiment index and the surge alerts, over all of
  ``predictions`` (a second instance waits).
- ``learn``: the single learner: label join, drift, training, gate, registry, announcements
  (a second instance waits). Run it where the GPU is.
"""

from __future__ import annotations

import argparse
import functools
import logging
from typing import TYPE_CHECKING

from monitor.commands import run as run_command
from monitor.config import MonitorConfig
from monitor.roles import Elected, Worker

if TYPE_CHECKING:
    from monitor.metrics import Metrics

__all__ = ["ROLES", "add_parser", "build_role"]

log = logging.getLogger(__name__)

ROLES: dict[str, str] = {
    "serve": "a stateless serving replica: classify news/comments, publish results (scale out: run N)",
    "analytics": "the single owner of sentiment indexes and surge alerts over all predictions",
    "learn": "the single continual learner: joins labels, trains, gates, announces model versions",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    for role, summary in ROLES.items():
        p = subparsers.add_parser(role, help=summary, description=f"monitor {role}: {summary}.",
                                  epilog=run_command.epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
        run_command.add_arguments(p)
        p.set_defaults(func=functools.partial(run_command.start, role))


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
