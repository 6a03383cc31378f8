"""``monitor run``: the daemon (all-in-one); the start-up shared with the roles of ``monitor.commands.roles``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from monitor.config import ConfigError, MonitorConfig, describe_keys, load_config

if TYPE_CHECKING:
    from monitor.roles import Worker

__all__ = ["add_parser"]

log = logging.getLogger(__name__)


def epilog() -> str:
    lines = ["configuration keys (YAML section.key; env override MONITOR__SECTION__KEY):", ""]
    for key, default, doc in describe_keys():
        lines.append(f"  {key} (default: {default})")
        lines.append(f"      {doc}")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="consume news/comments from Kafka, classify, publish results, metrics and alerts",
        description="Run the monitor daemon until SIGTERM/SIGINT (a second signal exits at once).",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``monitor run`` and of the roles (``serve``, ``analytics``, ``learn``)."""
    p.add_argument("--config", "-c", help="YAML config file (see keys below)")
    p.add_argument("--bootstrap", help="override kafka.bootstrap_servers")
    p.add_argument("--model", help="override model.path (a checkpoint or a model registry directory)")
    p.add_argument("--metrics-port", type=int, help="override metrics.port")
    p.add_argument("--check-config", action="store_true", help="validate the config, print it (secrets masked), exit")


def build_config(args: argparse.Namespace) -> MonitorConfig:
    env = dict(os.environ)
    if args.bootstrap:
        env["MONITOR__KAFKA__BOOTSTRAP_SERVERS"] = args.bootstrap
    if args.model:
        env["MONITOR__MODEL__PATH"] = args.model
    if args.metrics_port is not None:
        env["MONITOR__METRICS__PORT"] = str(args.metrics_port)
    return load_config(args.config, env=env)


def run(args: argparse.Namespace) -> int:
    return start("run", args)


def start(role: str, args: argparse.Namespace) -> int:
    """Validate, start and run ``role`` (``run`` or a role of ``monitor.commands.roles``) until a signal."""
    prog = f"monitor {role}"
    try:
        config = build_config(args)
    except ConfigError as err:
        print(f"{prog}: invalid configuration: {err}", file=sys.stderr)
        return 2
    if args.check_config:
        import json

        from monitor.learn.settings import parse_settings

        try:
            parse_settings(config.learning.settings)
        except ConfigError as err:
            print(f"{prog}: invalid configuration: {err}", file=sys.stderr)
            return 2
        print(json.dumps(config.redacted(), indent=2, default=str))
        return 0
    from monitor.logs import setup_logging

    setup_logging(config.logging.level, config.logging.json)
    # A signal during start-up (imports, model loading, waiting for the broker) stops cleanly, exit 0.
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if stopping:
            os._exit(130)
        stopping.append(signum)
        log.info("signal %s during start-up: stopping once started", signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    started = _start(role, config, stopping)
    if isinstance(started, int):
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        return started
    from monitor.app import install_stop_handlers

    install_stop_handlers(started.stop)
    if stopping:
        started.stop()
    return started.run()


def _start(role: str, config: MonitorConfig, stopping: list[int]) -> Worker | int:
    """The worker, built; or the exit status when it cannot start (2: configuration, model) or is stopped (0)."""
    # Heavy imports (torch, kafka) only once the config is known to be valid.
    from monitor.app import Monitor, check_model
    from monitor.metrics import Metrics, serve
    from monitor.roles import build_role
    from monitor.serving import ModelNotFound

    try:
        if role != "analytics":  # before the broker: a missing or broken model is exit 2 at once
            check_model(config.model.path)
        if not _wait_for_broker(config, stopping):
            return 0
        metrics = Metrics()
        worker: Worker
        if role == "run":
            learner = None
            if config.learning.enabled:
                from monitor.learn.online import build_learner

                learner = build_learner(config, metrics)
            worker = Monitor(config, metrics=metrics, learner=learner)
        else:
            worker = build_role(role, config, metrics)
    except ConfigError as err:
        print(f"monitor {role}: invalid configuration: {err}", file=sys.stderr)
        return 2
    except ModelNotFound as err:
        print(f"monitor {role}: {err}", file=sys.stderr)
        return 2
    if config.metrics.port:
        serve(config.metrics.host, config.metrics.port)
        log.info("metrics at http://%s:%d/metrics", config.metrics.host, config.metrics.port)
    return worker


def _wait_for_broker(config: MonitorConfig, stopping: list[int]) -> bool:
    """Create the topics (or just reach the cluster), retrying with backoff; False if a signal came first."""
    from monitor.stream.admin import BrokerUnavailable, ensure_topics

    kafka = config.kafka
    names = [*kafka.input_topics, kafka.output_topic, kafka.dead_letter_topic, kafka.alerts_topic,
             kafka.labels_topic, kafka.label_requests_topic] if kafka.create_topics else []
    since, delay = None, 0.5
    while not stopping:
        try:
            created = ensure_topics(kafka, names, partitions=kafka.topic_partitions,
                                    replication=kafka.replication_factor)
        except BrokerUnavailable as err:
            if since is None:
                since = time.time()
                log.error("broker unreachable since %s (%s); waiting for it",
                          time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)), err)
            else:
                log.warning("broker still unreachable (%.0f s); retry in %.1f s", time.time() - since, delay)
            deadline = time.monotonic() + delay
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.1)
            delay = min(delay * 2, kafka.outage_backoff_max_s)
            continue
        if created:
            log.info("created topics: %s", ", ".join(created))
        if since is not None:
            log.warning("broker reachable after %.1f s", time.time() - since)
        return True
    return False
