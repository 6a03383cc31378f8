"""Bytes <-> records for the Kafka edge, with a reason for every rejection.

An input message is a UTF-8 JSON object (see README, "Message formats")::

    >>> item = decode_item(b'{"id": "n1", "text": "Oil jumps", "source": "wire",'
    ...                    b' "published_at": "2026-11-02T09:30:00Z", "tickers": ["XOM"]}')
    >>> item.id, item.tickers, item.published_at.isoformat()
    ('n1', ('XOM',), '2026-11-02T09:30:00+00:00')
    >>> decode_item(b'{"id": "n2", "text": "Fed holds"}')
    Traceback (most recent call last):
    ...
    monitor.stream.codec.DecodeError: missing_field: 'source' is required

Every failure is a ``DecodeError`` whose ``reason`` is one of
``monitor.metrics.DEAD_LETTER_REASONS``, so the dead-letter topic and its counter agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.records import Label, NewsItem

__all__ = ["DecodeError", "decode_item", "decode_label", "parse_time"]

_KINDS = ("news", "comment")


class DecodeError(ValueError):
    """A message that cannot become a record; ``reason`` is a fixed dead-letter reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_time(value: str) -> datetime:
    """Parse ISO 8601; a time without zone is taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _load_object(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DecodeError("invalid_utf8", f"byte {err.start} is not valid UTF-8") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as err:
        raise DecodeError("invalid_json", f"{err.msg} at line {err.lineno} column {err.colno}") from None
    if not isinstance(body, dict):
        raise DecodeError("not_an_object", f"expected a JSON object, got {type(body).__name__}")
    return body


def _required_str(body: dict[str, Any], key: str) -> str:
    if key not in body or body[key] is None:
        raise DecodeError("missing_field", f"{key!r} is required")
    value = body[key]
    if not isinstance(value, str):
        raise DecodeError("wrong_type", f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError("wrong_type", f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _label_value(body: dict[str, Any], key: str, allowed: Sequence[str] | None) -> str | None:
    value = _optional_str(body, key)
    if value is not None and allowed is not None and value not in allowed:
        raise DecodeError("bad_label", f"{key} {value!r} is not one of the configured labels")
    return value


def decode_item(
    raw: bytes,
    *,
    max_text_chars: int = 20_000,
    topics: Sequence[str] | None = None,
    sentiments: Sequence[str] | None = None,
) -> NewsItem:
    """Decode one input message; raise ``DecodeError`` with the reason on any problem."""
    body = _load_object(raw)
    item_id = _required_str(body, "id")
    if not item_id.strip():
        raise DecodeError("missing_field", "'id' is empty")
    text = _required_str(body, "text")
    if not text.strip():
        raise DecodeError("empty_text", "'text' is empty or whitespace")
    if len(text) > max_text_chars:
        raise DecodeError("oversize", f"'text' has {len(text)} characters, the limit is {max_text_chars}")
    source = _required_str(body, "source")
    stamp = _required_str(body, "published_at")
    try:
        published_at = parse_time(stamp)
    except ValueError:
        raise DecodeError("bad_timestamp", f"'published_at' {stamp!r} is not ISO 8601") from None
    tickers_raw = body.get("tickers", [])
    if tickers_raw is None:
        tickers_raw = []
    if not isinstance(tickers_raw, list) or not all(isinstance(t, str) for t in tickers_raw):
        raise DecodeError("wrong_type", "'tickers' must be a list of strings")
    kind = _optional_str(body, "kind") or "news"
    if kind not in _KINDS:
        raise DecodeError("wrong_type", f"'kind' must be one of {', '.join(_KINDS)}, got {kind!r}")
    return NewsItem(
        id=item_id,
        text=text,
        source=source,
        published_at=published_at,
        tickers=tuple(t.strip().upper() for t in tickers_raw if t.strip()),
        lang=_optional_str(body, "lang"),
        kind=kind,
        topic=_label_value(body, "topic", topics),
        sentiment=_label_value(body, "sentiment", sentiments),
    )


def decode_label(
    raw: bytes, *, topics: Sequence[str] | None = None, sentiments: Sequence[str] | None = None
) -> Label:
    """Decode a message of the ``labels`` topic: ``id`` plus ``topic`` and/or ``sentiment``."""
    body = _load_object(raw)
    label_id = _required_str(body, "id")
    topic = _label_value(body, "topic", topics)
    sentiment = _label_value(body, "sentiment", sentiments)
    if topic is None and sentiment is None:
        raise DecodeError("missing_field", "a label needs 'topic' and/or 'sentiment'")
    return Label(id=label_id, topic=topic, sentiment=sentiment, source=_optional_str(body, "source") or "unknown")
