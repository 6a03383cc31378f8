"""The scale-out roles' batch logic, isolated from Kafka: analytics rebuild, learner label waiting, versions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.artifacts import Artifact, ArtifactError, DirectoryStore
from monitor.config import load_config
from monitor.metrics import Metrics
from monitor.records import Alert
from monitor.roles.analytics import AnalyticsOwner
from monitor.roles.learner import LearnerRole
from monitor.stream.source import RawMessage
from monitor.stream.versions import AnnouncedVersions, VersionAnnouncement

START = datetime(2026, 3, 2, 9, tzinfo=UTC)
ALERTS = {"MIN_COUNT": "10", "WINDOW_SECONDS": "30", "BASELINE_SECONDS": "120", "RATIO": "2", "MIN_DELTA": "0.2",
          "HOLD_SECONDS": "20", "CLEAR_SECONDS": "10", "DEFAULT_BASELINE": "0.2", "MIN_BASELINE_COUNT": "1000"}


def prediction(i: int, topic: str, sentiment: str) -> bytes:
    return json.dumps({"id": f"p{i}", "source": "wire", "kind": "news",
                       "published_at": (START + timedelta(seconds=i)).isoformat(), "tickers": [], "topic": topic,
                       "topic_probs": {}, "sentiment": sentiment, "sentiment_probs": {}, "confidence": 0.9,
                       "model_version": "v1", "latency_ms": 1.0, "text": f"text {i}"}).encode()


def message(topic: str, offset: int, value: bytes, ts: int = 0, partition: int = 0) -> RawMessage:
    return RawMessage(topic, partition, offset, None, value, ts, 0.0)


class Sink:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.dead: list[tuple[RawMessage, str]] = []
        self.requests: list[str] = []
        self.flushes = 0

    def alert(self, a: Alert) -> bool:
        self.alerts.append(a)
        return True

    def dead_letter(self, msg: RawMessage, reason: str, detail: str) -> None:
        self.dead.append((msg, reason))

    def label_request(self, item_id: str, body: bytes) -> bool:
        self.requests.append(item_id)
        return True

    def flush(self) -> int:
        self.flushes += 1
        return 0

    def close(self) -> None: ...


class Source:
    def __init__(self, resume: int = 0, caught_up: bool = False) -> None:
        self.resume, self.is_caught_up = resume, caught_up
        self.commits: list[list[RawMessage]] = []

    def replayed(self, msg: RawMessage) -> bool:
        return msg.offset < self.resume

    def commit(self, messages: Sequence[RawMessage]) -> bool:
        self.commits.append(list(messages))
        return True

    def partitions(self, topic: str) -> list[int]:
        return [0]

    def at_end(self, topic: str) -> set[int]:
        return {0} if self.is_caught_up else set()

    def close(self) -> None: ...


def surge_stream() -> list[RawMessage]:
    """80 s of mixed news, 40 s of negative Energy news, 80 s of mixed news again."""
    sentiments = ("positive", "neutral", "negative", "neutral", "positive")
    values = [prediction(i, "Energy", sentiments[i % 5]) for i in range(80)]
    values += [prediction(i, "Energy", "negative") for i in range(80, 120)]
    values += [prediction(i, "Energy", sentiments[i % 5]) for i in range(120, 200)]
    return [message("predictions", i, v) for i, v in enumerate(values)]


def owner(resume: int) -> tuple[AnalyticsOwner, Sink]:
    config = load_config(None, env={f"MONITOR__ALERTS__{k}": v for k, v in ALERTS.items()})
    sink = Sink()
    return AnalyticsOwner(config, metrics=Metrics(CollectorRegistry()), source=Source(resume), sink=sink), sink


def run(analytics: AnalyticsOwner, messages: list[RawMessage], batch: int = 16) -> None:
    for i in range(0, len(messages), batch):
        analytics.handle(messages[i:i + batch])


def test_a_restarted_analytics_owner_rebuilds_its_windows_and_alerts_once() -> None:
    messages = surge_stream()
    whole, sink = owner(resume=0)
    run(whole, messages)
    assert [a.state for a in sink.alerts] == ["raised", "cleared"]
    raised_at = int((datetime.fromisoformat(sink.alerts[0].at) - START).total_seconds())  # one item a second

    # Crash after the raise was committed: the new owner re-reads from the start of the topic
    # (the rewind), rebuilds the raised state from the replayed part and sends only the clear.
    crash = raised_at + 10
    before, first = owner(resume=0)
    run(before, messages[:crash])
    after, second = owner(resume=crash)
    run(after, messages)
    assert [a.state for a in first.alerts] == ["raised"]
    assert [a.state for a in second.alerts] == ["cleared"]
    assert second.alerts[0].alert_id == sink.alerts[0].alert_id and after.rebuilt == crash


def test_a_result_published_twice_counts_once_in_the_windows_and_alerts() -> None:
    messages = surge_stream()
    once, sink_once = owner(resume=0)
    run(once, messages)
    # A replica re-read the first 60 s after a lost commit and published them again, mid-surge:
    # the copies come later in the result stream, under new offsets.
    copies = [message("predictions", len(messages) + i, m.value) for i, m in enumerate(messages[:60])]
    twice, sink_twice = owner(resume=0)
    run(twice, messages[:100] + copies + messages[100:])
    assert twice.metrics.registry.get_sample_value("monitor_duplicates_skipped_total") == 60
    assert twice.tracker.snapshot() == once.tracker.snapshot()
    assert [(a.state, a.at) for a in sink_twice.alerts] == [(a.state, a.at) for a in sink_once.alerts]


def test_an_undecodable_prediction_is_dead_lettered_and_the_rest_counted() -> None:
    analytics, sink = owner(resume=0)
    analytics.handle([message("predictions", 0, b"{not json"), *surge_stream()[:5]])
    assert [reason for _, reason in sink.dead] == ["invalid_json"]
    assert analytics.source.commits[-1][-1].offset == 4


class FakeLearner:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.labels: list[str] = []

    def observe(self, items: Sequence[Any], predictions: Sequence[Any]) -> None:
        self.seen.extend(p.id for p in predictions)

    def on_label(self, label: Any) -> None:
        assert label.id in self.seen, "a label reached the learner before its prediction"
        self.labels.append(label.id)

    def persist(self) -> None: ...

    def drain_label_requests(self) -> list[tuple[str, bytes]]:
        return []

    def close(self) -> None: ...


def test_the_learner_role_holds_a_label_until_its_prediction_is_read(tmp_path: Path) -> None:
    config = load_config(None, env={"MONITOR__MODEL__PATH": str(tmp_path)})
    learner, source = FakeLearner(), Source()
    role = LearnerRole(config, metrics=Metrics(CollectorRegistry()), learner=learner, source=source, sink=Sink(),
                       announcer=None)
    label = json.dumps({"id": "p7", "sentiment": "negative"}).encode()
    # The label (sent at t=2000 ms) arrives before the prediction partition was read past t=2000.
    role.handle([message("predictions", 0, prediction(6, "Energy", "neutral"), ts=1000),
                 message("labels", 0, label, ts=2000)])
    assert learner.labels == [] and [m.topic for m in source.commits[-1]] == ["predictions"]
    role.handle([message("predictions", 1, prediction(7, "Energy", "neutral"), ts=2500)])
    assert learner.labels == ["p7"]
    assert [(m.topic, m.offset) for m in source.commits[-1]] == [("predictions", 1), ("labels", 0)]


def test_a_waiting_label_goes_on_once_the_predictions_are_read_to_their_end(tmp_path: Path) -> None:
    config = load_config(None, env={"MONITOR__MODEL__PATH": str(tmp_path)})
    learner, source = FakeLearner(), Source()
    role = LearnerRole(config, metrics=Metrics(CollectorRegistry()), learner=learner, source=source, sink=Sink(),
                       announcer=None)
    role.handle([message("predictions", 0, prediction(7, "Energy", "neutral"), ts=1000),
                 message("labels", 0, json.dumps({"id": "p7", "sentiment": "negative"}).encode(), ts=5000)])
    assert learner.labels == []
    source.is_caught_up = True
    role.handle([])
    assert learner.labels == ["p7"]


def test_a_replica_fetches_announced_versions_verified_and_retries_a_broken_one(tmp_path: Path) -> None:
    version = tmp_path / "src"
    version.mkdir()
    (version / "model.safetensors").write_bytes(b"weights")
    artifact = DirectoryStore(tmp_path / "store").publish("v2", version)

    class Follower:
        latest: VersionAnnouncement | None = None
        delivered_version = ""

        def poll(self) -> VersionAnnouncement | None:
            if self.latest is None or self.latest.version == self.delivered_version:
                return None
            return self.latest

        def delivered(self, v: str) -> None:
            self.delivered_version = v

    now = [0.0]
    follower = Follower()
    watcher = AnnouncedVersions(follower, DirectoryStore(tmp_path / "store"), "v1", clock=lambda: now[0])  # type: ignore[arg-type]
    assert watcher.changed() is None
    bad = Artifact("v2", artifact.location, {"model.safetensors": "0" * 64})
    follower.latest = VersionAnnouncement("v2", bad.location, bad.checksums)
    assert watcher.changed() is None  # checksum mismatch: keeps serving v1
    follower.latest = VersionAnnouncement("v2", artifact.location, artifact.checksums)
    assert watcher.changed() is None  # still backing off
    now[0] = 5.0
    assert watcher.changed() == Path(artifact.location)
    watcher.loaded("v2")
    assert watcher.changed() is None


def test_fetch_refuses_a_tampered_file(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "meta.json").write_text("{}")
    store = DirectoryStore(tmp_path / "store")
    artifact = store.publish("v1", tmp_path / "v")
    (Path(artifact.location) / "meta.json").write_text('{"x": 1}')
    with pytest.raises(ArtifactError, match="sha256"):
        store.fetch(artifact)
