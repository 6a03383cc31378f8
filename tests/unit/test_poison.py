"""No bytes on an input topic can stop the daemon: hostile shapes, fuzzed bytes and JSON, raising code.

The real decoder, pipeline, tokenizer (tiny random BERT) and ``KafkaSink`` run; only the Kafka
clients are replaced (``tests/support/fakes.py``). Every input message ends as exactly one
result or one dead letter with a reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeProducer, RecordingSource, raw_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from monitor.app import Monitor
from monitor.config import MonitorConfig, load_config
from monitor.metrics import DEAD_LETTER_REASONS, Metrics
from monitor.records import Label, NewsItem, Prediction
from monitor.resilience import Outage
from monitor.stream.sink import MAX_REQUEST_SIZE, KafkaSink

GOOD = {"id": "n1", "text": "Oil prices jump", "source": "wire", "published_at": "2026-03-02T09:00:00Z"}
KAFKA_TS = 1_772_441_000_000  # 2026-03-02T08:43:20Z


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kafka_io import build_tiny_registry

    return build_tiny_registry(tmp_path_factory.mktemp("models"))


def config(registry: Path) -> MonitorConfig:
    return load_config(None, env={"MONITOR__MODEL__PATH": str(registry), "MONITOR__MODEL__DEVICE": "cpu",
                                  "MONITOR__KAFKA__INPUT_TOPICS": "news", "MONITOR__KAFKA__OUTPUT_TOPIC": "out",
                                  "MONITOR__KAFKA__DEAD_LETTER_TOPIC": "dlq", "MONITOR__KAFKA__LABELS_TOPIC": "labels",
                                  "MONITOR__BATCH__MAX_TEXT_CHARS": "500"})


class Harness:
    def __init__(self, registry: Path, learner: Any = None, scorer: Any = None) -> None:
        self.log: list[Any] = []
        self.producer = FakeProducer(self.log)
        self.source = RecordingSource([], self.log)
        cfg = config(registry)
        self.sink = KafkaSink(cfg.kafka, producer_factory=lambda **kw: self.producer)
        self.monitor = Monitor(cfg, metrics=Metrics(CollectorRegistry()), source=self.source,  # type: ignore[arg-type]
                               sink=self.sink, learner=learner, scorer=scorer)
        self.monitor.outage = Outage(self.monitor.metrics, backoff_min_s=0.001, backoff_max_s=0.002)

    def feed(self, values: list[bytes | None], topic: str = "news") -> None:
        messages = [raw_message(v, i, topic=topic, timestamp_ms=KAFKA_TS) for i, v in enumerate(values)]
        self.monitor.handle(messages)

    def dead(self) -> list[tuple[str, str, bytes]]:
        """``(reason, detail, value)`` of each dead letter."""
        out = []
        for _, _, value, headers in self.producer.on("dlq"):
            h = dict(headers or [])
            out.append((h["dlq.reason"].decode(), h["dlq.detail"].decode(), value))
        return out


@pytest.fixture
def harness(registry: Path) -> Iterator[Harness]:
    h = Harness(registry)
    yield h


def body(**changes: Any) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


HOSTILE: list[tuple[str, bytes | None, str]] = [
    ("nested 5000 deep", b'{"id": "x", "text": ' + b"[" * 5000 + b"]" * 5000 + b"}", "invalid_json"),
    ("nested objects", b'{"a":' * 3000 + b"1" + b"}" * 3000, "invalid_json"),
    ("5000-digit integer", b'{"id": "x", "n": ' + b"9" * 5000 + b"}", "invalid_json"),
    ("5000-digit integer id", b'{"id": ' + b"7" * 5000 + b', "text": "t"}', "invalid_json"),
    ("surrogate in text", body(text="\ud800 oil"), "invalid_utf8"),
    ("surrogate in source", body(source="wi\udfffre"), "invalid_utf8"),
    ("surrogate in tickers", body(tickers=["XOM", "\ud800"]), "invalid_utf8"),
    ("surrogate in id", body(id="\udc00"), "invalid_utf8"),
    ("zero-width only", body(text="\u200b\u200c\u200d\ufeff"), "empty_text"),
    ("NULs only", body(text="\x00\x00\x00"), "empty_text"),
    ("null value", None, "not_an_object"),
    ("JSON null", b"null", "not_an_object"),
    ("year 2062", body(published_at="2062-01-01T00:00:00Z"), "bad_timestamp"),
    ("year 9999 at -23:59", body(published_at="9999-12-31T23:59:59-23:59"), "bad_timestamp"),
    ("600 KB id", body(id="i" * 600_000), "oversize"),
    ("95,000 tickers", body(tickers=["ABCDEFGHIJ"] * 95_000), "oversize"),
    ("1,048,400-byte invalid message", b"{" + b"x" * 1_048_399, "invalid_json"),
]


@pytest.mark.parametrize(("name", "value", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_message_is_dead_lettered_with_its_reason_and_the_batch_goes_on(
    harness: Harness, name: str, value: bytes | None, reason: str
) -> None:
    harness.feed([body(id="before"), value, body(id="after")])
    assert [json.loads(v)["id"] for _, _, v, _ in harness.producer.on("out")] == ["before", "after"]
    [(got, detail, kept)] = harness.dead()
    assert got == reason, detail
    assert reason in DEAD_LETTER_REASONS
    assert harness.source.committed == {("news", 0): 3}
    if len(value or b"") < MAX_REQUEST_SIZE // 2:
        assert kept == (value or b"")  # the original bytes, unchanged


def test_a_dead_letter_too_large_keeps_its_headers_and_a_truncated_value(harness: Harness) -> None:
    value = b"{" + b"x" * 1_048_399
    harness.feed([value])
    [(_, _, kept, headers)] = harness.producer.on("dlq")
    h = dict(headers or [])
    assert h["dlq.reason"] == b"invalid_json" and h["dlq.truncated"] == str(len(value)).encode()
    assert h["dlq.offset"] == b"0" and h["dlq.topic"] == b"news"
    assert value.startswith(kept) and 0 < len(kept) < len(value)


def test_a_byte_order_mark_is_accepted(harness: Harness) -> None:
    harness.feed([b"\xef\xbb\xbf" + body(id="bom")])
    assert [json.loads(v)["id"] for _, _, v, _ in harness.producer.on("out")] == ["bom"]


def test_a_future_timestamp_within_the_skew_is_kept(harness: Harness) -> None:
    harness.feed([body(published_at="2026-03-02T09:40:00Z"), body(published_at="2026-03-02T09:45:00Z")])
    assert len(harness.producer.on("out")) == 1  # 56 min ahead kept, 61 min ahead dead-lettered
    assert [r for r, _, _ in harness.dead()] == ["bad_timestamp"]


class PickyScorer:
    """Classifies like a model but raises on one text, as a tokenizer bug would."""

    version = "picky-1"

    class model:  # mimics Predictor.model
        topics = ("Macro",)
        sentiments = ("negative", "neutral", "positive")

    def predict(self, texts: list[str], sources: list[str] | None = None) -> list[Any]:
        from monitor.model.predictor import Scored

        if any("poison" in t for t in texts):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, ...]")
        return [Scored("Macro", {"Macro": 1.0}, "neutral", {"negative": 0.1, "neutral": 0.8, "positive": 0.1}, 0.8)
                for _ in texts]


def test_a_message_that_makes_classification_raise_is_isolated(registry: Path) -> None:
    h = Harness(registry, scorer=PickyScorer())
    h.feed([body(id=f"n{i}", text="poison pill" if i == 5 else f"text {i}") for i in range(12)])
    assert [json.loads(v)["id"] for _, _, v, _ in h.producer.on("out")] == [f"n{i}" for i in range(12) if i != 5]
    [(reason, detail, value)] = h.dead()
    assert reason == "processing_error" and detail.startswith("TypeError:") and b'"n5"' in value
    assert h.source.committed == {("news", 0): 12}


class PickyLearner:
    """A learner whose label join raises for one id, and whose observe raises for one item."""

    def __init__(self) -> None:
        self.labels: list[str] = []
        self.observed: list[str] = []

    def observe(self, items: list[NewsItem], predictions: list[Prediction]) -> None:
        if any(i.id == "bad-item" for i in items):
            raise KeyError("bad-item")
        self.observed.extend(i.id for i in items)

    def on_label(self, label: Label) -> None:
        if label.id == "bad-label":
            raise ValueError("cannot join")
        self.labels.append(label.id)

    def persist(self) -> None: ...

    def drain_label_requests(self) -> list[tuple[str, bytes]]:
        return []

    def close(self) -> None: ...


def test_a_label_or_item_that_makes_the_learner_raise_is_isolated(registry: Path) -> None:
    learner = PickyLearner()
    h = Harness(registry, learner=learner, scorer=PickyScorer())
    labels = [json.dumps({"id": i, "sentiment": "negative"}).encode() for i in ("a", "bad-label", "b")]
    items = [body(id=i) for i in ("x", "bad-item", "y")]
    messages = [raw_message(v, n, topic="labels") for n, v in enumerate(labels)]
    messages += [raw_message(v, n, topic="news", timestamp_ms=KAFKA_TS) for n, v in enumerate(items)]
    messages.append(raw_message(None, 3, topic="labels"))  # a null label: not_an_object, like a null item
    h.monitor.handle(messages)
    assert learner.labels == ["a", "b"] and learner.observed == ["x", "y"]
    assert sorted((r, d.split(":")[0]) for r, d, _ in h.dead()) == [
        ("not_an_object", "the message value is null (a tombstone)"), ("processing_error", "KeyError"),
        ("processing_error", "ValueError")]
    assert h.source.committed == {("labels", 0): 4, ("news", 0): 3}


# --- property-based: arbitrary bytes and arbitrary JSON in every field ---------------------------------
# Text with lone surrogates too (hypothesis leaves them out by default): they reach JSON as "\\udXXX".
texts = st.text(max_size=40) | st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010,
                                                     categories=["Cs", "Co", "Lo", "Cn"]), max_size=5)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
FIELDS = ("id", "text", "source", "published_at", "tickers", "kind", "lang", "topic", "sentiment")


@st.composite
def messages(draw: st.DrawFn) -> bytes | None:
    """Arbitrary bytes, arbitrary JSON, or a valid item with fields dropped or replaced by any JSON or text."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=200))
    if choice == 1:
        return draw(st.none() | st.just(b"")) if draw(st.booleans()) else json.dumps(draw(json_values)).encode()
    fields: dict[str, Any] = {**GOOD, "tickers": ["XOM"]}
    if choice == 3:  # one field, a string of the expected type: reaches the tokenizer and the encoder
        fields[draw(st.sampled_from(("text", "text", "id", "source", "lang")))] = draw(texts.map(lambda t: f"{t} x"))
        return json.dumps(fields).encode()
    for key in draw(st.sets(st.sampled_from(FIELDS), min_size=1, max_size=3)):
        if draw(st.booleans()):
            fields.pop(key, None)
        else:
            fields[key] = draw(json_values)
    return json.dumps(fields, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(messages(), min_size=1, max_size=8))
def test_fuzzed_messages_never_stop_the_daemon_and_each_gets_one_outcome(harness: Harness,
                                                                         batch: list[bytes | None]) -> None:
    before_out, before_dlq = len(harness.producer.on("out")), len(harness.producer.on("dlq"))
    harness.feed(batch)
    outs = len(harness.producer.on("out")) - before_out
    dead = harness.dead()[before_dlq:]
    assert outs + len(dead) == len(batch)
    assert all(reason in DEAD_LETTER_REASONS for reason, _, _ in dead)
    assert not [d for r, d, _ in dead if r == "processing_error"], "the decoder let something through"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(messages(), min_size=1, max_size=6))
def test_fuzzed_labels_never_stop_the_daemon(registry: Path, batch: list[bytes | None]) -> None:
    h = Harness(registry, learner=PickyLearner(), scorer=PickyScorer())
    h.feed(batch, topic="labels")
    assert len(h.dead()) <= len(batch) and h.source.committed == {("labels", 0): len(batch)}
