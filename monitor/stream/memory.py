"""In-memory ends of the run loop: a source of given messages and a sink that collects the outputs.

``monitor.app.Monitor.handle`` is the one per-batch loop (decode, classify, publish, flush, learn,
commit). The daemon runs it over ``KafkaSource``/``KafkaSink``; the direct replay
(``monitor.replay.engine.run_direct``) and unit tests run the same loop over these, so the
delivery order is written once. The collector applies the producer's size limit like
``KafkaSink`` (a result too large is refused, and the loop dead-letters its input ``oversize``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.records import Alert, Label, NewsItem, Prediction
from monitor.stream.sink import MAX_REQUEST_SIZE, record_size
from monitor.stream.source import RawMessage

__all__ = ["CollectorSink", "MemorySource", "item_body", "label_body"]


def item_body(item: NewsItem) -> bytes:
    """An input message for ``item`` as a producer would send it (the inverse of ``decode_item``)."""
    body: dict[str, Any] = {"id": item.id, "text": item.text, "source": item.source,
                            "published_at": item.published_at.isoformat(), "tickers": list(item.tickers),
                            "kind": item.kind}
    if item.lang is not None:
        body["lang"] = item.lang
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def label_body(label: Label) -> bytes:
    """A ``labels`` message for ``label`` (fields that are None left out)."""
    body = {"id": label.id, "topic": label.topic, "sentiment": label.sentiment, "source": label.source}
    return json.dumps({k: v for k, v in body.items() if v is not None}, ensure_ascii=False).encode("utf-8")


class MemorySource:
    """Hands out nothing by itself (the caller passes batches to ``handle``); records commits."""

    def __init__(self) -> None:
        self.committed: dict[tuple[str, int], int] = {}

    def next_batch(self, max_batch: int, max_wait_ms: int, idle_ms: int = 500, *, adaptive: bool = False
                   ) -> list[RawMessage]:
        return []

    def commit(self, messages: Sequence[RawMessage]) -> bool:
        for m in messages:
            key = (m.topic, m.partition)
            self.committed[key] = max(self.committed.get(key, 0), m.offset + 1)
        return True

    def lag(self) -> dict[tuple[str, int], int]:
        return {}

    def close(self) -> None: ...


@dataclass
class CollectorSink:
    """Keeps every output in order; ``flush`` always succeeds."""

    max_request_size: int = MAX_REQUEST_SIZE
    predictions: list[Prediction] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[tuple[RawMessage, str, str]] = field(default_factory=list)
    label_requests: list[tuple[str, bytes]] = field(default_factory=list)
    unacknowledged: int = 0

    def _fits(self, key: str, value: bytes) -> bool:
        return record_size(key.encode("utf-8"), value, None) <= self.max_request_size

    def prediction(self, p: Prediction) -> bool:
        if not self._fits(p.id, p.to_json()):
            return False
        self.predictions.append(p)
        return True

    def alert(self, a: Alert) -> bool:
        self.alerts.append(a)
        return True

    def label_request(self, item_id: str, body: bytes) -> bool:
        self.label_requests.append((item_id, body))
        return True

    def dead_letter(self, message: RawMessage, reason: str, detail: str) -> None:
        self.dead_letters.append((message, reason, detail))

    def flush(self) -> int:
        return 0

    def close(self) -> None: ...
