"""One backtest from feed files to an output directory: what ``monitor replay`` runs.

Steps: seed every random generator; load the serving model (and, with learning, copy it into a
private registry under the output directory, so that a replay never promotes into the real one);
read and validate the feeds; plan the micro-batches; run them directly or ``--via-kafka``; write
the tables, ``summary.json`` and ``report.html``.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from monitor.config import MonitorConfig
from monitor.replay import outputs, report
from monitor.replay.engine import ReplayLog, run_direct
from monitor.replay.feeds import events_of, read_feeds
from monitor.replay.learning import EventClock, LearnerTap, iso
from monitor.replay.schedule import Pacer, plan_batches

__all__ = ["LearnerFactory", "ReplayOptions", "replay"]

log = logging.getLogger(__name__)

#: ``(config, clock, metrics) -> learner``: builds the learner of a replay (``config.model.path`` is the
#: replay's private registry). The default is ``monitor.learn.online.build_learner`` on the event-time clock.
LearnerFactory = Callable[[MonitorConfig, EventClock, Any], Any]


@dataclass(frozen=True)
class ReplayOptions:
    feeds: tuple[Path, ...]
    out: Path
    fmt: str = "parquet"
    """Format of predictions: parquet or csv."""
    bucket: str = "1h"
    """Time bucket of trends.csv and prequential.csv (a pandas frequency)."""
    speed: float = 0.0
    """Event time runs this many times faster than wall time; 0: as fast as possible (no effect on results)."""
    batching: str = "live"
    """live: batches close batch.max_wait_ms of event time after their first item; backlog: always full."""
    seed: int = 0
    learn: bool = False
    via_kafka: bool = False
    progress: bool = True
    keep_topics: bool = False
    sweep: tuple[tuple[str, tuple[float, ...]], ...] = ()
    """alerts.* settings to sweep: ``(key, values)`` pairs (``quality.parse_grid``); empty: no sweep."""
    min_bucket_count: int = 10
    """Report: buckets with fewer items are masked."""
    learner_factory: LearnerFactory | None = field(default=None, compare=False)


def _seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _replay_settings(settings: Any, seed: int) -> dict[str, Any]:
    """Learner settings a replay fixes: state starts empty in the private registry, the seed is
    ``--seed``, and no wall-clock budget cuts a training run short (a replay must be repeatable)."""
    return {**dict(settings), "state_dir": "", "seed": seed, "max_training_s": 1e9}


def _private_registry(config: MonitorConfig, out: Path, seed: int) -> MonitorConfig:
    """Copy the serving version into ``out/registry``; return ``config`` pointing at that copy."""
    from monitor.registry import ModelRegistry
    from monitor.serving import resolve_model_dir

    source = resolve_model_dir(config.model.path)
    root = out / "registry"
    if root.exists():
        shutil.rmtree(root)
    registry = ModelRegistry(root).init()
    version = json.loads((source / "meta.json").read_text(encoding="utf-8"))["version"]
    shutil.copytree(source, registry.path(version))
    registry.set_current(version, event="promoted", reason=f"replay copy of {source}")
    learning = replace(config.learning, enabled=True, settings=_replay_settings(config.learning.settings, seed))
    return replace(config, model=replace(config.model, path=str(root)), learning=learning)


def _default_learner(config: MonitorConfig, clock: EventClock, metrics: Any) -> Any:
    """The daemon's learner on event time, naming retrained versions ``<serving>-r<run>`` (stable),
    its buffer in memory (the state of a replay is thrown away; promoted versions stay in the registry)."""
    from monitor.learn.online import build_learner
    from monitor.registry import ModelRegistry

    initial = ModelRegistry(config.model.path).current_version()
    return build_learner(config, metrics, clock=clock, version_name=lambda run: f"{initial}-r{run}",
                         save_state=False, event_time=True)


def replay(config: MonitorConfig, options: ReplayOptions) -> dict[str, Any]:
    """Run the backtest of ``options`` under ``config``; write the outputs; return the summary."""
    from prometheus_client import CollectorRegistry

    from monitor.metrics import Metrics
    from monitor.serving import load_predictor, resolve_model_dir

    outputs.check_bucket(options.bucket)
    if options.fmt not in ("parquet", "csv"):
        raise ValueError(f"unknown format {options.fmt!r} (parquet or csv)")
    if options.batching not in ("live", "backlog"):
        raise ValueError(f"unknown batching {options.batching!r} (live or backlog)")
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    _seed(options.seed)
    if options.learn:
        config = _private_registry(config, out, options.seed)
    else:  # pin the serving version: a registry's CURRENT may move during the replay (a live learner)
        config = replace(config, model=replace(config.model, path=str(resolve_model_dir(config.model.path))))
    predictor, loaded = load_predictor(resolve_model_dir(config.model.path), config.model)
    rows = read_feeds(options.feeds, topics=loaded.meta.topics, sentiments=loaded.meta.sentiments,
                      max_text_chars=config.batch.max_text_chars)
    events = events_of(rows)
    label_events = [e for e in events if e.kind == "label"]
    tap: LearnerTap | None = None
    if options.learn:
        clock, registry = EventClock(), CollectorRegistry()
        inner = (options.learner_factory or _default_learner)(config, clock, Metrics(registry))
        tap = LearnerTap(inner, clock, {e.id: e.at for e in label_events}, registry=registry)
    window = config.batch.max_wait_ms / 1000.0 if options.batching == "live" else None
    batches = plan_batches(events, max_batch=config.batch.max_batch, with_labels=tap is not None, window_s=window)
    pacer = Pacer(options.speed)
    if options.via_kafka:
        from monitor.replay.via_kafka import run_via_kafka

        del predictor  # the daemon loads its own copy of the same checkpoint
        result = run_via_kafka(batches, config, learner=tap, pacer=pacer, progress=options.progress,
                               keep_topics=options.keep_topics)
    else:
        result = run_direct(batches, config, predictor, learner=tap, pacer=pacer, progress=options.progress)
    if len(result.predictions) != len(rows):
        raise RuntimeError(f"the replay produced {len(result.predictions)} predictions for {len(rows)} items")
    learning_events = tap.events if tap is not None else []
    learning = {"enabled": tap is not None, **_learning_summary(learning_events)}
    summary = write_outputs(out, result, label_events, learning_events, options, config, feed_files=options.feeds,
                            learning=learning)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return summary


def _learning_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    training = Counter(str(e.get("outcome")) for e in events if e["type"] == "training")
    return {
        "drift_detections": sum(1 for e in events if e["type"] == "drift"),
        "training_runs": dict(sorted(training.items())),
        "label_requests": sum(int(e.get("count", 0)) for e in events if e["type"] == "label_requests"),
        "model_swaps": sum(1 for e in events if e["type"] == "model_swap"),
    }


def write_outputs(
    out: Path,
    result: ReplayLog,
    label_events: list[Any],
    learning_events: list[dict[str, Any]],
    options: ReplayOptions,
    config: MonitorConfig,
    *,
    feed_files: tuple[Path, ...] = (),
    learning: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write every table and the report; return the summary (not yet written)."""
    from monitor.replay import quality as q

    predictions = outputs.predictions_frame(result.predictions, label_events)
    trends = outputs.trends_frame(predictions, options.bucket)
    labels = outputs.labels_frame(predictions)
    prequential = outputs.prequential_frame(labels, options.bucket)
    watch = config.metrics.watch_tickers
    stats: list[Any] = []
    by_id = {e.id: e.label for e in label_events if e.label is not None}
    found = q.evaluate(result.predictions, by_id, config.alerts, watch, on_stats=stats.append)
    if [a.to_json() for a in found.model] != [a.to_json() for a in result.alerts]:
        log.warning("replay: alerts recomputed from the predictions differ from the pipeline's; the report and "
                    "alert_quality use the recomputed ones")
    files = {
        "predictions": outputs.write_table(predictions, out / "predictions", options.fmt),
        "trends": outputs.write_table(trends, out / "trends", "csv"),
        "prequential": outputs.write_table(prequential, out / "prequential", "csv"),
        "alert_stats": outputs.write_table(outputs.alert_stats_frame(stats), out / "alert_stats", "csv"),
        "alerts": outputs.write_jsonl(result.alerts, out / "alerts.jsonl"),
        "truth_alerts": outputs.write_jsonl(found.truth, out / "truth_alerts.jsonl"),
        "events": outputs.write_jsonl(learning_events, out / "events.jsonl"),
    }
    alerts = [json.loads(a.to_json()) for a in result.alerts]
    n = len(result.predictions)
    labelled = sum(1 for p in result.predictions if p.id in by_id and by_id[p.id].sentiment)
    summary: dict[str, Any] = {
        "path": result.path,
        "feeds": [str(f) for f in feed_files],
        "items": n,
        "labels": len(label_events),
        "first_published_at": iso(float(predictions["published_at"].min().timestamp())) if n else None,
        "last_published_at": iso(float(predictions["published_at"].max().timestamp())) if n else None,
        "batches": result.batches,
        "batching": options.batching,
        "seed": options.seed,
        "bucket": options.bucket,
        "model_versions": list(dict.fromkeys(p.model_version for p in result.predictions)),
        "alerts": {"raised": sum(a["state"] == "raised" for a in alerts),
                   "cleared": sum(a["state"] == "cleared" for a in alerts),
                   "by_scope": {scope: {"raised": sum(a["state"] == "raised" and a["scope"] == scope for a in alerts),
                                        "cleared": sum(a["state"] == "cleared" and a["scope"] == scope
                                                       for a in alerts)}
                                for scope in ("topic", "ticker")}},
        "alert_quality": {"scores": found.scores,
                          "truth": {"coverage": round(labelled / n, 4) if n else None,
                                    "min_count": found.truth_config.min_count,
                                    "min_baseline_count": found.truth_config.min_baseline_count,
                                    "raised": sum(a.state == "raised" for a in found.truth)}},
        "accuracy": {head: _accuracy(labels, head) for head in outputs.HEADS},
        "timing": {"wall_seconds": round(result.wall_seconds, 3),
                   "items_per_second": round(n / result.wall_seconds, 1) if result.wall_seconds else None,
                   "infer_seconds": round(result.infer_seconds, 3) if result.path == "direct" else None},
        "learning": learning or {"enabled": False},
        **({"kafka": result.extra} if result.extra else {}),
    }
    if options.sweep:
        rows = q.sweep(result.predictions, by_id, config.alerts, watch, dict(options.sweep))
        files["sweep"] = outputs.write_table(outputs.rows_frame(rows), out / "sweep", "csv")
        summary["sweep"] = rows
    end = float(predictions["published_at"].max().timestamp()) if n else 0.0
    data = report.ReportData(
        summary=summary, stats=outputs.alert_stats_frame(stats), predictions=predictions, labels=labels,
        alerts=alerts, model_spans=q.alert_spans(result.alerts, end), truth_spans=q.alert_spans(found.truth, end),
        events=learning_events, bucket=options.bucket, min_count=config.alerts.min_count,
        min_bucket_count=options.min_bucket_count, watch_tickers=watch)
    files["report"] = report.write_report(out / "report.html", data)
    summary["files"] = {name: path.name for name, path in files.items()}
    return summary


def _accuracy(labels: Any, head: str) -> dict[str, Any]:
    rows = labels[labels["head"] == head]
    return {"labels": len(rows), "accuracy": round(float(rows["correct"].mean()), 4) if len(rows) else None}
