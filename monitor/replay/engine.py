"""The direct backtest: a feed's micro-batches through the daemon's own per-batch loop, without Kafka.

Each batch of ``monitor.replay.schedule.plan_batches`` becomes the messages a poll would return
(items on the first input topic, labels on the labels topic, encoded as a producer would send
them) and goes through ``monitor.app.Monitor.handle`` over a ``MemorySource`` and a
``CollectorSink``: decode, classify (predictions, sentiment windows, surge alerts), publish,
hand labels to the learner, commit; between batches the monitor swaps in a newly promoted model,
as its run loop does. So the direct replay, ``--via-kafka`` and the daemon run the same code and
the delivery order is written once. Nothing depends on the wall clock except the optional
pacing (``--speed``) and the timing figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from monitor.config import MonitorConfig
from monitor.metrics import Metrics
from monitor.pipeline import Scorer
from monitor.records import Alert, Prediction
from monitor.replay.schedule import Batch, Pacer
from monitor.stream.memory import CollectorSink, MemorySource, item_body, label_body
from monitor.stream.source import RawMessage

if TYPE_CHECKING:
    from monitor.app import Learner

__all__ = ["ReplayLog", "batch_messages", "progress_bar", "run_direct"]

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


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="item", desc=desc, dynamic_ncols=True)


def batch_messages(batch: Batch, config: MonitorConfig, offsets: dict[str, int]) -> list[RawMessage]:
    """The messages one poll would return for ``batch`` (``offsets``: the next offset per topic, advanced)."""
    kafka = config.kafka
    topic = kafka.input_topics[0] if batch.kind == "items" else kafka.labels_topic
    received = time.monotonic()
    out = []
    for e in batch.events:
        if e.label is None:
            value, timestamp_ms = item_body(e.item), int(e.item.published_at.timestamp() * 1000)
        else:
            value, timestamp_ms = label_body(e.label), int(e.at * 1000)
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        out.append(RawMessage(topic, 0, offset, e.id.encode("utf-8"), value, timestamp_ms, received))
    return out


def run_direct(
    batches: Sequence[Batch],
    config: MonitorConfig,
    scorer: Scorer,
    *,
    learner: Learner | None = None,
    pacer: Pacer | None = None,
    progress: bool = True,
) -> ReplayLog:
    """Replay ``batches`` through ``Monitor.handle`` with ``scorer`` (and ``learner``, whose promotions
    are swapped in between batches); return the results in event order."""
    from monitor.app import Monitor

    out = ReplayLog("direct")
    pacer = pacer or Pacer()
    sink = CollectorSink()
    monitor = Monitor(config, metrics=Metrics(CollectorRegistry()), scorer=scorer, learner=learner,  # type: ignore[arg-type]
                      source=MemorySource(), sink=sink, watch_registry=learner is not None)
    offsets: dict[str, int] = {}
    started = time.perf_counter()
    try:
        with progress_bar(sum(len(b.items) for b in batches), progress, "replay") as bar:
            for batch in batches:
                pacer.wait_until(batch.end)
                outcome = monitor.handle(batch_messages(batch, config, offsets))
                out.infer_seconds += outcome.infer_seconds
                monitor.swap_if_changed()
                out.batches += 1
                bar.update(len(batch.items))
    finally:
        monitor.close()
    if sink.dead_letters:
        msg, reason, detail = sink.dead_letters[0]
        raise RuntimeError(f"the replay dead-lettered {len(sink.dead_letters)} messages (first: {reason}: {detail}; "
                           f"{(msg.value or b'')[:200]!r})")
    out.predictions, out.alerts = sink.predictions, sink.alerts
    out.wall_seconds = time.perf_counter() - started
    return out
