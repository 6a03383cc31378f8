"""``monitor replay FEED...``: backtest historical feeds through the same pipeline, write a report."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

__all__ = ["add_parser"]


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay",
        help="backtest JSONL/CSV/Parquet feeds through the pipeline (and learner); tables + HTML report",
        description="Replay historical feeds in event-time order through the daemon's pipeline, with labels "
                    "reaching the learner label_delay_s after publication, and write predictions, trends, "
                    "alerts, learning events, prequential accuracy, summary.json and report.html to --out. "
                    "See docs/replay.md.",
    )
    p.add_argument("feeds", nargs="+", type=Path, metavar="FEED",
                   help="feed files (.jsonl, .csv or .parquet): input fields + optional topic, sentiment, "
                        "label_delay_s, label_source")
    p.add_argument("--out", "-o", type=Path, required=True, help="output directory (created; files overwritten)")
    p.add_argument("--config", "-c", help="YAML config file (batch, model, metrics, alerts, learning, kafka)")
    p.add_argument("--model", help="override model.path (a checkpoint or a model registry directory)")
    p.add_argument("--format", dest="fmt", choices=("parquet", "csv"), default="parquet",
                   help="format of the predictions table (default: parquet)")
    p.add_argument("--bucket", default="1h", help="time bucket of trends and prequential tables (default: 1h)")
    p.add_argument("--speed", type=_positive, default=None,
                   help="replay at X times real time, sleeping over event-time gaps (default: as fast as possible; "
                        "results do not depend on it)")
    p.add_argument("--batching", choices=("live", "backlog"), default="live",
                   help="live (default): micro-batches as a daemon forms them when the feed arrives in real time "
                        "(closed batch.max_wait_ms after their first item); backlog: always batch.max_batch items "
                        "(faster; alerts are checked per item either way)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    learn = p.add_mutually_exclusive_group()
    learn.add_argument("--learn", dest="learn", action="store_true", default=None,
                       help="continual learning on the feed's labels (default: the config's learning.enabled)")
    learn.add_argument("--no-learn", dest="learn", action="store_false", help="no learning")
    p.add_argument("--via-kafka", action="store_true",
                   help="go through the real broker and the daemon's run loop (fresh replay-* topics)")
    p.add_argument("--bootstrap", help="override kafka.bootstrap_servers (with --via-kafka)")
    p.add_argument("--keep-topics", action="store_true", help="keep the replay-* topics (with --via-kafka)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--sweep", nargs="*", metavar="KEY=V1,V2", default=None,
                   help="after the replay, recompute the alerts and their ground truth for every combination of "
                        "these alerts.* settings (e.g. ratio=1.5,2,3 min_count=10,20) and print precision, recall "
                        "and detection delay per scope and setting (also DIR/sweep.csv); --sweep alone: "
                        "ratio=1.5,2,3 min_count=5,10,20")
    p.add_argument("--min-bucket-count", type=int, default=10,
                   help="report: mask time buckets with fewer items than this (default: 10)")
    p.set_defaults(func=replay)


def replay(args: argparse.Namespace) -> int:
    from monitor.config import ConfigError, load_config

    env = dict(os.environ)
    if args.model:
        env["MONITOR__MODEL__PATH"] = args.model
    if args.bootstrap:
        env["MONITOR__KAFKA__BOOTSTRAP_SERVERS"] = args.bootstrap
    try:
        config = load_config(args.config, env=env)
    except ConfigError as err:
        print(f"monitor replay: invalid configuration: {err}", file=sys.stderr)
        return 2
    from monitor.logs import setup_logging

    setup_logging(config.logging.level, config.logging.json)
    from monitor.replay import quality
    from monitor.replay.feeds import FeedError
    from monitor.replay.runner import ReplayOptions
    from monitor.replay.runner import replay as run_replay
    from monitor.serving import ModelNotFound

    try:
        grid = (quality.parse_grid(args.sweep) or quality.DEFAULT_GRID) if args.sweep is not None else {}
        quality.settings(config.alerts, grid)
    except ValueError as err:
        print(f"monitor replay: {err}", file=sys.stderr)
        return 2
    options = ReplayOptions(
        feeds=tuple(args.feeds), out=args.out, fmt=args.fmt, bucket=args.bucket, speed=args.speed or 0.0,
        seed=args.seed, batching=args.batching, learn=config.learning.enabled if args.learn is None else args.learn,
        via_kafka=args.via_kafka, progress=not args.no_progress, keep_topics=args.keep_topics,
        sweep=tuple(grid.items()), min_bucket_count=args.min_bucket_count,
    )
    def interrupt(_signum: int, _frame: object) -> None:  # SIGTERM like Ctrl-C: --via-kafka cleans up
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        summary = run_replay(config, options)
    except KeyboardInterrupt:
        print("monitor replay: interrupted; outputs are incomplete", file=sys.stderr)
        return 130
    except FeedError as err:
        print(f"monitor replay: invalid feed:\n{err}", file=sys.stderr)
        return 2
    except (ConfigError, ModelNotFound, ValueError) as err:
        print(f"monitor replay: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as err:  # --via-kafka: broker unreachable, daemon stopped or stuck
        print(f"monitor replay: {err}", file=sys.stderr)
        return 1
    acc = summary["accuracy"]
    timing = summary["timing"]
    print(f"replayed {summary['items']} items and {summary['labels']} labels ({summary['path']}) in "
          f"{timing['wall_seconds']} s ({timing['items_per_second']} items/s); alerts raised: "
          f"{summary['alerts']['raised']}; accuracy topic {acc['topic']['accuracy']}, "
          f"sentiment {acc['sentiment']['accuracy']}; report: {args.out / 'report.html'}")
    scores = summary["alert_quality"]["scores"]
    truth = summary["alert_quality"]["truth"]
    if not truth["coverage"]:
        print("alert quality: the feed has no sentiment labels, so there is no ground truth to compare with")
        return 0
    print(f"alert quality against the labelled surges ({truth['raised']} true surges; same definition on the "
          f"labels, {truth['coverage']} of items labelled, min_count {truth['min_count']}):")
    print(quality.format_rows([{"scope": scope, **figures} for scope, figures in scores.items()]))
    if "sweep" in summary:
        print(f"sweep over {', '.join(grid)} ({len(summary['sweep']) // len(quality.SCOPES)} settings; "
              f"{args.out / 'sweep.csv'}):")
        print(quality.format_rows(summary["sweep"]))
    return 0
