"""Joining late labels to the predictions they label: a bounded, durable store of recent predictions.

A label on the ``labels`` topic carries only an item id; the text, the event time and what the
model predicted live here. The store is an SQLite database in WAL mode (``path``; None keeps it
in memory), so the predictions awaiting their labels survive a restart or a crash: each ``put``
is committed at once (WAL with ``synchronous=NORMAL``: durable when the process dies; the monitor
calls ``put`` before it commits the input offsets). It is bounded twice: a prediction leaves
``retention_s`` after it was stored (default 48 h; None = no time bound), and at most
``capacity`` are kept, least recently used out first. A label for an id that left the store is
*late* (the ids that left are remembered, a further ``capacity`` of them, text not kept); one
for an id never seen is *unknown*. The store also answers "which recent items was the model
least sure about" for the label requests.

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
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

from monitor.records import Example, NewsItem, Prediction

__all__ = ["JOINS_FILE", "JoinCache", "Seen", "label_request"]

#: File name of the store in the learner's state directory.
JOINS_FILE = "label-joins.sqlite"
#: Bounds are enforced every this many puts (and at open), so a put stays one indexed insert.
_PRUNE_EVERY = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    confidence REAL NOT NULL,
    requested INTEGER NOT NULL DEFAULT 0,
    stored_at REAL NOT NULL,
    used INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_used ON seen (used);
CREATE INDEX IF NOT EXISTS seen_stored ON seen (stored_at);
CREATE TABLE IF NOT EXISTS evicted (id TEXT PRIMARY KEY, used INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS evicted_used ON evicted (used);
"""


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

    def to_json(self) -> str:
        body = asdict(self)
        body["published_at"] = self.published_at.isoformat()
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Seen:
        body = json.loads(text)
        body["published_at"] = datetime.fromisoformat(body["published_at"])
        return cls(**body)


class JoinCache:
    """``put`` recent predictions, ``get`` them by id; bounded in count and age, durable at ``path``."""

    def __init__(self, capacity: int, path: str | Path | None = None, *, retention_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if retention_s is not None and retention_s <= 0:
            raise ValueError(f"retention_s must be > 0, got {retention_s}")
        self.capacity = capacity
        self.retention_s = retention_s
        self.path = None if path is None else Path(path)
        self._clock = clock
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path), isolation_level=None,
                                   check_same_thread=False)
        self._lock = threading.Lock()  # the learner's worker thread may ask for label requests
        if self.path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT MAX(m) FROM (SELECT MAX(used) AS m FROM seen UNION ALL "
                               "SELECT MAX(used) FROM evicted)").fetchone()
        self._tick = int(row[0] or 0)
        self._puts = 0
        self._count = int(self._db.execute("SELECT COUNT(*) FROM seen").fetchone()[0])
        self._prune()

    def __len__(self) -> int:
        return self._count

    def _next(self) -> int:
        self._tick += 1
        return self._tick

    def put(self, seen: Seen) -> None:
        """Remember ``seen`` (replacing an earlier prediction for the same id)."""
        with self._lock:
            existed = self._db.execute("SELECT 1 FROM seen WHERE id = ?", (seen.id,)).fetchone() is not None
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM evicted WHERE id = ?", (seen.id,))
            self._db.execute("INSERT OR REPLACE INTO seen (id, body, confidence, requested, stored_at, used) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (seen.id, seen.to_json(), seen.confidence,
                                                          int(seen.requested), self._clock(), self._next()))
            self._db.execute("COMMIT")
            self._count += 0 if existed else 1
            self._puts += 1
            if self._count > self.capacity or self._puts % _PRUNE_EVERY == 0:
                self._prune()

    def get(self, item_id: str) -> Seen | None:
        """The prediction for ``item_id``, or None; a hit counts as a use (LRU)."""
        with self._lock:
            row = self._db.execute("SELECT body, requested FROM seen WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE seen SET used = ? WHERE id = ?", (self._next(), item_id))
            return replace(Seen.from_json(row[0]), requested=bool(row[1]))

    def was_evicted(self, item_id: str) -> bool:
        """Whether ``item_id`` was in the store but has left it (its label is late)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM evicted WHERE id = ?", (item_id,)).fetchone() is not None

    def most_uncertain(self, k: int, pool: int) -> list[Seen]:
        """The ``k`` lowest-confidence items among the ``pool`` most recent not requested before;
        they are marked as requested, so an item is asked for at most once."""
        with self._lock:
            rows = self._db.execute("SELECT body FROM seen WHERE requested = 0 ORDER BY used DESC LIMIT ?",
                                    (pool,)).fetchall()
            recent = [Seen.from_json(r[0]) for r in rows]
            chosen = heapq.nsmallest(k, recent, key=lambda s: s.confidence)
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE seen SET requested = 1 WHERE id = ?", [(s.id,) for s in chosen])
            self._db.execute("COMMIT")
            return [replace(s, requested=True) for s in chosen]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _prune(self) -> None:
        """Move what is past the retention time or over capacity to ``evicted``; bound ``evicted`` too."""
        db = self._db
        db.execute("BEGIN")
        if self.retention_s is not None:
            cutoff = self._clock() - self.retention_s
            db.execute("INSERT OR REPLACE INTO evicted (id, used) SELECT id, used FROM seen WHERE stored_at < ?",
                       (cutoff,))
            db.execute("DELETE FROM seen WHERE stored_at < ?", (cutoff,))
        self._count = int(db.execute("SELECT COUNT(*) FROM seen").fetchone()[0])
        over = self._count - self.capacity
        if over > 0:
            db.execute("INSERT OR REPLACE INTO evicted (id, used) SELECT id, used FROM seen ORDER BY used LIMIT ?",
                       (over,))
            db.execute("DELETE FROM seen WHERE id IN (SELECT id FROM seen ORDER BY used LIMIT ?)", (over,))
            self._count = self.capacity
        evicted = int(db.execute("SELECT COUNT(*) FROM evicted").fetchone()[0])
        if evicted > self.capacity:
            db.execute("DELETE FROM evicted WHERE id IN (SELECT id FROM evicted ORDER BY used LIMIT ?)",
                       (evicted - self.capacity,))
        db.execute("COMMIT")


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
