"""``monitor run``: the daemon."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from monitor.config import ConfigError, MonitorConfig, describe_keys, load_config

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
    """The options of ``monitor run`` and of the role commands (``serve``, ``analytics``, ``learn``)."""
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


def checked_config(args: argparse.Namespace, prog: str) -> MonitorConfig | int:
    """The configuration, or the exit status: 2 when invalid (message on stderr), 0 after ``--check-config``."""
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
    return config


def create_topics(config: MonitorConfig) -> None:
    """Create the missing topics of the data flow (``kafka.create_topics``)."""
    from monitor.stream.admin import ensure_topics

    kafka = config.kafka
    if not kafka.create_topics:
        return
    names = [*kafka.input_topics, kafka.output_topic, kafka.dead_letter_topic, kafka.alerts_topic,
             kafka.labels_topic, kafka.label_requests_topic]
    created = ensure_topics(kafka, names, partitions=kafka.topic_partitions, replication=kafka.replication_factor)
    if created:
        log.info("created topics: %s", ", ".join(created))


def run(args: argparse.Namespace) -> int:
    config = checked_config(args, "monitor run")
    if isinstance(config, int):
        return config
    from monitor.logs import setup_logging

    setup_logging(config.logging.level, config.logging.json)
    # Heavy imports (torch, kafka) only once the config is known to be valid.
    from monitor.app import Monitor
    from monitor.metrics import Metrics, serve
    from monitor.serving import ModelNotFound
    try:
        create_topics(config)
        metrics = Metrics()
        learner = None
        if config.learning.enabled:
            from monitor.learn.online import build_learner

            learner = build_learner(config, metrics)
        monitor = Monitor(config, metrics=metrics, learner=learner)
    except ConfigError as err:
        print(f"monitor run: invalid configuration: {err}", file=sys.stderr)
        return 2
    except ModelNotFound as err:
        print(f"monitor run: {err}", file=sys.stderr)
        return 2
    if config.metrics.port:
        serve(config.metrics.host, config.metrics.port)
        log.info("metrics at http://%s:%d/metrics", config.metrics.host, config.metrics.port)
    monitor.install_signal_handlers()
    return monitor.run()
