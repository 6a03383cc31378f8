"""The direct backtest loop: a feed's micro-batches through the daemon's ``Pipeline`` and learner.

For each batch of ``monitor.replay.schedule.plan_batches`` the engine does what
``monitor.app.Monitor.handle`` does for a polled batch, minus Kafka: classify the items
(``Pipeline.process``: predictions, sentiment windows, surge alerts), hand queued label requests
out, then ``observe`` the items, ``on_label`` the labels and ``persist`` the learner, and finally
swap in a newly promoted model, as the run loop does between batches. Nothing depends on the
wall clock except the optional pacing (``--speed``) and the timing figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.alerts import SurgeDetector
from monitor.config import MonitorConfig
from monitor.pipeline import ModelSlot, Pipeline, Scorer
from monitor.records import Alert, Prediction
from monitor.replay.schedule import Batch, Pacer
from monitor.trends import SentimentTrends

if TYPE_CHECKING:
    from monitor.app import Learner

__all__ = ["ModelSwapper", "ReplayLog", "build_pipeline", "progress_bar", "run_direct"]

log = logging.getLogger(__name__)


@dataclass
class ReplayLog:
    """What a replay produced, in event order."""

    path: str
    """``direct`` or ``kafka``."""
    predictions: list[Prediction] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    batches: int = 0
    wall_seconds: float = 0.0
    infer_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    """Path-specific figures (e.g. the Kafka topics used)."""


def build_pipeline(config: MonitorConfig, scorer: Scorer) -> Pipeline:
    """The daemon's pipeline for ``config`` (same windows, alert settings and watch list)."""
    return Pipeline(
        ModelSlot(scorer),
        SentimentTrends(config.metrics.windows_seconds),
        SurgeDetector(config.alerts),
        watch_tickers=config.metrics.watch_tickers,
    )


class ModelSwapper:
    """Swap the pipeline's model when the registry's ``CURRENT`` moves (the daemon's hot swap)."""

    def __init__(self, config: MonitorConfig, slot: ModelSlot) -> None:
        from monitor.serving import RegistryWatcher

        self.config = config
        self.slot = slot
        self.watcher = RegistryWatcher(config.model.path, slot.current.version)

    def __call__(self) -> None:
        from monitor.serving import load_predictor

        directory = self.watcher.changed()
        if directory is None:
            return
        predictor, _ = load_predictor(Path(directory), self.config.model)
        old = self.slot.swap(predictor)
        log.info("replay: swapped model %s -> %s", old.version, predictor.version)


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="item", desc=desc, dynamic_ncols=True)


def run_direct(
    batches: Sequence[Batch],
    pipeline: Pipeline,
    *,
    learner: Learner | None = None,
    swap: ModelSwapper | None = None,
    pacer: Pacer | None = None,
    progress: bool = True,
) -> ReplayLog:
    """Replay ``batches`` through ``pipeline`` (and ``learner``); return the results in event order."""
    out = ReplayLog("direct")
    pacer = pacer or Pacer()
    started = time.perf_counter()
    with progress_bar(sum(len(b.items) for b in batches), progress, "replay") as bar:
        for batch in batches:
            pacer.wait_until(batch.end)
            items = batch.items
            now = time.monotonic()
            outcome = pipeline.process(items, [now] * len(items))
            out.predictions.extend(outcome.predictions)
            out.alerts.extend(outcome.alerts)
            out.infer_seconds += outcome.infer_seconds
            if learner is not None:  # the order of Monitor.handle: requests out, observe, labels, persist
                learner.drain_label_requests()
                learner.observe(items, outcome.predictions)
                for label in batch.labels:
                    learner.on_label(label)
                learner.persist()
            if swap is not None:
                swap()
            out.batches += 1
            bar.update(len(items))
    if learner is not None:
        learner.close()
    out.wall_seconds = time.perf_counter() - started
    return out
