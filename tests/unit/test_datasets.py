"""Readers for labelled data: formats, label mappings, file+line errors, split and fingerprint."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from monitor.datasets import DataError, fingerprint, read_labelled, sample, split_examples
from monitor.labels import DEFAULT_TOPICS
from monitor.records import Example


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_twitter_sentiment_label_order(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "sent_train.csv",
        'text,label\r\n"$AAPL falls",0\r\n"$TSLA soars",1\r\n"Fed meets, as expected",2\r\n',
    )
    examples = read_labelled(path)
    assert [e.sentiment for e in examples] == ["negative", "positive", "neutral"]
    assert all(e.topic is None for e in examples)


def test_twitter_topic_maps_ids_to_default_topics(tmp_path: Path) -> None:
    path = _write(tmp_path / "topic_train.csv", "text,label\nanalysts upgrade,0\nstock moves,19\n")
    assert [e.topic for e in read_labelled(path)] == [DEFAULT_TOPICS[0], DEFAULT_TOPICS[19]]


def test_multiline_quoted_csv_reports_the_right_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "sent_train.csv", 'text,label\n"two\nlines",2\nok,1\nbad,7\n')
    with pytest.raises(DataError, match=r"^sent_train\.csv line 5: label '7' is not one of 0, 1, 2$"):
        read_labelled(path)


def test_phrasebank_latin1_crlf_and_last_at(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "Sentences_AllAgree.txt",
        "Sepp\xe4l\xe4 profit up @ 5 % .@positive\r\nSales fell .@negative\r\n\r\n",
        encoding="latin-1",
    )
    examples = read_labelled(path)
    assert [(e.text, e.sentiment) for e in examples] == [
        ("Sepp\xe4l\xe4 profit up @ 5 % .", "positive"),
        ("Sales fell .", "negative"),
    ]


def test_phrasebank_bad_label(tmp_path: Path) -> None:
    path = _write(tmp_path / "Sentences_50Agree.txt", "fine .@neutral\r\nodd .@bullish\r\n")
    with pytest.raises(DataError, match=r"Sentences_50Agree\.txt line 2: label 'bullish'"):
        read_labelled(path)


def test_project_jsonl_partial_labels(tmp_path: Path) -> None:
    rows = [
        {"text": "Fed hikes", "topic": "Macro", "sentiment": "negative", "id": 7, "time": "2024-05-01T12:00:00Z"},
        {"text": "Dividend raised", "topic": "Dividend"},
        {"text": "Great quarter", "sentiment": "positive", "source": "analyst"},
    ]
    path = _write(tmp_path / "labels.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    first, second, third = read_labelled(path)
    assert (first.id, first.time is not None and first.time.year) == ("7", 2024)
    assert (second.topic, second.sentiment, second.source) == ("Dividend", None, "labels")
    assert (third.topic, third.sentiment, third.source) == (None, "positive", "analyst")


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"text": "x", "topic": "Sports"}, "unknown topic 'Sports'"),
        ({"text": "x", "sentiment": "bullish"}, "sentiment 'bullish' is not one of"),
        ({"text": "x"}, "no label"),
        ({"text": "", "sentiment": "neutral"}, "'text' must be a non-empty string"),
        ({"text": "x", "sentiment": "neutral", "time": "yesterday"}, "time 'yesterday' is not ISO 8601"),
    ],
)
def test_project_jsonl_errors_name_file_and_line(tmp_path: Path, row: dict[str, str], problem: str) -> None:
    good = json.dumps({"text": "fine", "sentiment": "neutral"})
    path = _write(tmp_path / "feed.jsonl", f"{good}\n{json.dumps(row)}\n")
    with pytest.raises(DataError, match=rf"^feed\.jsonl line 2: {problem}"):
        read_labelled(path)


def test_project_jsonl_invalid_json(tmp_path: Path) -> None:
    path = _write(tmp_path / "feed.jsonl", '{"text": "a", "sentiment": "neutral"}\n{oops\n')
    with pytest.raises(DataError, match=r"feed\.jsonl line 2: invalid JSON"):
        read_labelled(path)


def test_project_csv_and_custom_topics(tmp_path: Path) -> None:
    path = _write(tmp_path / "mine.csv", "text,topic,sentiment\nchips rally,Semis,positive\nfab news,Semis,\n")
    examples = read_labelled(path, topics=("Semis", "Other"))
    assert [(e.topic, e.sentiment) for e in examples] == [("Semis", "positive"), ("Semis", None)]
    with pytest.raises(DataError, match=r"mine\.csv line 2: unknown topic 'Semis'"):
        read_labelled(path)


def test_unknown_format_needs_explicit_format(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", "text,label\na,1\n")
    with pytest.raises(DataError, match="pass FILE:FORMAT"):
        read_labelled(path)
    assert read_labelled(path, "twitter-sentiment")[0].sentiment == "positive"


def _examples(n: int) -> list[Example]:
    labels = ["negative", "neutral", "neutral", "positive"]
    return [Example(f"text {i}", sentiment=labels[i % 4]) for i in range(n)]


def test_split_is_deterministic_stratified_and_disjoint() -> None:
    examples = _examples(400)
    rest, held = split_examples(examples, 0.25, seed=3)
    assert (rest, held) == split_examples(examples, 0.25, seed=3)
    assert held != split_examples(examples, 0.25, seed=4)[1]
    assert len(held) == 100 and {e.text for e in rest}.isdisjoint(e.text for e in held)
    assert Counter(e.sentiment for e in held) == {"neutral": 50, "negative": 25, "positive": 25}


def test_sample_and_fingerprint() -> None:
    examples = _examples(50)
    picked = sample(examples, 10, seed=1)
    assert len(picked) == 10 and picked == sample(examples, 10, seed=1)
    assert fingerprint(examples) == fingerprint(list(examples))
    assert fingerprint(examples) != fingerprint(examples[::-1])
    relabelled = [*examples[:-1], Example(examples[-1].text, sentiment="negative")]
    assert fingerprint(examples) != fingerprint(relabelled)
