"""Joining late labels to the predictions they label: a bounded LRU cache of recent predictions.

A label on the ``labels`` topic carries only an item id; the text, the event time and what the
model predicted live here, for the last ``capacity`` items. A label for an id that left the
cache is *late* (the ids of evicted items are remembered, a further ``capacity`` of them, text
not kept); one for an id never seen is *unknown*. The cache also answers "which recent items
was the model least sure about" for the label requests.

    >>> from datetime import UTC, datetime
    >>> cache = JoinCache(capacity=2)
    >>> for i, conf in enumerate((0.9, 0.4, 0.6)):
    ...     cache.put(Seen(f"n{i}", "text", "wire", datetime(2024, 1, 1, tzinfo=UTC), "Macro", "neutral", conf, "v1"))
    >>> cache.get("n0") is None, cache.was_evicted("n0"), [s.id for s in cache.most_uncertain(1, pool=10)]
    (True, True, ['n1'])
"""

from __future__ import annotations

import heapq
import json
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime

from monitor.records import Example, NewsItem, Prediction

__all__ = ["JoinCache", "Seen", "label_request"]


@dataclass(frozen=True)
class Seen:
    """What was predicted for one item, with what is needed to learn from its label."""

    id: str
    text: str
    source: str
    published_at: datetime
    topic: str
    sentiment: str
    confidence: float
    model_version: str
    requested: bool = False

    @classmethod
    def of(cls, item: NewsItem, prediction: Prediction) -> Seen:
        return cls(item.id, item.text, item.source, item.published_at, prediction.topic, prediction.sentiment,
                   prediction.confidence, prediction.model_version)

    def example(self, topic: str | None, sentiment: str | None) -> Example:
        """The labelled example: this item's text, source and time with the given labels."""
        return Example(self.text, topic=topic, sentiment=sentiment, source=self.source, id=self.id,
                       time=self.published_at)


class JoinCache:
    """``put`` recent predictions, ``get`` them by id; bounded, least recently used out first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[str, Seen] = OrderedDict()
        self._evicted: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, seen: Seen) -> None:
        """Remember ``seen`` (replacing an earlier prediction for the same id)."""
        self._items.pop(seen.id, None)
        self._evicted.pop(seen.id, None)
        self._items[seen.id] = seen
        while len(self._items) > self.capacity:
            old, _ = self._items.popitem(last=False)
            self._evicted[old] = None
            if len(self._evicted) > self.capacity:
                self._evicted.popitem(last=False)

    def get(self, item_id: str) -> Seen | None:
        """The prediction for ``item_id``, or None; a hit counts as a use (LRU)."""
        seen = self._items.get(item_id)
        if seen is not None:
            self._items.move_to_end(item_id)
        return seen

    def was_evicted(self, item_id: str) -> bool:
        """Whether ``item_id`` was in the cache but has been pushed out (its label is late)."""
        return item_id in self._evicted

    def most_uncertain(self, k: int, pool: int) -> list[Seen]:
        """The ``k`` lowest-confidence items among the ``pool`` most recent not requested before;
        they are marked as requested, so an item is asked for at most once."""
        recent: list[Seen] = []
        for seen in reversed(self._items.values()):
            if len(recent) >= pool:
                break
            if not seen.requested:
                recent.append(seen)
        chosen = heapq.nsmallest(k, recent, key=lambda s: s.confidence)
        for seen in chosen:
            self._items[seen.id] = replace(seen, requested=True)
        return chosen


def label_request(seen: Seen, reason: str, requested_at: datetime) -> bytes:
    """The JSON body published to the label-requests topic (key = item id) for one uncertain item.

    >>> from datetime import UTC
    >>> at = datetime(2024, 1, 1, tzinfo=UTC)
    >>> seen = Seen("n1", "oil falls", "wire", at, "Energy | Oil", "negative", 0.41, "v7")
    >>> label_request(seen, "confidence_drift", at)
    b'{"id":"n1","text":"oil falls","source":"wire","published_at":"2024-01-01T00:00:00+00:00","topic":"Energy | Oil",\
"sentiment":"negative","confidence":0.41,"reason":"confidence_drift","model_version":"v7",\
"requested_at":"2024-01-01T00:00:00+00:00"}'
    """
    body = {
        "id": seen.id,
        "text": seen.text,
        "source": seen.source,
        "published_at": seen.published_at.isoformat(),
        "topic": seen.topic,
        "sentiment": seen.sentiment,
        "confidence": seen.confidence,
        "reason": reason,
        "model_version": seen.model_version,
        "requested_at": requested_at.isoformat(),
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
