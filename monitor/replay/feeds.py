"""Historical feeds for replays: JSONL, CSV or Parquet rows -> events in event-time order.

A row is an input message (the fields of ``monitor.records.NewsItem``: ``id``, ``text``,
``source``, ``published_at``, ``tickers``, ``lang``, ``kind``) plus, optionally, its labels
(``topic``, ``sentiment``), when they became known (``label_delay_s`` after ``published_at``,
default 0) and who gave them (``label_source``). Other columns are ignored. Rows are validated
exactly as the daemon decodes a message (``monitor.stream.codec.decode_item``), plus label
names, delays and unique ids; every problem is reported as ``file, row: problem``.

Each row becomes an *item event* at ``published_at`` and, when labelled, a *label event* at
``published_at + label_delay_s``: that is when the label reaches the learner, as it would live.
Events are ordered by event time in whole milliseconds, then by row (over all files, in the
order given), an item before its own label: the order ``monitor feed`` puts the same file on
Kafka in.

    >>> rows = [{"id": "a", "text": "Oil jumps", "source": "wire", "published_at": "2026-03-02T09:00:00Z",
    ...          "sentiment": "positive", "label_delay_s": 30},
    ...         {"id": "b", "text": "Fed holds", "source": "wire", "published_at": "2026-03-02T09:00:10Z"}]
    >>> events = events_of(parse_rows(rows, "feed.jsonl"))
    >>> [(e.kind, e.id, e.at - events[0].at) for e in events]
    [('item', 'a', 0.0), ('item', 'b', 10.0), ('label', 'a', 30.0)]
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from monitor.labels import DEFAULT_TOPICS, SENTIMENTS
from monitor.records import Label, NewsItem
from monitor.stream.codec import DecodeError, decode_item

__all__ = ["FORMATS", "INPUT_FIELDS", "LABEL_FIELDS", "Event", "FeedError", "FeedRow", "events_of", "parse_rows",
           "read_feeds"]

INPUT_FIELDS = ("id", "text", "source", "published_at", "tickers", "lang", "kind")
LABEL_FIELDS = ("topic", "sentiment", "label_delay_s", "label_source")
#: File suffix -> format name.
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet",
           ".pq": "parquet"}
MAX_REPORTED = 20


class FeedError(ValueError):
    """Rows that cannot be replayed; ``problems`` lists ``(file, row, problem)``."""

    def __init__(self, problems: Sequence[tuple[str, int, str]], total: int | None = None) -> None:
        self.problems = list(problems)
        total = len(self.problems) if total is None else total
        lines = [f"{f}, row {r}: {p}" if r else f"{f}: {p}" for f, r, p in self.problems[:MAX_REPORTED]]
        if total > len(lines):
            lines.append(f"... and {total - len(lines)} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class FeedRow:
    """One valid row: the input message and its (optional) delayed label."""

    item: NewsItem
    label: Label | None
    label_delay_s: float
    file: str
    row: int


@dataclass(frozen=True)
class Event:
    """An item arriving (``kind='item'``) or a label becoming visible (``kind='label'``) at ``at``."""

    at: float
    """Event time, Unix seconds."""
    order: int
    """Tie-breaker: 2 * row index (item) or 2 * row index + 1 (its label)."""
    kind: str
    item: NewsItem
    """The item (for a label event: the item it labels)."""
    label: Label | None = None

    @property
    def id(self) -> str:
        return self.item.id

    @property
    def key(self) -> tuple[int, int]:
        return (round(self.at * 1000), self.order)


# --- reading --------------------------------------------------------------------------------------------
def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                body = json.loads(line)
            except json.JSONDecodeError as err:
                yield n, f"not JSON ({err.msg} at column {err.colno})"
                continue
            yield n, body if isinstance(body, dict) else f"expected a JSON object, got {type(body).__name__}"


def _csv_tickers(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        parsed = json.loads(value)
        return parsed if isinstance(parsed, list) else [value]
    for sep in (";", "|", " "):
        value = value.replace(sep, ",")
    return [t for t in value.split(",") if t]


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            row: dict[str, Any] = {k: (v if v != "" else None) for k, v in record.items() if k is not None}
            if row.get("tickers") is not None:
                try:
                    row["tickers"] = _csv_tickers(row["tickers"])
                except json.JSONDecodeError:
                    yield reader.line_num, f"'tickers' {row['tickers']!r} is not a list (use A;B or a JSON list)"
                    continue
            yield reader.line_num, row


def _plain(value: Any) -> Any:
    """Parquet/Arrow values -> what the JSON reader would give."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return value


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for n, record in enumerate(table.to_pylist(), 1):
        yield n, {k: _plain(v) for k, v in record.items()}


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt == "jsonl":
        return _jsonl_rows(path)
    if fmt == "csv":
        return _csv_rows(path)
    if fmt == "parquet":
        return _parquet_rows(path)
    raise FeedError([(str(path), 0, f"unknown feed format {path.suffix!r} (known: {', '.join(sorted(FORMATS))})")])


# --- validation -----------------------------------------------------------------------------------------
def _label_of(row: dict[str, Any], topics: Sequence[str], sentiments: Sequence[str]) -> tuple[Label | None, float]:
    topic, sentiment = row.get("topic"), row.get("sentiment")
    for key, value, allowed in (("topic", topic, topics), ("sentiment", sentiment, sentiments)):
        if value is not None and value not in allowed:
            raise ValueError(f"{key} {value!r} is not one of the model's labels")
    delay_raw = row.get("label_delay_s")
    try:
        delay = 0.0 if delay_raw is None else float(delay_raw)
    except (TypeError, ValueError):
        raise ValueError(f"'label_delay_s' must be a number of seconds, got {delay_raw!r}") from None
    if not math.isfinite(delay) or delay < 0:
        raise ValueError(f"'label_delay_s' must be >= 0, got {delay_raw!r}")
    if topic is None and sentiment is None:
        return None, delay
    source = row.get("label_source")
    return Label(id=str(row["id"]), topic=topic, sentiment=sentiment, source=str(source or "replay")), delay


def parse_rows(
    rows: Iterable[tuple[int, dict[str, Any] | str] | dict[str, Any]],
    file: str,
    *,
    topics: Sequence[str] = DEFAULT_TOPICS,
    sentiments: Sequence[str] = SENTIMENTS,
    max_text_chars: int = 20_000,
) -> list[FeedRow]:
    """Validate rows (``(row number, dict or problem)`` or plain dicts); raise ``FeedError`` listing problems."""
    out: list[FeedRow] = []
    problems: list[tuple[str, int, str]] = []
    seen: dict[str, int] = {}
    for n, entry in enumerate(rows, 1):
        row_no, row = entry if isinstance(entry, tuple) else (n, entry)
        if isinstance(row, str):
            problems.append((file, row_no, row))
            continue
        try:
            body = {k: row[k] for k in INPUT_FIELDS if k in row and row[k] is not None}
            item = decode_item(json.dumps(body, ensure_ascii=False).encode("utf-8"), max_text_chars=max_text_chars)
            label, delay = _label_of(row, topics, sentiments)
        except DecodeError as err:
            problems.append((file, row_no, f"{err.reason}: {err.detail}"))
            continue
        except (TypeError, ValueError) as err:
            problems.append((file, row_no, str(err)))
            continue
        if item.id in seen:
            problems.append((file, row_no, f"duplicate id {item.id!r} (first in row {seen[item.id]})"))
            continue
        seen[item.id] = row_no
        out.append(FeedRow(item, label, delay, file, row_no))
    if problems:
        raise FeedError(problems)
    return out


def read_feeds(
    paths: Sequence[Path | str],
    *,
    topics: Sequence[str] = DEFAULT_TOPICS,
    sentiments: Sequence[str] = SENTIMENTS,
    max_text_chars: int = 20_000,
) -> list[FeedRow]:
    """Read and validate every file (format by suffix); ids must be unique over all of them."""
    rows: list[FeedRow] = []
    problems: list[tuple[str, int, str]] = []
    first: dict[str, FeedRow] = {}
    for path in map(Path, paths):
        if not path.is_file():
            problems.append((str(path), 0, "no such file"))
            continue
        try:
            parsed = parse_rows(_rows(path), str(path), topics=topics, sentiments=sentiments,
                                max_text_chars=max_text_chars)
        except FeedError as err:
            problems.extend(err.problems)
            continue
        for r in parsed:
            if r.item.id in first:
                where = first[r.item.id]
                problems.append((r.file, r.row, f"duplicate id {r.item.id!r} (first in {where.file}, row {where.row})"))
                continue
            first[r.item.id] = r
            rows.append(r)
    if problems:
        raise FeedError(problems)
    if not rows:
        raise FeedError([(", ".join(map(str, paths)), 0, "no rows to replay")])
    return rows


def events_of(rows: Sequence[FeedRow]) -> list[Event]:
    """Item and label events of ``rows``, in event-time order (module docstring)."""
    events = []
    for n, r in enumerate(rows):
        at = r.item.published_at.timestamp()
        events.append(Event(at, 2 * n, "item", r.item))
        if r.label is not None:
            events.append(Event(at + r.label_delay_s, 2 * n + 1, "label", r.item, r.label))
    return sorted(events, key=lambda e: e.key)
