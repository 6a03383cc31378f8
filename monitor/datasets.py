"""Readers for labelled text, a deterministic split and a data fingerprint.

Formats (``read_labelled(path, fmt)``; ``fmt="auto"`` picks one from the file name):

``jsonl``              the project's own: one JSON object a line with ``text`` and ``topic`` and/or
                       ``sentiment`` (plus optional ``source``, ``id``, ``time`` as ISO 8601)
``csv``                the same columns as a CSV with a header row
``phrasebank``         Financial PhraseBank ``Sentences_*.txt``: latin-1, ``sentence@label``
``twitter-sentiment``  ``text,label`` with 0 = Bearish, 1 = Bullish, 2 = Neutral (*not* neg/neu/pos)
``twitter-topic``      ``text,label`` with label 0..19 = ``DEFAULT_TOPICS`` in order

A malformed row is a :class:`DataError` naming the file, the line and the problem; nothing is
skipped silently, because a silently dropped label shifts every metric computed downstream.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.labels import DEFAULT_TOPICS, SENTIMENTS
from monitor.records import Example

__all__ = [
    "FORMATS",
    "DataError",
    "detect_format",
    "fingerprint",
    "parse_data_arg",
    "read_labelled",
    "sample",
    "split_examples",
]

FORMATS: tuple[str, ...] = ("jsonl", "csv", "phrasebank", "twitter-sentiment", "twitter-topic")
#: Twitter sentiment ids -> our labels. The data set's order is Bearish, Bullish, Neutral.
TWITTER_SENTIMENT: Mapping[int, str] = {0: "negative", 1: "positive", 2: "neutral"}


class DataError(ValueError):
    """A labelled-data file that cannot be read; the message says where and why."""


def read_labelled(path: Path | str, fmt: str = "auto", topics: Sequence[str] = DEFAULT_TOPICS) -> list[Example]:
    """Read one labelled file in format ``fmt`` (one of :data:`FORMATS` or ``"auto"``).

    ``topics`` is the allowed topic set for the project formats (an unknown topic is an error).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt in ("jsonl", "csv"):
        rows = _jsonl_rows(path) if fmt == "jsonl" else _csv_rows(path)
        return [_project_example(path, line, row, topics) for line, row in rows]
    if fmt == "phrasebank":
        return _read_phrasebank(path)
    if fmt in ("twitter-sentiment", "twitter-topic"):
        return _read_twitter(path, sentiment=fmt == "twitter-sentiment")
    raise DataError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def detect_format(path: Path) -> str:
    """Guess the format from the file name (and a CSV's header).

    >>> detect_format(Path("Sentences_AllAgree.txt")), detect_format(Path("feed.jsonl"))
    ('phrasebank', 'jsonl')
    """
    name, suffix = path.name.lower(), path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".txt":
        return "phrasebank"
    if suffix != ".csv":
        raise DataError(f"{path}: cannot tell the format from the name; pass FILE:FORMAT ({', '.join(FORMATS)})")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = [h.strip().lower() for h in next(csv.reader(handle), [])]
    if "topic" in header or "sentiment" in header:
        return "csv"
    if header == ["text", "label"]:
        if "sent" in name:
            return "twitter-sentiment"
        if "topic" in name or path.stem.lower() in ("train_data", "valid_data"):
            return "twitter-topic"
    raise DataError(f"{path}: cannot tell which CSV format this is; pass FILE:FORMAT ({', '.join(FORMATS)})")


def parse_data_arg(value: str) -> tuple[Path, str]:
    """Split a ``FILE[:FORMAT]`` command-line value (a colon not followed by a format is kept).

    >>> parse_data_arg("a/b.csv:twitter-topic"), parse_data_arg("c:/x.jsonl")
    ((PosixPath('a/b.csv'), 'twitter-topic'), (PosixPath('c:/x.jsonl'), 'auto'))
    """
    head, sep, tail = value.rpartition(":")
    if sep and tail in FORMATS:
        return Path(head), tail
    return Path(value), "auto"


def split_examples(examples: Sequence[Example], fraction: float, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """Split into ``(rest, held_out)``, stratified by (topic, sentiment), deterministic per seed.

    Each stratum gives ``round(len * fraction)`` examples to the held-out part; both parts keep
    the input order.

    >>> xs = [Example(str(i), sentiment="positive" if i % 2 else "negative") for i in range(10)]
    >>> rest, held = split_examples(xs, 0.2, seed=1)
    >>> len(rest), len(held), sorted(e.sentiment for e in held)
    (8, 2, ['negative', 'positive'])
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    strata: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, example in enumerate(examples):
        strata[(example.topic or "", example.sentiment or "")].append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for key in sorted(strata):
        members = strata[key]
        rng.shuffle(members)
        held.update(members[: round(len(members) * fraction)])
    return (
        [e for i, e in enumerate(examples) if i not in held],
        [e for i, e in enumerate(examples) if i in held],
    )


def sample(examples: Sequence[Example], n: int, seed: int = 0) -> list[Example]:
    """``n`` examples drawn without replacement (seeded), in input order; all if ``n`` >= len."""
    if n >= len(examples):
        return list(examples)
    keep = set(random.Random(seed).sample(range(len(examples)), n))
    return [e for i, e in enumerate(examples) if i in keep]


def fingerprint(examples: Sequence[Example]) -> str:
    """sha256 over (text, topic, sentiment) of each example, in order.

    Order counts: the same examples in another order train (seeded) to different weights.

    >>> fingerprint([Example("up", sentiment="positive")])[:15]
    'sha256:361dab81'
    """
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.text, e.topic, e.sentiment], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return f"sha256:{digest.hexdigest()}"


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path.name} line {line}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path.name} line {line}: expected a JSON object, got {type(row).__name__}")
            yield line, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise DataError(f"{path.name} line 1: header must name a 'text' column, got {reader.fieldnames}")
        start = 2
        for row in reader:
            if None in row:
                raise DataError(f"{path.name} line {start}: more fields than the header has")
            yield start, {k: (v if v != "" else None) for k, v in row.items()}
            start = reader.line_num + 1


def _project_example(path: Path, line: int, row: Mapping[str, Any], topics: Sequence[str]) -> Example:
    where = f"{path.name} line {line}"
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: 'text' must be a non-empty string")
    topic, sentiment = row.get("topic"), row.get("sentiment")
    if topic is None and sentiment is None:
        raise DataError(f"{where}: no label: give 'topic', 'sentiment' or both")
    if topic is not None and topic not in topics:
        raise DataError(f"{where}: unknown topic {topic!r} (see --topics / monitor.labels.DEFAULT_TOPICS)")
    if sentiment is not None and sentiment not in SENTIMENTS:
        raise DataError(f"{where}: sentiment {sentiment!r} is not one of {', '.join(SENTIMENTS)}")
    time = row.get("time")
    try:
        parsed = None if time is None else datetime.fromisoformat(str(time))
    except ValueError:
        raise DataError(f"{where}: time {time!r} is not ISO 8601") from None
    ident = row.get("id")
    return Example(
        text=text,
        topic=topic,
        sentiment=sentiment,
        source=str(row.get("source") or path.stem),
        id=None if ident is None else str(ident),
        time=parsed,
    )


def _read_phrasebank(path: Path) -> list[Example]:
    examples = []
    # latin-1 and CRLF, as distributed; newline="" keeps the "\r" so we strip it ourselves.
    with path.open(encoding="latin-1", newline="") as handle:
        for line, raw in enumerate(handle, start=1):
            raw = raw.rstrip("\r\n")
            if not raw.strip():
                continue
            sentence, sep, label = raw.rpartition("@")
            if not sep or not sentence.strip():
                raise DataError(f"{path.name} line {line}: expected 'sentence@label'")
            if label not in SENTIMENTS:
                raise DataError(f"{path.name} line {line}: label {label!r} is not one of {', '.join(SENTIMENTS)}")
            examples.append(Example(sentence, sentiment=label, source="financial_phrasebank", id=f"{path.stem}:{line}"))
    return examples


def _read_twitter(path: Path, *, sentiment: bool) -> list[Example]:
    labels = [TWITTER_SENTIMENT[i] for i in range(3)] if sentiment else list(DEFAULT_TOPICS)
    source = "twitter_sentiment" if sentiment else "twitter_topic"
    examples = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header] != ["text", "label"]:
            raise DataError(f"{path.name} line 1: header must be 'text,label', got {header}")
        start = 2
        for row in reader:
            if len(row) != 2:
                raise DataError(f"{path.name} line {start}: expected 2 fields (text,label), got {len(row)}")
            text, label = row
            if not label.strip().isdigit() or int(label) >= len(labels):
                allowed = ", ".join(str(i) for i in range(len(labels))) if sentiment else f"0..{len(labels) - 1}"
                raise DataError(f"{path.name} line {start}: label {label!r} is not one of {allowed}")
            if not text.strip():
                raise DataError(f"{path.name} line {start}: empty text")
            name = labels[int(label)]
            examples.append(
                Example(
                    text,
                    topic=None if sentiment else name,
                    sentiment=name if sentiment else None,
                    source=source,
                    id=f"{path.stem}:{start}",
                )
            )
            start = reader.line_num + 1
    return examples
