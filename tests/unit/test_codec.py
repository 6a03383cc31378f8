"""Input decoding: every malformed message gets the reason a user needs."""

from __future__ import annotations

import json

import pytest

from monitor.metrics import DEAD_LETTER_REASONS
from monitor.stream.codec import DecodeError, decode_item, decode_label

GOOD = {"id": "n1", "text": "Oil prices jump", "source": "wire", "published_at": "2026-11-02T09:30:00Z"}


def raw(**changes: object) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_good_message_with_optional_fields() -> None:
    item = decode_item(raw(tickers=["xom", " cvx "], lang="en", kind="comment"))
    assert (item.id, item.text, item.source, item.kind, item.lang) == ("n1", "Oil prices jump", "wire", "comment", "en")
    assert item.tickers == ("XOM", "CVX")
    assert item.published_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("payload", "reason", "fragment"),
    [
        (b"\xff\xfe not utf8", "invalid_utf8", "byte 0"),
        (b'{"id": "n1", "text": ', "invalid_json", "line 1"),
        (b"[1, 2]", "not_an_object", "list"),
        (raw(text=...), "missing_field", "'text' is required"),
        (raw(id=""), "missing_field", "'id' is empty"),
        (raw(text="   "), "empty_text", "no visible character"),
        (raw(text=42), "wrong_type", "'text' must be a string"),
        (raw(tickers="XOM"), "wrong_type", "'tickers'"),
        (raw(kind="tweet"), "wrong_type", "'kind'"),
        (raw(published_at="yesterday"), "bad_timestamp", "'yesterday'"),
        (raw(text="x" * 101), "oversize", "101 characters, the limit is 100"),
        (raw(sentiment="very bad"), "bad_label", "sentiment 'very bad'"),
    ],
)
def test_malformed_messages_name_their_reason(payload: bytes, reason: str, fragment: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_item(payload, max_text_chars=100, sentiments=("negative", "neutral", "positive"))
    assert err.value.reason == reason
    assert reason in DEAD_LETTER_REASONS
    assert fragment in str(err.value)


def test_label_needs_a_topic_or_a_sentiment() -> None:
    label = decode_label(b'{"id": "n1", "sentiment": "negative", "source": "analyst"}')
    assert (label.id, label.topic, label.sentiment, label.source) == ("n1", None, "negative", "analyst")
    with pytest.raises(DecodeError, match="topic' and/or 'sentiment"):
        decode_label(b'{"id": "n1"}')
