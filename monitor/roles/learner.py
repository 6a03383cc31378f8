"""The learner role (``monitor learn``): the one process that trains and writes model versions.

It reads the whole ``predictions`` stream and ``labels`` (``OwnedSource``, group
``<kafka.group_id>-learner``), joins them by id in the learner's durable store, runs drift
detection and the retrain policy on the whole stream, trains in its own worker thread (on CUDA
when present: run it on the GPU box), gates, and promotes into the registry. Serving replicas
never train, so training never slows serving.

Only the instance holding the ``learner`` lease runs; a second one waits. Every change of the
registry's ``CURRENT`` (a promotion by the gate, ``monitor model rollback``, ``model add
--promote``) is published to the artifact store and announced on the ``model-versions`` topic,
which is how replicas learn what to serve. At start the learner announces ``CURRENT`` when the
topic's newest record names another version, so a fresh topic is seeded.

Order of one batch (at-least-once): poll -> decode predictions (undecodable ones are
dead-lettered) -> observe them -> join the labels that are ready -> send label requests -> flush
-> store (learner state) -> commit, less the labels still waiting. Between batches: announce a
changed ``CURRENT``. A label waits until every ``predictions`` partition has been read past the
label's Kafka timestamp or to its end (its prediction, sent before it, is then in the store), or
for ``max_label_wait_s`` (then it is joined or counted unknown like any other).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from monitor.artifacts import DirectoryStore
from monitor.config import MonitorConfig
from monitor.metrics import Metrics
from monitor.records import NewsItem, Prediction
from monitor.registry import ModelRegistry
from monitor.roles import OwnerLoop
from monitor.stream.codec import DecodeError, decode_label
from monitor.stream.sink import SinkError
from monitor.stream.source import RawMessage, SourceError
from monitor.stream.versions import VersionAnnouncement, announcement

__all__ = ["LearnerRole", "decode_result"]

log = logging.getLogger(__name__)

_PREDICTION_FIELDS = set(Prediction.__dataclass_fields__)


def decode_result(raw: bytes | None) -> tuple[NewsItem, Prediction]:
    """The item and the prediction carried by one ``predictions`` message (ValueError if it is not one)."""
    try:
        body = json.loads((raw or b"").decode("utf-8"))
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        body["tickers"] = tuple(str(t) for t in body.get("tickers") or ())
        prediction = Prediction(**{k: v for k, v in body.items() if k in _PREDICTION_FIELDS})
        item = NewsItem(id=str(prediction.id), text=str(prediction.text), source=str(prediction.source),
                        published_at=datetime.fromisoformat(str(prediction.published_at)),
                        tickers=prediction.tickers, kind=str(prediction.kind))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{type(err).__name__}: {err}") from err
    return item, prediction


class LearnerRole(OwnerLoop):
    """Feeds the online learner from the topics and announces versions; ``run()`` until ``stop()``."""

    role = "learner"

    def __init__(self, config: MonitorConfig, *, metrics: Metrics, learner: Any, source: Any, sink: Any,
                 announcer: Any, follower: Any = None, lease: Any = None) -> None:
        super().__init__(config, metrics, source, sink, lease)
        self.learner = learner
        self.announcer = announcer
        self.follower = follower
        self.registry = ModelRegistry(config.model.path)
        self.store = DirectoryStore(self.registry.root / "versions")
        self._announced: str | None = None
        self.max_label_wait_s = 60.0
        self._waiting: list[tuple[RawMessage, float]] = []
        self._read_until: dict[int, int] = {}

    def run(self) -> int:
        self._seed_announcement()
        return super().run()

    def between(self) -> None:
        self.announce_if_changed()

    def handle(self, messages: Sequence[RawMessage]) -> None:
        """One batch, in the order of the module docstring (labels whose prediction may not be read yet wait)."""
        labels_topic = self.config.kafka.labels_topic
        items: list[NewsItem] = []
        predictions: list[Prediction] = []
        done: list[RawMessage] = []
        for msg in messages:
            if msg.topic == labels_topic:
                self._waiting.append((msg, time.monotonic()))
                continue
            done.append(msg)
            try:
                item, prediction = decode_result(msg.value)
            except ValueError as err:
                self._dead_letter(msg, "invalid_json", f"not a prediction: {err}")
                continue
            items.append(item)
            predictions.append(prediction)
            self._read_until[msg.partition] = max(self._read_until.get(msg.partition, -1), msg.timestamp_ms)
        self.learner.observe(items, predictions)
        for msg in self._ready_labels():
            done.append(msg)
            try:
                label = decode_label(msg.value)
            except DecodeError as err:
                self._dead_letter(msg, err.reason, err.detail)
                continue
            self.learner.on_label(label)
        for item_id, body in self.learner.drain_label_requests():
            self.sink.label_request(item_id, body)
            self.metrics.label_requests.inc()
        self.outage.retry("flush", self.sink.flush, self._stop, (SinkError,))
        self.learner.persist()
        self.outage.retry("commit", lambda: self.source.commit(self._committable(done)), self._stop, (SourceError,))

    def _ready_labels(self) -> list[RawMessage]:
        """Waiting labels (in order, per partition) whose prediction has been read, or waited too long.

        A label sent at Kafka time T names an item classified before T: once every ``predictions``
        partition has been read past T (or to its end), its prediction is in the join store.
        """
        if not self._waiting:
            return []
        output = self.config.kafka.output_topic
        partitions = self.source.partitions(output)
        at_end = self.source.at_end(output)
        ready, waiting, blocked = [], [], set()
        now = time.monotonic()
        for msg, since in self._waiting:
            past = all(self._read_until.get(p, -1) >= msg.timestamp_ms or p in at_end for p in partitions)
            if msg.partition not in blocked and (past or now - since >= self.max_label_wait_s):
                ready.append(msg)
            else:
                blocked.add(msg.partition)  # keep a partition's labels in order
                waiting.append((msg, since))
        self._waiting = waiting
        return ready

    def _committable(self, done: list[RawMessage]) -> list[RawMessage]:
        """Handled messages, less those of a labels partition at or after its first waiting label."""
        first_waiting: dict[int, int] = {}
        for msg, _ in self._waiting:
            first_waiting[msg.partition] = min(first_waiting.get(msg.partition, msg.offset), msg.offset)
        labels_topic = self.config.kafka.labels_topic
        return [m for m in done if m.topic != labels_topic or m.offset < first_waiting.get(m.partition, m.offset + 1)]

    def _dead_letter(self, msg: RawMessage, reason: str, detail: str) -> None:
        self.sink.dead_letter(msg, reason, detail)
        self.metrics.dead_lettered.labels(reason=reason).inc()

    def _seed_announcement(self) -> None:
        latest = self.follower.catch_up() if self.follower is not None else None
        self._announced = latest.version if latest is not None else None
        self.announce_if_changed()

    def announce_if_changed(self) -> VersionAnnouncement | None:
        """Announce the registry's ``CURRENT`` if it is not the version announced last."""
        version = self.registry.current_version()
        if version is None or version == self._announced:
            return None
        if self.lease is not None and not self.lease.held:
            return None
        record = announcement(self.registry, version, self.store)
        self.announcer.announce(record)
        self._announced = version
        return record

    def close(self) -> None:
        try:
            self.sink.flush()
        finally:
            self.learner.close()
            self.sink.close()
            self.source.close()
            self.announcer.close()
            if self.follower is not None:
                self.follower.close()
