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
Nothing a hostile message holds escapes as another exception: JSON nested deeper than
``MAX_DEPTH`` and integers past Python's digit limit are ``invalid_json``; a lone surrogate
escape (``"\\ud800"``) in any string field is ``invalid_utf8`` (it is not Unicode, and
tokenizers and encoders reject it); a UTF-8 byte-order mark is accepted; a text with no
visible character (only zero-width characters, NULs, controls or spaces) is ``empty_text``;
a null message value (a tombstone) is ``not_an_object``, for items and labels alike.

    >>> decode_item(b'{"id": "n3", "text": "\\\\u200b\\\\u0000", "source": "x", "published_at": "2026-01-01"}')
    Traceback (most recent call last):
    ...
    monitor.stream.codec.DecodeError: empty_text: 'text' has no visible character
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.records import Label, NewsItem

__all__ = ["MAX_DEPTH", "DecodeError", "decode_item", "decode_label", "parse_time"]

_KINDS = ("news", "comment")
#: Deepest JSON nesting accepted (a NewsItem needs 2: the object and its tickers list).
MAX_DEPTH = 32
_BOM = b"\xef\xbb\xbf"


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


def _depth_exceeds(text: str, limit: int) -> bool:
    """Whether the JSON ``text`` nests brackets deeper than ``limit`` (strings skipped).

    Run before ``json.loads`` only when the text holds more than ``limit`` opening brackets,
    so that a hostile document never reaches the recursive parser at depth.
    """
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _load_object(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise DecodeError("not_an_object", "the message value is null (a tombstone)")
    if raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DecodeError("invalid_utf8", f"byte {err.start} is not valid UTF-8") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth_exceeds(text, MAX_DEPTH):
        raise DecodeError("invalid_json", f"nested deeper than {MAX_DEPTH} levels")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as err:
        raise DecodeError("invalid_json", f"{err.msg} at line {err.lineno} column {err.colno}") from None
    except (ValueError, RecursionError) as err:  # e.g. an integer past sys.get_int_max_str_digits()
        raise DecodeError("invalid_json", f"{type(err).__name__}: {str(err)[:200]}") from None
    if not isinstance(body, dict):
        raise DecodeError("not_an_object", f"expected a JSON object, got {type(body).__name__}")
    return body


def _valid_unicode(value: str, key: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DecodeError("invalid_utf8", f"{key!r} holds a lone surrogate at character {err.start}") from None
    return value


def _visible(text: str) -> bool:
    """Whether ``text`` has a character that is not a control, format (zero-width), or separator."""
    return any(not unicodedata.category(ch).startswith(("C", "Z")) for ch in text)


def _required_str(body: dict[str, Any], key: str) -> str:
    if key not in body or body[key] is None:
        raise DecodeError("missing_field", f"{key!r} is required")
    value = body[key]
    if not isinstance(value, str):
        raise DecodeError("wrong_type", f"{key!r} must be a string, got {type(value).__name__}")
    return _valid_unicode(value, key)


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError("wrong_type", f"{key!r} must be a string, got {type(value).__name__}")
    return _valid_unicode(value, key)


def _label_value(body: dict[str, Any], key: str, allowed: Sequence[str] | None) -> str | None:
    value = _optional_str(body, key)
    if value is not None and allowed is not None and value not in allowed:
        raise DecodeError("bad_label", f"{key} {value!r} is not one of the configured labels")
    return value


def decode_item(
    raw: bytes | None,
    *,
    max_text_chars: int = 20_000,
    topics: Sequence[str] | None = None,
    sentiments: Sequence[str] | None = None,
    kafka_timestamp_ms: int = -1,
    max_future_skew_s: float = 3600.0,
) -> NewsItem:
    """Decode one input message; raise ``DecodeError`` with the reason on any problem.

    ``kafka_timestamp_ms`` (the record's timestamp; -1 = none) bounds ``published_at``: an item
    dated more than ``max_future_skew_s`` after it is ``bad_timestamp``, so one item dated 2062
    cannot move the event-time clock.
    """
    body = _load_object(raw)
    item_id = _required_str(body, "id")
    if not item_id.strip():
        raise DecodeError("missing_field", "'id' is empty")
    text = _required_str(body, "text")
    if len(text) > max_text_chars:
        raise DecodeError("oversize", f"'text' has {len(text)} characters, the limit is {max_text_chars}")
    if not _visible(text):
        raise DecodeError("empty_text", "'text' has no visible character")
    source = _required_str(body, "source")
    stamp = _required_str(body, "published_at")
    try:
        published_at = parse_time(stamp)
        at = published_at.timestamp()  # the pipeline's event time: must exist for every item
    except (ValueError, OverflowError, OSError):
        raise DecodeError("bad_timestamp", f"'published_at' {stamp[:64]!r} is not an ISO 8601 time") from None
    if kafka_timestamp_ms >= 0:
        ahead = at - kafka_timestamp_ms / 1000.0
        if ahead > max_future_skew_s:
            raise DecodeError("bad_timestamp", f"'published_at' is {ahead:.0f} s ahead of the Kafka timestamp "
                                               f"(limit {max_future_skew_s:.0f} s)")
    tickers_raw = body.get("tickers", [])
    if tickers_raw is None:
        tickers_raw = []
    if not isinstance(tickers_raw, list) or not all(isinstance(t, str) for t in tickers_raw):
        raise DecodeError("wrong_type", "'tickers' must be a list of strings")
    for ticker in tickers_raw:
        _valid_unicode(ticker, "tickers")
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
    raw: bytes | None, *, topics: Sequence[str] | None = None, sentiments: Sequence[str] | None = None
) -> Label:
    """Decode a message of the ``labels`` topic: ``id`` plus ``topic`` and/or ``sentiment``."""
    body = _load_object(raw)
    label_id = _required_str(body, "id")
    topic = _label_value(body, "topic", topics)
    sentiment = _label_value(body, "sentiment", sentiments)
    if topic is None and sentiment is None:
        raise DecodeError("missing_field", "a label needs 'topic' and/or 'sentiment'")
    return Label(id=label_id, topic=topic, sentiment=sentiment, source=_optional_str(body, "source") or "unknown")
