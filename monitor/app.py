"""Wiring and the run loop of the daemon: source -> pipeline -> sink, metrics, alerts, learner.

Order of one micro-batch (at-least-once; this is the one place it is written down):

1. poll a batch of raw messages (up to ``batch.max_batch`` or ``batch.max_wait_ms``);
2. decode; a bad message is sent to the dead-letter topic with its reason;
3. classify the good ones (``Pipeline.process``) and send one result each, plus any alerts;
4. flush the producer: the broker has acknowledged every result, dead letter and alert;
5. hand items, predictions and labels to the learner, which stores labelled examples;
6. commit the batch's offsets.

A crash anywhere before 6 re-reads the batch after restart: duplicates are possible, losses
are not. Slow work never blocks polling: training runs in the learner's worker thread, and
between two polls the loop only classifies one bounded micro-batch (kafka-python heartbeats
from its own thread), far below ``max_poll_interval_ms``. While the learner trains, serving
goes on with the current model; a promoted model is swapped in between batches.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from monitor.alerts import SurgeDetector
from monitor.config import MonitorConfig
from monitor.metrics import Metrics
from monitor.model.predictor import Predictor
from monitor.pipeline import BatchOutcome, ModelSlot, Pipeline
from monitor.records import Label, NewsItem, Prediction
from monitor.serving import RegistryWatcher, load_predictor, resolve_model_dir
from monitor.stream.codec import DecodeError, decode_item, decode_label
from monitor.stream.sink import KafkaSink
from monitor.stream.source import KafkaSource, RawMessage
from monitor.trends import SentimentTrends

__all__ = ["Learner", "Monitor"]

log = logging.getLogger(__name__)


class Learner(Protocol):
    """The continual-learning side, fed by the run loop (see ``monitor.learn``)."""

    def observe(self, items: Sequence[NewsItem], predictions: Sequence[Prediction]) -> None: ...

    def on_label(self, label: Label) -> None: ...

    def persist(self) -> None: ...

    def drain_label_requests(self) -> list[tuple[str, bytes]]: ...

    def close(self) -> None: ...


@dataclass
class _Totals:
    consumed: int = 0
    published: int = 0
    dead: int = 0
    alerts: int = 0
    batches: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)


class Monitor:
    """One daemon instance. Build it, then ``run()`` until ``stop()`` (or a signal)."""

    def __init__(
        self,
        config: MonitorConfig,
        *,
        metrics: Metrics | None = None,
        scorer: Predictor | None = None,
        learner: Learner | None = None,
        source: KafkaSource | None = None,
        sink: KafkaSink | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        injected = scorer
        if scorer is None:
            scorer, loaded = load_predictor(resolve_model_dir(config.model.path), config.model)
            self._set_model_metrics(loaded.meta.version, loaded.meta.created_timestamp, loaded.meta.parent)
        else:
            self._set_model_metrics(scorer.version, time.time(), None)
        self._topics: tuple[str, ...] = tuple(scorer.model.topics)
        self._sentiments: tuple[str, ...] = tuple(scorer.model.sentiments)
        self.slot = ModelSlot(scorer)
        # An injected scorer (tests, replays) is never swapped; a configured registry is watched.
        self.watcher = RegistryWatcher(config.model.path, scorer.version, enabled=injected is None)
        self.pipeline = Pipeline(
            self.slot,
            SentimentTrends(config.metrics.windows_seconds),
            SurgeDetector(config.alerts),
            watch_tickers=config.metrics.watch_tickers,
        )
        self.learner = learner
        kafka = config.kafka
        topics = list(kafka.input_topics) + ([kafka.labels_topic] if learner is not None else [])
        self.source = source or KafkaSource(kafka, topics, max_poll_records=max(config.batch.max_batch, 1))
        self.sink = sink or KafkaSink(kafka)
        self._stop = threading.Event()
        self._totals = _Totals()
        self._last_summary = time.monotonic()
        self._last_lag = 0.0
        self._lag_series: set[tuple[str, str]] = set()
        self._signals = 0

    # --- control ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, flush, commit and return."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: graceful stop; a second signal exits at once (status 130)."""

        def handle(signum: int, _frame: Any) -> None:
            self._signals += 1
            if self._signals > 1:
                log.error("second signal %s: exiting now without flushing", signum)
                import os

                os._exit(130)
            log.info("signal %s: finishing the batch in hand, then stopping", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # --- loop --------------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.config
        log.info("monitor running: inputs=%s output=%s model=%s", ",".join(cfg.kafka.input_topics),
                 cfg.kafka.output_topic, self.slot.current.version)
        try:
            while not self._stop.is_set():
                messages = self.source.next_batch(cfg.batch.max_batch, cfg.batch.max_wait_ms)
                if messages:
                    self.handle(messages)
                self._maybe_swap_model()
                self._maybe_report()
        finally:
            self.close()
        return 0

    def handle(self, messages: Sequence[RawMessage]) -> BatchOutcome:
        """Steps 2-6 of the module docstring for one polled batch."""
        m, kafka, cfg = self.metrics, self.config.kafka, self.config
        t0 = time.perf_counter()
        items: list[NewsItem] = []
        received: list[float] = []
        labels: list[Label] = []
        for msg in messages:
            m.consumed.labels(topic=msg.topic).inc()
            try:
                if msg.topic == kafka.labels_topic and self.learner is not None:
                    labels.append(decode_label(msg.value or b"", topics=self._topics or None,
                                               sentiments=self._sentiments or None))
                    continue
                items.append(decode_item(msg.value if msg.value is not None else b"null",
                                         max_text_chars=cfg.batch.max_text_chars,
                                         topics=self._topics or None, sentiments=self._sentiments or None))
                received.append(msg.received_at)
            except DecodeError as err:
                self.sink.dead_letter(msg, err.reason, err.detail)
                m.dead_lettered.labels(reason=err.reason).inc()
                self._totals.dead += 1
                self._totals.by_reason[err.reason] += 1
        t1 = time.perf_counter()
        outcome = self.pipeline.process(items, received)
        stats = getattr(self.slot.current, "last_stats", None)
        for p in outcome.predictions:
            self.sink.prediction(p)
        for a in outcome.alerts:
            self.sink.alert(a)
        if self.learner is not None:
            for item_id, body in self.learner.drain_label_requests():
                self.sink.label_request(item_id, body)
                m.label_requests.inc()
        t2 = time.perf_counter()
        self.sink.flush()  # step 4: raises SinkError -> no commit -> the batch is re-read
        t3 = time.perf_counter()
        if self.learner is not None:
            self.learner.observe(items, outcome.predictions)
            for label in labels:
                self.learner.on_label(label)
            self.learner.persist()
        self.source.commit(messages)
        t4 = time.perf_counter()
        self._record(outcome, len(messages), (t0, t1, t2, t3, t4), stats)
        return outcome

    # --- bookkeeping ---------------------------------------------------------------------------------
    def _record(self, outcome: BatchOutcome, n_messages: int, t: tuple[float, ...], stats: Any) -> None:
        m = self.metrics
        t0, t1, t2, t3, t4 = t
        m.stage_latency.labels(stage="decode").observe(t1 - t0)
        if stats is not None and outcome.predictions:
            infer = sum(stats.batch_seconds)
            m.stage_latency.labels(stage="tokenize").observe(max(0.0, stats.seconds - infer))
            m.stage_latency.labels(stage="infer").observe(infer)
        elif outcome.predictions:
            m.stage_latency.labels(stage="infer").observe(outcome.infer_seconds)
        m.stage_latency.labels(stage="publish").observe(t3 - t1 - outcome.infer_seconds)
        m.stage_latency.labels(stage="commit").observe(t4 - t3)
        m.batch_size.observe(n_messages)
        m.last_consumed.set(time.time())
        for p in outcome.predictions:
            m.predictions.labels(topic=p.topic, sentiment=p.sentiment).inc()
            m.confidence.observe(p.confidence)
            m.end_to_end_latency.observe(p.latency_ms / 1000.0 + (t3 - t2))
        m.published.inc(len(outcome.predictions))
        for (key, window), (index, count) in outcome.index.items():
            scope, name = key.split(":", 1)
            w = f"{int(window)}s"
            if scope == "topic":
                m.sentiment_index.labels(topic=name, window=w).set(index)
                m.sentiment_window_count.labels(topic=name, window=w).set(count)
            else:
                m.ticker_sentiment_index.labels(ticker=name, window=w).set(index)
        for a in outcome.alerts:
            if a.state == "raised":
                m.alerts.labels(scope=a.scope, key=a.key).inc()
                m.alerts_active.labels(scope=a.scope, key=a.key).set(1)
                log.warning("ALERT raised: negative surge %s=%s share=%.2f baseline=%.2f n=%d",
                            a.scope, a.key, a.negative_share, a.baseline_share, a.window_count)
            else:
                m.alerts_active.labels(scope=a.scope, key=a.key).set(0)
                log.info("alert cleared: %s=%s share=%.2f", a.scope, a.key, a.negative_share)
        totals = self._totals
        totals.consumed += n_messages
        totals.published += len(outcome.predictions)
        totals.alerts += sum(1 for a in outcome.alerts if a.state == "raised")
        totals.batches += 1

    def _set_model_metrics(self, version: str, created: float, parent: str | None) -> None:
        self.metrics.model_info.info({"version": version, "parent": parent or ""})
        self.metrics.model_created.set(created)

    def _maybe_swap_model(self) -> None:
        directory = self.watcher.changed()
        if directory is None:
            return
        try:
            predictor, loaded = load_predictor(directory, self.config.model)
        except Exception:  # a broken new version must never stop serving
            log.exception("could not load new model version at %s; the old model keeps serving", directory)
            return
        old = self.slot.swap(predictor)
        self.metrics.model_swaps.inc()
        self._set_model_metrics(loaded.meta.version, loaded.meta.created_timestamp, loaded.meta.parent)
        log.info("hot-swapped model %s -> %s", old.version, predictor.version)

    def _maybe_report(self) -> None:
        now = time.monotonic()
        if now - self._last_lag >= 5.0:
            self._last_lag = now
            lags = {(topic, str(partition)): lag for (topic, partition), lag in self.source.lag().items()}
            for topic, partition in self._lag_series - set(lags):  # revoked in a rebalance: stop exporting
                self.metrics.consumer_lag.remove(topic, partition)
            for (topic, partition), lag in lags.items():
                self.metrics.consumer_lag.labels(topic=topic, partition=partition).set(lag)
            self._lag_series = set(lags)
        interval = self.config.logging.summary_interval_s
        if now - self._last_summary < interval:
            return
        elapsed, self._last_summary = now - self._last_summary, now
        t = self._totals
        lag = sum(self.source.lag().values())
        log.info(
            "summary: %.1f msg/s, consumed=%d published=%d dead_letter=%d alerts=%d lag=%d model=%s",
            t.consumed / elapsed, t.consumed, t.published, t.dead, t.alerts, lag, self.slot.current.version,
            extra={"fields": {"rate": round(t.consumed / elapsed, 2), "consumed": t.consumed,
                              "published": t.published, "dead_letter": t.dead, "alerts": t.alerts, "lag": lag,
                              "model_version": self.slot.current.version}},
        )
        self._totals = _Totals()

    def close(self) -> None:
        """Flush and close everything; safe to call twice."""
        try:
            self.sink.flush()
        finally:
            if self.learner is not None:
                self.learner.close()
            self.sink.close()
            self.source.close()
            log.info("monitor stopped")
