"""``--via-kafka``: the replay through the real broker and the daemon's own run loop.

The feed is put on fresh topics (``replay-<run id>-items`` and ``-labels``, one partition each,
so Kafka keeps the event order) and ``monitor.app.Monitor`` consumes them in a thread, exactly as
``monitor run`` does: decode, ``Pipeline.process``, publish results and alerts, flush, hand the
learner items and labels, commit. Results are then read back from its output and alerts topics.

**Lock-step.** The replay produces one planned batch (``monitor.replay.schedule``) at a time as
one Kafka record batch and waits until the daemon has handled it (its
``monitor_batch_size_messages`` histogram counts the handled messages) before producing the next.
With ``batch.max_wait_ms`` set to 0 for the replayed daemon, each poll returns one whole planned
batch, so the daemon classifies the same micro-batches as the direct replay, checks alerts at the
same points and gives each label to the learner after exactly the same items; the results match
the direct replay exactly. ``kafka_batches`` in the log counts the batches the daemon actually
saw: more than planned means a poll split a batch (then probabilities may differ in the fifth
decimal and alert times by one batch).

This module, like ``monitor feed``, plays the outside world (producer and reader), so it talks to
kafka-python directly; the daemon side is ``monitor.stream`` as always.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

from monitor.config import MonitorConfig
from monitor.records import Alert, Prediction
from monitor.replay.engine import ReplayLog, progress_bar
from monitor.replay.learning import LearnerTap
from monitor.replay.schedule import Batch, Pacer
from monitor.stream.memory import item_body, label_body

__all__ = ["replay_config", "run_via_kafka"]

log = logging.getLogger(__name__)

TOPICS = ("items", "labels", "predictions", "alerts", "dead-letter", "label-requests")


def replay_config(config: MonitorConfig, run_id: str) -> MonitorConfig:
    """``config`` with fresh ``replay-<run_id>-*`` topics and group, reading from the start, no batch wait."""
    prefix = f"replay-{run_id}"
    kafka = dataclasses.replace(
        config.kafka,
        input_topics=(f"{prefix}-items",),
        labels_topic=f"{prefix}-labels",
        output_topic=f"{prefix}-predictions",
        alerts_topic=f"{prefix}-alerts",
        dead_letter_topic=f"{prefix}-dead-letter",
        label_requests_topic=f"{prefix}-label-requests",
        group_id=prefix,
        client_id=prefix,
        auto_offset_reset="earliest",
        create_topics=False,
    )
    return dataclasses.replace(config, kafka=kafka, batch=dataclasses.replace(config.batch, max_wait_ms=0))


def _read_topic(config: MonitorConfig, topic: str) -> list[bytes]:
    """Every message of partition 0 of ``topic``, from the beginning to the current end."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, **config.kafka.client_options())
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        out: list[bytes] = []
        deadline = time.monotonic() + 60
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: {len(out)} of {end} messages after 60 s")
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(r.value for r in records)
        return out
    finally:
        consumer.close()


def _wait_for_leaders(config: MonitorConfig, names: Sequence[str], timeout_s: float = 60.0) -> None:
    """Block until every partition of ``names`` has a leader.

    A consumer that joins its group before a fresh topic's metadata is complete is assigned
    nothing, and only notices the partition at its next metadata refresh (5 minutes by default).
    """
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(client_id=f"{config.kafka.client_id}-admin", **config.kafka.client_options())
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            topics = admin.describe_topics(list(names))
            if all(t["error_code"] == 0 and t["partitions"] and all(p["leader_id"] >= 0 for p in t["partitions"])
                   for t in topics):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"replay topics {', '.join(names)} have no leader after {timeout_s:.0f} s")
            time.sleep(0.1)
    finally:
        admin.close()


def _delete_topics(config: MonitorConfig, names: Sequence[str]) -> None:
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(client_id=f"{config.kafka.client_id}-admin", **config.kafka.client_options())
        try:
            admin.delete_topics(list(names))
        finally:
            admin.close()
    except Exception as err:  # cleanup only: the replay's results are already written
        log.warning("could not delete replay topics %s: %s", ", ".join(names), err)


class _Daemon:
    """``Monitor.run`` in a thread, with the handled-message count its metrics expose."""

    def __init__(self, config: MonitorConfig, learner: LearnerTap | None) -> None:
        from prometheus_client import CollectorRegistry

        from monitor.app import Monitor
        from monitor.metrics import Metrics

        self.registry = CollectorRegistry()
        self.monitor = Monitor(config, metrics=Metrics(self.registry), learner=learner)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="replay-daemon", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.monitor.run()
        except BaseException as err:
            self.error = err

    def handled(self) -> tuple[int, int]:
        """(messages handled, batches handled) so far."""
        total = self.registry.get_sample_value("monitor_batch_size_messages_sum") or 0.0
        count = self.registry.get_sample_value("monitor_batch_size_messages_count") or 0.0
        return int(total), int(count)

    def wait_handled(self, messages: int, timeout_s: float) -> int:
        """Block until ``messages`` were handled; return the batches handled."""
        deadline = time.monotonic() + timeout_s
        while True:
            done, batches = self.handled()
            if done >= messages:
                return batches
            if not self.thread.is_alive():
                raise RuntimeError(f"the replayed daemon stopped after {done} of {messages} messages: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replayed daemon handled {done} of {messages} messages in {timeout_s:.0f} s")
            time.sleep(0.002)

    def stop(self) -> None:
        self.monitor.stop()
        self.thread.join(timeout=60)


def run_via_kafka(
    batches: Sequence[Batch],
    config: MonitorConfig,
    *,
    learner: LearnerTap | None = None,
    pacer: Pacer | None = None,
    progress: bool = True,
    timeout_s: float = 300.0,
    keep_topics: bool = False,
) -> ReplayLog:
    """Replay ``batches`` through the broker and ``Monitor`` (module docstring)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from monitor.stream.admin import ensure_topics

    run_id = secrets.token_hex(4)
    cfg = replay_config(config, run_id)
    k = cfg.kafka
    names = [k.input_topics[0], k.labels_topic, k.output_topic, k.alerts_topic, k.dead_letter_topic,
             k.label_requests_topic]
    try:
        ensure_topics(k, names, partitions=1)
        _wait_for_leaders(cfg, names)
    except KafkaError as err:
        raise RuntimeError(f"--via-kafka: cannot create the replay topics on {k.bootstrap_servers}: {err!r}") from err
    out = ReplayLog("kafka", extra={"topics_prefix": f"replay-{run_id}"})
    pacer = pacer or Pacer()
    started = time.perf_counter()
    producer: Any = None
    daemon: _Daemon | None = None
    produced = seen_batches = 0
    try:
        # One planned batch = one record batch: nothing is sent before flush(), and it fits in one request.
        producer = KafkaProducer(acks="all", linger_ms=60_000, delivery_timeout_ms=180_000, batch_size=4 << 20,
                                 max_request_size=4 << 20, max_in_flight_requests_per_connection=1,
                                 client_id=f"{k.client_id}-feeder", **k.client_options())
        daemon = _Daemon(cfg, learner)
        with progress_bar(sum(len(b.items) for b in batches), progress, "replay via kafka") as bar:
            for batch in batches:
                pacer.wait_until(batch.end)
                topic = k.input_topics[0] if batch.kind == "items" else k.labels_topic
                for e in batch.events:
                    body = item_body(e.item) if e.label is None else label_body(e.label)
                    producer.send(topic, key=e.id.encode("utf-8"), value=body)
                producer.flush()
                produced += len(batch.events)
                seen_batches = daemon.wait_handled(produced, timeout_s)
                bar.update(len(batch.items))
        out.predictions = [_prediction(v) for v in _read_topic(cfg, k.output_topic)]
        out.alerts = [_alert(v) for v in _read_topic(cfg, k.alerts_topic)]
        dead = _read_topic(cfg, k.dead_letter_topic)
    finally:
        if producer is not None:
            producer.close()
        if daemon is not None:
            daemon.stop()
        if not keep_topics:
            _delete_topics(cfg, names)
    if dead:
        raise RuntimeError(f"the daemon dead-lettered {len(dead)} replayed messages (first: {dead[0][:200]!r})")
    out.batches = len(batches)
    out.wall_seconds = time.perf_counter() - started
    out.extra["kafka_batches"] = seen_batches
    if seen_batches != len(batches):
        log.warning("the daemon handled %d batches for %d planned: a poll split a batch", seen_batches, len(batches))
    return out


def _prediction(raw: bytes) -> Prediction:
    body = json.loads(raw)
    body["tickers"] = tuple(body["tickers"])
    return Prediction(**body)


def _alert(raw: bytes) -> Alert:
    body = json.loads(raw)
    body["example_ids"] = tuple(body["example_ids"])
    return Alert(**body)
