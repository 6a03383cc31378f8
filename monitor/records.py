"""The messages that flow through the monitor.

``NewsItem`` comes in, ``Prediction`` goes out, ``Example`` is a labelled text for
training, ``Label`` is a late label for an item already seen, ``Alert`` is a surge event.
All are frozen dataclasses with a ``to_json``/``from_json`` pair where they cross Kafka.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["Alert", "Example", "Label", "NewsItem", "Prediction"]


@dataclass(frozen=True)
class NewsItem:
    """One input message: a news headline or a comment."""

    id: str
    text: str
    source: str
    published_at: datetime
    tickers: tuple[str, ...] = ()
    lang: str | None = None
    kind: str = "news"
    # Optional labels carried by the message itself (labelled training data in the stream).
    topic: str | None = None
    sentiment: str | None = None


@dataclass(frozen=True)
class Example:
    """A labelled text. Either label may be missing (partial labels); not both."""

    text: str
    topic: str | None = None
    sentiment: str | None = None
    source: str = "unknown"
    id: str | None = None
    time: datetime | None = None


@dataclass(frozen=True)
class Label:
    """A label that arrives after the item it labels (joined by ``id``)."""

    id: str
    topic: str | None = None
    sentiment: str | None = None
    source: str = "unknown"


@dataclass(frozen=True)
class Prediction:
    """The enriched result published for one input item (Kafka key = ``id``)."""

    id: str
    source: str
    kind: str
    published_at: str
    tickers: tuple[str, ...]
    topic: str
    topic_probs: dict[str, float]
    sentiment: str
    sentiment_probs: dict[str, float]
    confidence: float
    model_version: str
    latency_ms: float
    text: str = field(default="", repr=False)

    def to_json(self) -> bytes:
        body: dict[str, Any] = asdict(self)
        body["tickers"] = list(self.tickers)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Alert:
    """A negative-surge alert (``state`` is ``raised`` or ``cleared``)."""

    alert_id: str
    state: str
    scope: str  # "topic" or "ticker"
    key: str  # the topic name or the ticker
    negative_share: float
    baseline_share: float
    window_count: int
    window_seconds: float
    at: str  # ISO 8601 event time at which the alert changed state
    model_version: str
    example_ids: tuple[str, ...] = ()
    raised_at: str = ""  # ISO 8601 event time at which this alert was raised (same in both messages)
    raise_threshold: float = 0.0  # the negative share needed to raise, at ``at``
    clear_threshold: float = 0.0  # the share under which the clear condition holds, at ``at``
    cleared_by: str = ""  # cleared messages: "share" (share under clear_threshold) or "volume" (count < min_count)

    def to_json(self) -> bytes:
        body: dict[str, Any] = asdict(self)
        body["example_ids"] = list(self.example_ids)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
