"""``monitor feed`` and ``monitor tail``: put a JSONL feed on Kafka, and watch a topic.

``feed`` sends each line's input fields (``id, text, source, published_at, tickers, lang,
kind``) to the ``news`` or ``comments`` topic by ``kind``; a line's labels (``topic``,
``sentiment``) become a message on the ``labels`` topic, placed in event-time order
``label_delay_s`` seconds after the item (or inline in the item with ``--inline-labels``).
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]

INPUT_FIELDS = ("id", "text", "source", "published_at", "tickers", "lang", "kind")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("feed", help="send a JSONL feed to the input topics (labels to the labels topic)")
    p.add_argument("file", type=Path, help="JSONL, one input message per line (see README 'Message formats')")
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--news-topic", default="news", help="topic for kind=news (default: news)")
    p.add_argument("--comments-topic", default="comments", help="topic for kind=comment (default: comments)")
    p.add_argument("--labels-topic", default="labels", help="topic for labels (default: labels)")
    p.add_argument("--inline-labels", action="store_true", help="keep labels inside the item messages")
    p.add_argument("--no-labels", action="store_true", help="drop labels altogether")
    p.add_argument("--rate", type=float, default=0.0, help="messages per second (0 = as fast as possible)")
    p.add_argument("--limit", type=int, default=0, help="send at most this many items (0 = all)")
    p.set_defaults(func=feed)

    t = subparsers.add_parser("tail", help="print messages of a topic (e.g. predictions, alerts, dead-letter)")
    t.add_argument("topic")
    t.add_argument("--bootstrap", default="127.0.0.1:9092")
    t.add_argument("--from-beginning", action="store_true")
    t.add_argument("--max", type=int, default=0, help="stop after this many messages (0 = run until Ctrl-C)")
    t.add_argument("--idle-s", type=float, default=0.0, help="stop after this many idle seconds (0 = never)")
    t.set_defaults(func=tail)


def _events(rows: list[dict[str, Any]], inline: bool, no_labels: bool) -> list[tuple[str, int, str, dict]]:
    """(event time, order, kind, body) for items and their delayed labels, in event-time order."""
    from monitor.stream.codec import parse_time

    events: list[tuple[str, int, str, dict]] = []
    for n, row in enumerate(rows):
        item = {k: row[k] for k in INPUT_FIELDS if k in row}
        has_label = not no_labels and (row.get("topic") is not None or row.get("sentiment") is not None)
        if has_label and inline:
            item.update({k: row[k] for k in ("topic", "sentiment") if row.get(k) is not None})
        at = parse_time(str(row["published_at"])).timestamp() if "published_at" in row else 0.0
        events.append((f"{at:017.3f}", 2 * n, "item", item))
        if has_label and not inline:
            label = {"id": row.get("id"), "source": row.get("label_source", "sample-feed")}
            label.update({k: row[k] for k in ("topic", "sentiment") if row.get(k) is not None})
            when = at + float(row.get("label_delay_s", 0))
            events.append((f"{when:017.3f}", 2 * n + 1, "label", label))
    heapq.heapify(events)
    return [heapq.heappop(events) for _ in range(len(events))]


def feed(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    rows = []
    with args.file.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                print(f"{args.file} line {line_no}: not JSON ({err.msg}); sent as-is", file=sys.stderr)
                rows.append({"__raw__": line.rstrip("\n")})
    if args.limit:
        rows = rows[: args.limit]
    producer = KafkaProducer(bootstrap_servers=args.bootstrap.split(","), acks="all", linger_ms=20)
    sent = {"items": 0, "labels": 0}
    started = time.monotonic()
    raw_rows = [r for r in rows if "__raw__" in r]
    for r in raw_rows:
        producer.send(args.news_topic, value=r["__raw__"].encode("utf-8"))
    for _, _, kind, body in _events([r for r in rows if "__raw__" not in r], args.inline_labels, args.no_labels):
        if kind == "item":
            topic = args.comments_topic if body.get("kind") == "comment" else args.news_topic
            sent["items"] += 1
        else:
            topic = args.labels_topic
            sent["labels"] += 1
        key = str(body.get("id", "")).encode("utf-8")
        producer.send(topic, key=key, value=json.dumps(body, ensure_ascii=False).encode("utf-8"))
        if args.rate > 0:
            total = sent["items"] + sent["labels"]
            time.sleep(max(0.0, total / args.rate - (time.monotonic() - started)))
    producer.flush()
    producer.close()
    print(f"sent {sent['items'] + len(raw_rows)} items and {sent['labels']} labels to {args.bootstrap} "
          f"in {time.monotonic() - started:.1f}s")
    return 0


def tail(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap.split(","),
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        enable_auto_commit=False,
        group_id=None,
    )
    seen = 0
    idle_since = time.monotonic()
    try:
        while not args.max or seen < args.max:
            polled = consumer.poll(timeout_ms=500)
            if not polled:
                if args.idle_s and time.monotonic() - idle_since > args.idle_s:
                    break
                continue
            idle_since = time.monotonic()
            for records in polled.values():
                for r in records:
                    value = r.value.decode("utf-8", "replace") if r.value is not None else ""
                    headers = {k: v.decode("utf-8", "replace") for k, v in (r.headers or [])}
                    print(value if not headers else json.dumps({"headers": headers, "value": value}), flush=True)
                    seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
