"""Helpers for integration tests: input messages, produce to / read back from topics, a rule-based scorer."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer


def item(i: int, text: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {"id": f"it-{i:05d}", "text": text or f"Company {i} shares rise after earnings beat",
            "source": "test-wire", "published_at": "2026-03-02T09:00:00Z", "tickers": ["ABC"], "kind": "news"}
    body.update(extra)
    return body


def produce(bootstrap: str, topic: str, values: Iterable[bytes | dict[str, Any]]) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    n = 0
    for v in values:
        producer.send(topic, value=v if isinstance(v, bytes) else json.dumps(v).encode())
        n += 1
    producer.flush()
    producer.close()
    return n


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list[Any]:
    """Read ``topic`` from the beginning until ``expected`` messages arrived or time runs out."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
    finally:
        consumer.close()
    return out


class KeywordScorer:
    """A deterministic stand-in for the model: 'plunge' -> negative, else neutral (isolates alerting)."""

    version = "rules-1"

    class _Model:
        topics = ("Energy | Oil", "Macro")
        sentiments = ("negative", "neutral", "positive")

    model = _Model()

    def predict(self, texts: Sequence[str], sources: Sequence[str] | None = None) -> list[object]:
        from monitor.model.predictor import Scored

        out = []
        for t in texts:
            neg = "plunge" in t
            out.append(Scored("Energy | Oil", {"Energy | Oil": 0.9, "Macro": 0.1},
                              "negative" if neg else "neutral",
                              {"negative": 0.9 if neg else 0.05, "neutral": 0.05 if neg else 0.9, "positive": 0.05},
                              0.9))
        return out


def build_tiny_registry(root: Path) -> Path:
    """A model registry at ``root/registry`` serving ``v-tiny-1``: a tiny random BERT, real tokenizer."""
    from transformers import AutoTokenizer

    from monitor.labels import DEFAULT_TOPICS, SENTIMENTS
    from monitor.model.backbone import tiny_backbone
    from monitor.model.checkpoint import CheckpointMeta, save_checkpoint
    from monitor.model.network import MultiTaskClassifier
    from monitor.registry import ModelRegistry

    backbone = tiny_backbone(root / "backbone")
    model = MultiTaskClassifier.from_backbone(backbone, DEFAULT_TOPICS, SENTIMENTS)
    meta = CheckpointMeta(version="v-tiny-1", parent=None, backbone=str(backbone), topics=DEFAULT_TOPICS,
                          sentiments=SENTIMENTS, data_fingerprint="none")
    registry = ModelRegistry(root / "registry").init()
    save_checkpoint(model, AutoTokenizer.from_pretrained(str(backbone)), meta, registry.path(meta.version))
    registry.set_current(meta.version, reason="test fixture")
    return registry.root
