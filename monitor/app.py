"""Wiring and the run loop of the daemon: source -> pipeline -> sink, metrics, alerts, learner.

Order of one micro-batch (at-least-once; this is the one place it is written down):

1. poll a batch of raw messages (up to ``batch.max_batch`` or ``batch.max_wait_ms``, or at once when the
   consumer has caught up with ``batch.adaptive``);
2. decode; a bad message is sent to the dead-letter topic with its reason;
3. classify the good ones (``Pipeline.process``) and send one result each, plus any alerts
   (a result larger than the producer's ``max_request_size`` dead-letters its input ``oversize``);
4. flush the producer: the broker has acknowledged every result, dead letter and alert;
   while it does not answer, the flush is retried with backoff (``kafka.outage_backoff_max_s``),
   for as long as the outage lasts;
5. hand items, predictions and labels to the learner, which stores labelled examples (and
   flush again the dead letters this step made, if any);
6. commit the batch's offsets (retried like the flush).

``run`` overlaps two batches: while batch n+1 is classified in the inference thread (ONNX
Runtime and torch release the GIL), the loop publishes, flushes, hands to the learner and
commits batch n, then polls and decodes batch n+2 (``_start`` is steps 2 and the submission of 3,
``_settle`` the rest of 3 to 6, always for the batches in order). Each batch still goes through
steps 1-6 in this order, and a batch's offsets are committed only after its own outputs are
flushed. While a batch is in flight the poll takes only what has already arrived.

A crash anywhere before 6 re-reads the batch after restart: duplicates are possible, losses
are not. No message can stop the loop: whatever decoding, classifying, publishing or the
learner raises for a message (beyond the decoder's own reasons) dead-letters that message
``processing_error`` with the exception class in ``dlq.detail``; a batch that raises is split
in halves until the culprit is alone (``monitor.resilience.isolate``), the rest goes on. A stop
asked during a broker outage leaves without committing the batch in hand (it is re-read).

Slow work never blocks polling: training runs in the learner's worker thread, and
between two polls the loop only classifies one bounded micro-batch (kafka-python heartbeats
from its own thread), far below ``max_poll_interval_ms``. While the learner trains, serving
goes on with the current model; a promoted model is swapped in between batches.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from monitor.alerts import SurgeDetector
from monitor.artifacts import ArtifactError, DirectoryStore
from monitor.config import MonitorConfig
from monitor.metrics import Metrics
from monitor.model.checkpoint import CheckpointError, validate_checkpoint
from monitor.model.predictor import Predictor
from monitor.pipeline import BatchOutcome, ModelSlot, Pipeline
from monitor.records import Alert, Label, NewsItem, Prediction
from monitor.registry import is_registry
from monitor.resilience import Abandoned, Outage, describe_error, isolate
from monitor.serving import ModelNotFound, RegistryWatcher, load_predictor, resolve_model_dir
from monitor.stream.codec import DecodeError, decode_item, decode_label
from monitor.stream.sink import KafkaSink, SinkError
from monitor.stream.source import KafkaSource, RawMessage, SourceError
from monitor.stream.versions import AnnouncedVersions, VersionAnnouncement, VersionFollower
from monitor.trends import SentimentTrends

__all__ = ["Learner", "Monitor", "Sink", "Source", "check_model", "install_stop_handlers"]

log = logging.getLogger(__name__)


def install_stop_handlers(stop: Callable[[], None]) -> None:
    """SIGTERM/SIGINT call ``stop`` (finish the batch in hand, flush, commit); a second one exits 130."""
    received = 0

    def handle(signum: int, _frame: Any) -> None:
        nonlocal received
        received += 1
        if received > 1:
            log.error("second signal %s: exiting now without flushing", signum)
            os._exit(130)
        log.info("signal %s: finishing the batch in hand, then stopping", signum)
        stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


class Learner(Protocol):
    """The continual-learning side, fed by the run loop (see ``monitor.learn``)."""

    def observe(self, items: Sequence[NewsItem], predictions: Sequence[Prediction]) -> None: ...

    def on_label(self, label: Label) -> None: ...

    def persist(self) -> None: ...

    def drain_label_requests(self) -> list[tuple[str, bytes]]: ...

    def close(self) -> None: ...


def check_model(path: str | Path) -> Path:
    """The serving checkpoint directory of ``model.path``, validated without loading it.

    Raises ``ModelNotFound`` naming the broken version and the command that fixes it, so the
    daemon started on a broken ``CURRENT`` exits 2 with that message instead of a traceback.
    """
    directory = resolve_model_dir(path)
    try:
        validate_checkpoint(directory)
    except CheckpointError as err:
        raise _broken(path, directory, err) from None
    return directory


def _broken(path: str | Path, directory: Path, err: Exception) -> ModelNotFound:
    if is_registry(path):
        return ModelNotFound(
            f"model version {directory.name!r} (CURRENT of registry {path}) cannot be loaded: {err}. "
            f"Serve a version that loads with `monitor model rollback VERSION --registry {path}` "
            f"(`monitor model list --registry {path}` marks the broken ones)")
    return ModelNotFound(f"the checkpoint {directory} cannot be loaded: {err}")


class Source(Protocol):
    """Where batches come from: ``KafkaSource`` (the daemon), ``MemorySource`` (replays, tests)."""

    def next_batch(self, max_batch: int, max_wait_ms: int, idle_ms: int = ..., *,
                   adaptive: bool = ...) -> list[RawMessage]: ...

    def commit(self, messages: Sequence[RawMessage]) -> bool: ...

    def lag(self) -> dict[tuple[str, int], int]: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Where outputs go: ``KafkaSink`` (the daemon), ``CollectorSink`` (replays, tests)."""

    max_request_size: int

    @property
    def unacknowledged(self) -> int: ...

    def prediction(self, p: Prediction) -> bool: ...

    def alert(self, a: Alert) -> bool: ...

    def label_request(self, item_id: str, body: bytes) -> bool: ...

    def dead_letter(self, message: RawMessage, reason: str, detail: str) -> None: ...

    def flush(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class _Decoded:
    """One polled batch after decoding: items and labels with the message each came from."""

    items: list[NewsItem] = field(default_factory=list)
    item_messages: list[RawMessage] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    label_messages: list[RawMessage] = field(default_factory=list)


@dataclass
class _Inferred:
    """What the inference thread returns for one batch (``Pipeline.process`` on its parts)."""

    parts: list[tuple[Sequence[int], BatchOutcome]]
    """(item indices, outcome) of each part, in order; one empty part when no item classified."""
    failures: list[tuple[int, Exception]]
    stats: Any
    done: float
    """perf_counter when it finished."""


@dataclass
class _InFlight:
    """A batch between ``_start`` and ``_settle``: decoded, its classification submitted."""

    messages: Sequence[RawMessage]
    batch: _Decoded
    inference: Future[_Inferred]
    t0: float
    t1: float


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
        source: Source | None = None,
        sink: Sink | None = None,
        analytics: bool = True,
        versions: VersionFollower | None = None,
        watch_registry: bool | None = None,
    ) -> None:
        """``analytics=False`` and ``versions`` make a serving replica (``monitor serve``): no sentiment
        windows or alerts (the analytics role owns them), and the model follows the versions topic
        instead of the registry's ``CURRENT``. ``watch_registry`` (default: unless ``scorer`` is
        injected) hot-swaps when the registry's ``CURRENT`` moves; a learning replay sets it."""
        self.config = config
        self.metrics = metrics or Metrics()
        injected = scorer
        announced = versions.catch_up() if versions is not None else None
        if scorer is None:
            directory = self._initial_model_dir(announced)
            try:
                scorer, loaded = load_predictor(directory, config.model)
            except ModelNotFound as err:  # validated, yet does not load: say which version and how to fix it
                raise _broken(config.model.path, directory, err) from None
            self._set_model_metrics(loaded.meta.version, loaded.meta.created_timestamp, loaded.meta.parent)
        else:
            self._set_model_metrics(scorer.version, time.time(), None)
        self._topics: tuple[str, ...] = tuple(scorer.model.topics)
        self._sentiments: tuple[str, ...] = tuple(scorer.model.sentiments)
        self.slot = ModelSlot(scorer)
        self._set_backend_metrics()
        # An injected scorer (tests, replays) is never swapped; a configured registry is watched,
        # or, for a serving replica, the versions topic.
        self.watcher: RegistryWatcher | AnnouncedVersions = (
            AnnouncedVersions(versions, DirectoryStore(config.model.path), scorer.version)
            if versions is not None
            else RegistryWatcher(config.model.path, scorer.version,
                                 enabled=injected is None if watch_registry is None else watch_registry))
        self.pipeline = Pipeline(
            self.slot,
            SentimentTrends(config.metrics.windows_seconds) if analytics else None,
            SurgeDetector(config.alerts) if analytics else None,
            watch_tickers=config.metrics.watch_tickers,
        )
        self.learner = learner
        kafka = config.kafka
        topics = list(kafka.input_topics) + ([kafka.labels_topic] if learner is not None else [])
        self.source = source or KafkaSource(kafka, topics, max_poll_records=max(config.batch.max_batch, 1))
        self.sink = sink or KafkaSink(kafka)
        self.outage = Outage(self.metrics, backoff_max_s=kafka.outage_backoff_max_s)
        self._stop = threading.Event()
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-inference")
        self._totals = _Totals()
        self._last_summary = time.monotonic()
        self._last_lag = 0.0
        self._lag_series: set[tuple[str, str]] = set()

    def _initial_model_dir(self, announced: VersionAnnouncement | None) -> Path:
        """The newest announced version when it can be fetched intact, else ``model.path``'s."""
        if announced is not None:
            try:
                return DirectoryStore(self.config.model.path).fetch(announced.artifact)
            except ArtifactError as err:
                log.warning("announced version %s unusable here (%s); starting on the model at %s",
                            announced.version, err, self.config.model.path)
        return check_model(self.config.model.path)

    # --- control ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, flush, commit and return."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: graceful stop; a second signal exits at once (status 130)."""
        install_stop_handlers(self.stop)

    # --- loop --------------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.config
        log.info("monitor running: inputs=%s output=%s model=%s", ",".join(cfg.kafka.input_topics),
                 cfg.kafka.output_topic, self.slot.current.version)
        inflight: _InFlight | None = None
        try:
            while not self._stop.is_set():
                if inflight is None:
                    messages = self.source.next_batch(cfg.batch.max_batch, cfg.batch.max_wait_ms,
                                                      adaptive=cfg.batch.adaptive)
                else:  # a batch is being classified: take only what has arrived, settle it next
                    messages = self.source.next_batch(cfg.batch.max_batch, 0, idle_ms=0)
                started = self._start(messages) if messages else None
                if inflight is not None:
                    self._settle(inflight)
                inflight = started
                self.swap_if_changed()  # the next batch submitted classifies with the new model
                self._maybe_report()
            if inflight is not None:  # stopping: finish the batch in hand
                batch, inflight = inflight, None
                self._settle(batch)
        except Abandoned as err:
            log.warning("%s", err)
        finally:
            if inflight is not None:  # not committed: re-read after restart
                inflight.inference.exception()
            self.close()
        return 0

    def handle(self, messages: Sequence[RawMessage]) -> BatchOutcome:
        """Steps 2-6 of the module docstring for one polled batch, without overlap (replays, tests)."""
        return self._settle(self._start(messages))

    def _start(self, messages: Sequence[RawMessage]) -> _InFlight:
        """Step 2, and step 3's classification submitted to the inference thread."""
        t0 = time.perf_counter()
        batch = self._decode(messages)
        t1 = time.perf_counter()
        return _InFlight(messages, batch, self._inference.submit(self._infer, batch), t0, t1)

    def _settle(self, inflight: _InFlight) -> BatchOutcome:
        """The rest of step 3 (the results sent), then steps 4-6 for the batch ``inflight``."""
        batch, messages = inflight.batch, inflight.messages
        inferred = inflight.inference.result()
        t2 = time.perf_counter()
        outcome, classified = self._merge(batch, inferred)
        self._publish(outcome, [batch.item_messages[i] for i in classified])
        self._flush()  # step 4: retried until the broker has every output; nothing is committed before
        t3 = time.perf_counter()
        if self.learner is not None:
            self._learn(classified, outcome.predictions, batch)
            self._flush()  # dead letters of the learner step, if any
        self._commit(messages)
        t4 = time.perf_counter()
        self._record(outcome, len(messages), (inflight.t0, inflight.t1, inferred.done, t2, t3, t4), inferred.stats)
        return outcome

    # --- the steps -------------------------------------------------------------------------------
    def _dead_letter(self, msg: RawMessage, reason: str, detail: str) -> None:
        self.sink.dead_letter(msg, reason, detail)
        self.metrics.dead_lettered.labels(reason=reason).inc()
        self._totals.dead += 1
        self._totals.by_reason[reason] += 1

    def _decode(self, messages: Sequence[RawMessage]) -> _Decoded:
        kafka, batch_cfg = self.config.kafka, self.config.batch
        out = _Decoded()
        for msg in messages:
            self.metrics.consumed.labels(topic=msg.topic).inc()
            try:
                if msg.topic == kafka.labels_topic and self.learner is not None:
                    out.labels.append(decode_label(msg.value, topics=self._topics or None,
                                                   sentiments=self._sentiments or None))
                    out.label_messages.append(msg)
                    continue
                out.items.append(decode_item(msg.value, max_text_chars=batch_cfg.max_text_chars,
                                             topics=self._topics or None, sentiments=self._sentiments or None,
                                             kafka_timestamp_ms=msg.timestamp_ms,
                                             max_future_skew_s=batch_cfg.max_future_skew_s))
                out.item_messages.append(msg)
            except DecodeError as err:
                self._dead_letter(msg, err.reason, err.detail)
            except Exception as err:  # a decoder bug must not stop the daemon either
                log.exception("decoding %s/%d@%d raised", msg.topic, msg.partition, msg.offset)
                self._dead_letter(msg, "processing_error", describe_error(err))
        return out

    def _infer(self, batch: _Decoded) -> _Inferred:
        """In the inference thread: ``Pipeline.process`` on the items, an item that makes it raise isolated."""
        items, msgs = batch.items, batch.item_messages
        parts, failures = isolate(
            lambda idx: self.pipeline.process([items[i] for i in idx], [msgs[i].received_at for i in idx]),
            len(items))
        if not parts:  # the windows' snapshot still comes from this thread, which alone touches the pipeline
            parts = [([], self.pipeline.process([], []))]
        # The stats of the scorer that classified the last part (the slot may have been swapped since).
        return _Inferred(parts, failures, parts[-1][1].stats, time.perf_counter())

    def _merge(self, batch: _Decoded, inferred: _Inferred) -> tuple[BatchOutcome, list[int]]:
        """The outcome of the whole batch, the items that raised dead-lettered.

        Returns the outcome and, for each of its predictions, the index of its item in ``batch``.
        """
        msgs, parts = batch.item_messages, inferred.parts
        for index, err in inferred.failures:
            log.error("classifying %s/%d@%d raised %s; dead-lettered", msgs[index].topic, msgs[index].partition,
                      msgs[index].offset, describe_error(err))
            self._dead_letter(msgs[index], "processing_error", describe_error(err))
        outcome = dataclasses.replace(
            parts[-1][1],
            predictions=[p for _, part in parts for p in part.predictions],
            alerts=[a for _, part in parts for a in part.alerts],
            infer_seconds=sum(part.infer_seconds for _, part in parts),
        )
        return outcome, [i for indices, _ in parts for i in indices]

    def _publish(self, outcome: BatchOutcome, msgs: Sequence[RawMessage]) -> None:
        """Step 3: one result per item (``msgs``: the input of each prediction), alerts, label requests."""
        for p, msg in zip(outcome.predictions, msgs, strict=True):
            try:
                if not self.sink.prediction(p):
                    self._dead_letter(msg, "oversize", f"the result of {p.id[:40]!r} exceeds the producer's "
                                                       f"max_request_size ({self.sink.max_request_size} bytes)")
            except Exception as err:
                self._dead_letter(msg, "processing_error", describe_error(err))
        for a in outcome.alerts:
            if not self.sink.alert(a):
                log.error("alert %s:%s exceeds max_request_size; not published", a.scope, a.key)
        if self.learner is not None:
            for item_id, body in self.learner.drain_label_requests():
                if self.sink.label_request(item_id, body):
                    self.metrics.label_requests.inc()

    def _learn(self, classified: Sequence[int], predictions: Sequence[Prediction], batch: _Decoded) -> None:
        """Step 5: the learner observes the classified items and joins the labels; culprits dead-lettered."""
        assert self.learner is not None
        learner = self.learner
        items = [batch.items[i] for i in classified]
        _, failures = isolate(lambda idx: learner.observe([items[i] for i in idx], [predictions[i] for i in idx]),
                              len(items))
        for index, err in failures:
            self._dead_letter(batch.item_messages[classified[index]], "processing_error", describe_error(err))
        for label, msg in zip(batch.labels, batch.label_messages, strict=True):
            try:
                learner.on_label(label)
            except Exception as err:
                log.error("label %s/%d@%d raised %s; dead-lettered", msg.topic, msg.partition, msg.offset,
                          describe_error(err))
                self._dead_letter(msg, "processing_error", describe_error(err))
        learner.persist()

    def _flush(self) -> None:
        """Flush the outputs, retrying with backoff for as long as the broker does not answer."""
        self.outage.retry("flush", self.sink.flush, self._stop, (SinkError,))

    def _commit(self, messages: Sequence[RawMessage]) -> None:
        """Step 6, retried like the flush (a lost rebalance is not retried: the new owner re-reads)."""
        self.outage.retry("commit", lambda: self.source.commit(messages), self._stop, (SourceError,))

    # --- bookkeeping ---------------------------------------------------------------------------------
    def _record(self, outcome: BatchOutcome, n_messages: int, t: tuple[float, ...], stats: Any) -> None:
        m = self.metrics
        t0, t1, inferred, t2, t3, t4 = t
        m.stage_latency.labels(stage="decode").observe(t1 - t0)
        if stats is not None and outcome.predictions:
            infer = sum(stats.batch_seconds)
            m.stage_latency.labels(stage="tokenize").observe(max(0.0, stats.seconds - infer))
            m.stage_latency.labels(stage="infer").observe(infer)
            m.token_slots.labels(kind="real").inc(stats.tokens)
            m.token_slots.labels(kind="padding").inc(stats.padded_tokens - stats.tokens)
            m.padding_share.set(stats.padding_share)
            m.truncated.inc(stats.truncated)
        elif outcome.predictions:
            m.stage_latency.labels(stage="infer").observe(outcome.infer_seconds)
        m.stage_latency.labels(stage="publish").observe(t3 - t2)
        m.stage_latency.labels(stage="commit").observe(t4 - t3)
        m.batch_size.observe(n_messages)
        m.last_consumed.set(time.time())
        for p in outcome.predictions:
            m.predictions.labels(topic=p.topic, sentiment=p.sentiment).inc()
            m.confidence.observe(p.confidence)
            m.end_to_end_latency.observe(p.latency_ms / 1000.0 + (t3 - inferred))
        m.published.inc(len(outcome.predictions))
        m.record_windows(outcome.index, outcome.alerts)
        totals = self._totals
        totals.consumed += n_messages
        totals.published += len(outcome.predictions)
        totals.alerts += sum(1 for a in outcome.alerts if a.state == "raised")
        totals.batches += 1

    def _set_model_metrics(self, version: str, created: float, parent: str | None) -> None:
        self.metrics.model_info.info({"version": version, "parent": parent or ""})
        self.metrics.model_created.set(created)

    def _set_backend_metrics(self) -> None:
        describe = getattr(self.slot.current, "describe", None)  # a Predictor; injected scorers may lack it
        if callable(describe):
            self.metrics.inference_backend.info(describe())

    def swap_if_changed(self) -> None:
        """Between batches: load and swap in a new serving version (a broken one is retried, never served)."""
        directory = self.watcher.changed()
        if directory is None:
            return
        try:
            predictor, loaded = load_predictor(directory, self.config.model)
        except Exception as err:  # a broken new version must never stop serving
            self.metrics.model_load_failures.inc()
            retry = self.watcher.failed(directory.name)
            log.error("could not load new model version %s (%s); model %s keeps serving, retry in %.0f s",
                      directory.name, describe_error(err), self.slot.current.version, retry)
            return
        self.watcher.loaded(directory.name)
        old = self.slot.swap(predictor)
        self.metrics.model_swaps.inc()
        self._set_model_metrics(loaded.meta.version, loaded.meta.created_timestamp, loaded.meta.parent)
        self._set_backend_metrics()
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
        """Flush (once) and close everything; safe to call twice."""
        self._inference.shutdown(wait=True)
        try:
            self.sink.flush()
        except SinkError as err:  # stopping in an outage: those inputs were not committed, they are re-read
            log.warning("stopping with %d outputs unacknowledged (their inputs are not committed): %s",
                        self.sink.unacknowledged, err)
        finally:
            if self.learner is not None:
                self.learner.close()
            self.sink.close()
            self.source.close()
            log.info("monitor stopped")
