"""Every Prometheus instrument of the monitor, declared in one place.

All series carry the ``monitor_`` namespace. Label values come from fixed sets only:
topic names (the configured taxonomy), the three sentiments, dead-letter reasons, stage
names, head names, drift signals, training outcomes and the configured ticker watch-list.
Never an id, a free text or an unbounded ticker list.

Instruments are built on an injected registry so that tests use a fresh one::

    >>> from prometheus_client import CollectorRegistry
    >>> m = Metrics(CollectorRegistry())
    >>> m.consumed.labels(topic="news").inc()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

__all__ = ["DEAD_LETTER_REASONS", "LABEL_OUTCOMES", "STAGES", "TRAINING_OUTCOMES", "Metrics", "serve"]

NS = "monitor"

#: Why a message went to the dead-letter topic (the only values of the ``reason`` label).
DEAD_LETTER_REASONS: tuple[str, ...] = (
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "empty_text",
    "wrong_type",
    "bad_timestamp",
    "oversize",
    "bad_label",
    "processing_error",
)

#: Outcomes of a training run (``outcome`` label of monitor_training_runs_total).
TRAINING_OUTCOMES: tuple[str, ...] = ("promoted", "rejected", "failed")

#: What happened to a received label (``outcome`` label of monitor_labels_received_total).
LABEL_OUTCOMES: tuple[str, ...] = ("joined", "unknown", "late", "inline", "invalid")

#: Pipeline stages timed per batch (``stage`` label).
STAGES: tuple[str, ...] = ("decode", "tokenize", "infer", "publish", "commit")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TRAIN_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 3600)


class Metrics:
    """The monitor's instruments, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = r = registry
        # --- stream -------------------------------------------------------------------------
        self.consumed = Counter("messages_consumed", "Messages read from an input topic.",
                                ["topic"], namespace=NS, registry=r)
        self.published = Counter("messages_published", "Results published to the output topic.",
                                 namespace=NS, registry=r)
        self.dead_lettered = Counter("messages_dead_lettered", "Messages sent to the dead-letter topic.",
                                     ["reason"], namespace=NS, registry=r)
        self.duplicates_skipped = Counter("duplicates_skipped", "Results the analytics owner had already counted "
                                          "(an item published twice), skipped.", namespace=NS, registry=r)
        self.batch_size = Histogram("batch_size_messages", "Messages per classified micro-batch.",
                                    namespace=NS, registry=r, buckets=_BATCH_BUCKETS)
        self.stage_latency = Histogram("stage_latency_seconds", "Time per batch spent in each stage.",
                                       ["stage"], namespace=NS, registry=r, buckets=_LATENCY_BUCKETS)
        self.end_to_end_latency = Histogram("processing_latency_seconds",
                                            "Per-message time from poll to publish.",
                                            namespace=NS, registry=r, buckets=_LATENCY_BUCKETS)
        self.consumer_lag = Gauge("consumer_lag_messages", "Messages behind the log end, per partition.",
                                  ["topic", "partition"], namespace=NS, registry=r)
        self.last_consumed = Gauge("last_consumed_timestamp_seconds",
                                   "Unix time of the last consumed message.", namespace=NS, registry=r)
        self.broker_unreachable_since = Gauge("broker_unreachable_since_timestamp_seconds",
                                              "Unix time since which the broker does not answer (0 = it does).",
                                              namespace=NS, registry=r)
        self.broker_retries = Counter("broker_retries", "Flushes and commits retried because the broker did "
                                      "not answer.", ["operation"], namespace=NS, registry=r)
        # --- predictions and sentiment ----------------------------------------------------------
        self.predictions = Counter("predictions", "Classified items by predicted topic and sentiment.",
                                   ["topic", "sentiment"], namespace=NS, registry=r)
        self.confidence = Histogram("prediction_confidence", "Confidence of each prediction (0..1).",
                                    namespace=NS, registry=r,
                                    buckets=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99))
        self.sentiment_index = Gauge("sentiment_index",
                                     "Rolling (positive - negative) / total per topic, in [-1, 1].",
                                     ["topic", "window"], namespace=NS, registry=r)
        self.sentiment_window_count = Gauge("sentiment_window_items", "Items in the rolling window per topic.",
                                            ["topic", "window"], namespace=NS, registry=r)
        self.ticker_sentiment_index = Gauge("ticker_sentiment_index",
                                            "Rolling sentiment index per watch-listed ticker.",
                                            ["ticker", "window"], namespace=NS, registry=r)
        # --- alerts -----------------------------------------------------------------------------
        self.alerts = Counter("alerts_raised", "Negative-surge alerts raised.", ["scope", "key"],
                              namespace=NS, registry=r)
        self.alerts_active = Gauge("alerts_active", "1 while a negative-surge alert is active.",
                                   ["scope", "key"], namespace=NS, registry=r)
        # --- model ------------------------------------------------------------------------------
        self.model_info = Info("model", "The serving model version.", namespace=NS, registry=r)
        self.model_created = Gauge("model_created_timestamp_seconds",
                                   "Unix time at which the serving model was trained.",
                                   namespace=NS, registry=r)
        self.model_swaps = Counter("model_swaps", "Hot swaps of the serving model.", namespace=NS, registry=r)
        self.inference_backend = Info("inference_backend", "Backend, threads and batch budget of the serving model.",
                                      namespace=NS, registry=r)
        self.token_slots = Counter("inference_token_slots", "Token slots computed by inference, real or padding.",
                                   ["kind"], namespace=NS, registry=r)  # real | padding
        self.padding_share = Gauge("inference_padding_share", "Share of padding in the last batch's token slots.",
                                   namespace=NS, registry=r)
        self.truncated = Counter("truncated_texts", "Texts longer than the model's max_length tokens (cut).",
                                 namespace=NS, registry=r)
        self.model_load_failures = Counter("model_load_failures", "New model versions that failed to load "
                                           "(retried with backoff).", namespace=NS, registry=r)
        # --- learning loop ------------------------------------------------------------------------
        self.labels_joined = Counter("labels_received", "Labels received, by join outcome.",
                                     ["outcome"], namespace=NS, registry=r)  # joined | unknown | late | inline
        self.drift_detections = Counter("drift_detections", "Drift detections by signal.", ["signal"],
                                        namespace=NS, registry=r)
        self.label_requests = Counter("label_requests", "Uncertain items published for labelling.",
                                      namespace=NS, registry=r)
        self.training_runs = Counter("training_runs", "Training runs by outcome.", ["outcome"],
                                     namespace=NS, registry=r)  # promoted | rejected | failed
        self.training_duration = Histogram("training_duration_seconds", "Wall time of a training run.",
                                           namespace=NS, registry=r, buckets=_TRAIN_BUCKETS)
        self.training_active = Gauge("training_active", "1 while a training run is in progress.",
                                     namespace=NS, registry=r)
        self.shadow_labels = Gauge("challenger_shadow_labels",
                                   "Labels the trained challenger waiting for its verdict was compared on (0: none).",
                                   namespace=NS, registry=r)
        self.replay_buffer_size = Gauge("replay_buffer_examples", "Examples in the replay buffer.",
                                        namespace=NS, registry=r)
        self.prequential_accuracy = Gauge("prequential_accuracy",
                                          "Accuracy of predictions on the labels received (rolling).",
                                          ["head"], namespace=NS, registry=r)
        self.forgetting = Gauge("last_promotion_forgetting",
                                "Accuracy lost on the replay holdout by the last promoted model.",
                                namespace=NS, registry=r)
        self.last_promotion = Gauge("last_promotion_timestamp_seconds", "Unix time of the last promotion.",
                                    namespace=NS, registry=r)
        # Counters with fixed label sets start at 0, so increase() sees their first event.
        for reason in DEAD_LETTER_REASONS:
            self.dead_lettered.labels(reason=reason)
        for outcome in TRAINING_OUTCOMES:
            self.training_runs.labels(outcome=outcome)
        for outcome in LABEL_OUTCOMES:
            self.labels_joined.labels(outcome=outcome)
        for kind in ("real", "padding"):
            self.token_slots.labels(kind=kind)
        for operation in ("flush", "commit"):
            self.broker_retries.labels(operation=operation)

    def record_windows(self, index: Mapping[tuple[str, float], tuple[float, int]], alerts: Iterable[Any]) -> None:
        """The sentiment index snapshot (``{("topic:<t>" | "ticker:<t>", window): (index, count)}``) and the
        alert state changes of a batch (``state``, ``scope``, ``key``): the daemon's and the analytics role's."""
        for (key, window), (value, count) in index.items():
            scope, name = key.split(":", 1)
            w = f"{int(window)}s"
            if scope == "topic":
                self.sentiment_index.labels(topic=name, window=w).set(value)
                self.sentiment_window_count.labels(topic=name, window=w).set(count)
            else:
                self.ticker_sentiment_index.labels(ticker=name, window=w).set(value)
        for a in alerts:
            if a.state == "raised":
                self.alerts.labels(scope=a.scope, key=a.key).inc()
            self.alerts_active.labels(scope=a.scope, key=a.key).set(1 if a.state == "raised" else 0)


def serve(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Start the ``/metrics`` HTTP endpoint in a daemon thread."""
    start_http_server(port, addr=host, registry=registry)
