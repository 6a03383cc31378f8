"""Replay: feeds, event order, batching, determinism, outputs and the report (tiny keyword model)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from monitor.config import AlertConfig, BatchConfig, ModelConfig, MonitorConfig
from monitor.replay.feeds import FeedError, events_of, read_feeds
from monitor.replay.runner import ReplayOptions, replay
from monitor.replay.schedule import Pacer, plan_batches

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
#: (topic, sentiment) -> texts in the tiny vocabulary; the keyword model learns exactly these.
TEMPLATES = {
    ("Energy | Oil", "negative"): ("oil prices plunge", "oil stocks fall after loss", "energy shares drop"),
    ("Energy | Oil", "positive"): ("oil prices surge", "energy shares rise", "oil profit beats forecast"),
    ("Energy | Oil", "neutral"): ("oil market week ahead", "energy company to report earnings"),
    ("Fed | Central Banks", "neutral"): ("fed holds rates", "fed policy today"),
    ("Fed | Central Banks", "negative"): ("fed hikes rates again", "bond yields jump as fed hikes"),
    ("Gold | Metals | Materials", "positive"): ("gold prices surge to record high", "silver gains"),
}


def keyword_checkpoint(backbone: Path, dest: Path) -> Path:
    """A tiny random BERT whose heads are fitted to ``TEMPLATES``: predictable topics and sentiments."""
    import torch
    from transformers import AutoTokenizer

    from monitor.labels import DEFAULT_TOPICS, SENTIMENTS
    from monitor.model.checkpoint import CheckpointMeta, save_checkpoint
    from monitor.model.network import MultiTaskClassifier, mean_pool

    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(backbone, DEFAULT_TOPICS, SENTIMENTS).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(backbone))
    pairs = [(text, t, s) for (t, s), texts in TEMPLATES.items() for text in texts]
    with torch.no_grad():
        enc = tokenizer([p[0] for p in pairs], padding=True, return_tensors="pt")
        hidden = model.encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        x = mean_pool(hidden, enc["attention_mask"])
    y_topic = torch.tensor([DEFAULT_TOPICS.index(t) for _, t, _ in pairs])
    y_sentiment = torch.tensor([SENTIMENTS.index(s) for _, _, s in pairs])
    heads = [*model.topic_head.parameters(), *model.sentiment_head.parameters()]
    optimizer = torch.optim.Adam(heads, lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.topic_head(x), y_topic) + torch.nn.functional.cross_entropy(
            model.sentiment_head(x), y_sentiment)
        loss.backward()
        optimizer.step()
    meta = CheckpointMeta(version="kw-1", parent=None, backbone=str(backbone), topics=DEFAULT_TOPICS,
                          sentiments=SENTIMENTS, data_fingerprint="templates")
    return save_checkpoint(model, tokenizer, meta, dest)


def make_feed(minutes: int = 150, every_s: int = 30, surge: tuple[int, int] = (70, 95)) -> list[dict[str, Any]]:
    """Items every ``every_s`` seconds; during ``surge`` (minutes) Energy news turns negative.

    Every third item is labelled (with its template's labels, except a few wrong ones), with
    delays from 0 to 10 minutes, so labels interleave with later items.
    """
    calm = [k for k in TEMPLATES if k[1] != "negative"] + [("Fed | Central Banks", "negative")]
    rows = []
    for n in range(minutes * 60 // every_s):
        at = START + timedelta(seconds=n * every_s)
        minute = n * every_s // 60
        key = ("Energy | Oil", "negative") if surge[0] <= minute < surge[1] and n % 4 else calm[n % len(calm)]
        texts = TEMPLATES[key]
        row: dict[str, Any] = {"id": f"n-{n:04d}", "text": texts[n % len(texts)], "source": "wire",
                               "published_at": at.isoformat().replace("+00:00", "Z"),
                               "tickers": ["NWE"] if key[0] == "Energy | Oil" else [], "kind": "news"}
        if n % 3 == 0:
            row.update(topic=key[0], sentiment=key[1] if n % 21 else "neutral", label_delay_s=(n * 37) % 600)
        rows.append(row)
    return rows


def write_jsonl(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def keyword_model(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keyword_checkpoint(tiny_backbone, tmp_path_factory.mktemp("kw") / "kw-1")


def config_for(model: Path, max_batch: int = 16) -> MonitorConfig:
    return MonitorConfig(
        batch=BatchConfig(max_batch=max_batch),
        model=ModelConfig(path=str(model), device="cpu"),
        alerts=AlertConfig(window_seconds=600, baseline_seconds=3600, min_count=10, min_baseline_count=20,
                           cooldown_seconds=600),
    )


# --- feeds -----------------------------------------------------------------------------------------------
def test_jsonl_csv_and_parquet_feeds_give_the_same_events(tmp_path: Path) -> None:
    rows = make_feed(minutes=20)
    jsonl = write_jsonl(rows, tmp_path / "feed.jsonl")
    frame = pd.DataFrame(rows)
    frame.assign(tickers=frame["tickers"].map(";".join)).to_csv(tmp_path / "feed.csv", index=False)
    frame.assign(published_at=pd.to_datetime(frame["published_at"], utc=True)).to_parquet(tmp_path / "feed.parquet")
    by_format = [events_of(read_feeds([p])) for p in (jsonl, tmp_path / "feed.csv", tmp_path / "feed.parquet")]
    assert by_format[0] == by_format[1] == by_format[2]
    assert sum(e.kind == "label" for e in by_format[0]) == 14
    items = {e.id: e.item for e in by_format[0]}
    assert items["n-0000"].tickers == ("NWE",) and items["n-0003"].tickers == ()  # Energy / Fed news


def test_labels_become_visible_after_their_delay_in_event_order() -> None:
    rows = [
        {"id": "a", "text": "x", "source": "s", "published_at": "2026-03-02T09:00:00Z", "sentiment": "positive",
         "label_delay_s": 20},
        {"id": "b", "text": "x", "source": "s", "published_at": "2026-03-02T09:00:10Z", "topic": "Macro"},
        {"id": "c", "text": "x", "source": "s", "published_at": "2026-03-02T09:00:20Z"},
        {"id": "d", "text": "x", "source": "s", "published_at": "2026-03-02T09:00:05Z"},  # out of row order
    ]
    from monitor.replay.feeds import parse_rows

    events = events_of(parse_rows(rows, "f"))
    # a's label (t=20) precedes c (t=20, a later row); b's label has no delay: right after b.
    assert [(e.kind, e.id) for e in events] == [("item", "a"), ("item", "d"), ("item", "b"), ("label", "b"),
                                                ("label", "a"), ("item", "c")]
    label_a = next(e for e in events if e.kind == "label" and e.id == "a")
    assert label_a.at - events[0].at == 20.0 and label_a.label is not None and label_a.label.sentiment == "positive"


def test_invalid_rows_are_reported_with_file_row_and_problem(tmp_path: Path) -> None:
    good = {"id": "ok", "text": "fed holds rates", "source": "wire", "published_at": "2026-03-02T09:00:00Z"}
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([
        json.dumps(good),
        "{not json",
        json.dumps({**good, "id": "n2", "text": "  "}),
        json.dumps({**good, "id": "n3", "published_at": "yesterday"}),
        json.dumps({**good, "id": "n4", "sentiment": "furious"}),
        json.dumps({**good, "id": "n5", "sentiment": "neutral", "label_delay_s": -5}),
        json.dumps(good),
    ]) + "\n", encoding="utf-8")
    with pytest.raises(FeedError) as err:
        read_feeds([path])
    assert [(row, problem.split(":")[0].split(" ")[0]) for _, row, problem in err.value.problems] == [
        (2, "not"), (3, "empty_text"), (4, "bad_timestamp"), (5, "sentiment"), (6, "'label_delay_s'"),
        (7, "duplicate")]
    assert f"{path}, row 5: sentiment 'furious' is not one of the model's labels" in str(err.value)
    with pytest.raises(FeedError, match=r"unknown feed format '\.txt'"):
        read_feeds([write_jsonl([good], tmp_path / "feed.txt")])


# --- batching and pacing -------------------------------------------------------------------------------
def test_batches_are_cut_by_size_labels_and_the_daemon_wait() -> None:
    from monitor.replay.feeds import parse_rows

    events = events_of(parse_rows(make_feed(minutes=10), "f"))  # 20 items, 30 s apart
    backlog = plan_batches(events, max_batch=8, with_labels=False)
    assert [len(b.events) for b in backlog] == [8, 8, 4]
    live = plan_batches(events, max_batch=8, with_labels=False, window_s=60.0)  # items 0, 30, 60 s: one batch
    assert [len(b.events) for b in live] == [3] * 6 + [2]
    with_labels = plan_batches(events, max_batch=8, with_labels=True)
    assert sum(len(b.events) for b in with_labels) == len(events)
    flat = [e for b in with_labels for e in b.events]
    assert flat == events and all(len({e.kind for e in b.events}) == 1 for b in with_labels)


def test_pacer_sleeps_event_time_gaps_divided_by_the_speed() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(10.0, sleep=sleep, clock=lambda: now[0])
    for at in (0.0, 10.0, 30.0, 30.0):
        pacer.wait_until(at)
    assert slept == [1.0, 2.0]


# --- whole replays ----------------------------------------------------------------------------------------
def test_two_replays_write_identical_outputs(keyword_model: Path, tmp_path: Path) -> None:
    rows = make_feed()
    feed = write_jsonl(rows, tmp_path / "feed.jsonl")
    config = config_for(keyword_model)
    outs = []
    for name in ("one", "two"):
        options = ReplayOptions(feeds=(feed,), out=tmp_path / name, seed=7, progress=False)
        outs.append((options.out, replay(config, options)))
    (one, summary), (two, _) = outs
    for name in ("predictions.parquet", "trends.csv", "prequential.csv", "alerts.jsonl", "events.jsonl"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    predictions = pd.read_parquet(one / "predictions.parquet")
    assert len(predictions) == summary["items"] == 300 and summary["labels"] == 100
    assert list(predictions["id"]) == [f"n-{n:04d}" for n in range(300)]
    alerts = [json.loads(line) for line in (one / "alerts.jsonl").read_text().splitlines()]
    energy = [(a["state"], a["key"]) for a in alerts if a["key"] == "Energy | Oil"]
    assert energy == [("raised", "Energy | Oil"), ("cleared", "Energy | Oil")]
    raised = datetime.fromisoformat(next(a["at"] for a in alerts if a["key"] == "Energy | Oil"))
    assert START + timedelta(minutes=70) < raised < START + timedelta(minutes=95)
    # the keyword model knows the templates, so only the deliberately wrong labels are misses
    truth = {text: s for (_, s), texts in TEMPLATES.items() for text in texts}
    wrong = sum(1 for r in rows if "sentiment" in r and r["sentiment"] != truth[r["text"]])
    assert summary["accuracy"]["topic"] == {"labels": 100, "accuracy": 1.0}
    assert summary["accuracy"]["sentiment"] == {"labels": 100, "accuracy": 1 - wrong / 100} and wrong > 0


def test_predictions_do_not_depend_on_batch_size_beyond_rounding(keyword_model: Path, tmp_path: Path) -> None:
    feed = write_jsonl(make_feed(minutes=60), tmp_path / "feed.jsonl")
    frames = []
    for max_batch in (1, 64):
        options = ReplayOptions(feeds=(feed,), out=tmp_path / str(max_batch), fmt="csv", batching="backlog",
                                progress=False)
        replay(config_for(keyword_model, max_batch=max_batch), options)
        frames.append(pd.read_csv(options.out / "predictions.csv"))
    small, large = frames
    assert (small[["id", "topic", "sentiment"]] == large[["id", "topic", "sentiment"]]).all().all()
    probs = [c for c in small.columns if c.startswith("p_")] + ["confidence"]
    assert (small[probs] - large[probs]).abs().max().max() <= 2e-5  # padding changes the float sums


def test_report_has_every_plot_and_the_tables(keyword_model: Path, tmp_path: Path) -> None:
    rows = make_feed()
    feed = write_jsonl(rows, tmp_path / "feed.jsonl")
    options = ReplayOptions(feeds=(feed,), out=tmp_path / "out", fmt="csv", bucket="15min", progress=False)
    summary = replay(config_for(keyword_model), options)
    page = (options.out / "report.html").read_text(encoding="utf-8")
    for figure in ("plot-alert-0", "plot-explorer", "plot-prequential"):
        assert f'data-figure="{figure}"' in page, figure  # tests/unit/test_report.py checks them in Chromium
    assert "<section id=\"alerts\">" in page and "Energy | Oil" in page
    truth = [json.loads(line) for line in (options.out / "truth_alerts.jsonl").read_text().splitlines()]
    assert ("raised", "Energy | Oil") in [(a["state"], a["key"]) for a in truth]  # the labels show the surge too
    assert summary["alert_quality"]["scores"]["topic"]["caught"] >= 1
    trends = pd.read_csv(options.out / "trends.csv")
    assert list(trends.columns) == ["bucket_start", "topic", "count", "positive", "negative", "neutral",
                                    "sentiment_index"]
    assert trends["count"].sum() == 300 and len(trends["bucket_start"].unique()) == 10
    truth = {text: key for key, texts in TEMPLATES.items() for text in texts}
    in_bucket = [truth[r["text"]][1] for r in rows
                 if truth[r["text"]][0] == "Energy | Oil" and "10:15:00" <= r["published_at"][11:19] < "10:30:00"]
    expected = (in_bucket.count("positive") - in_bucket.count("negative")) / len(in_bucket)
    surge = trends[(trends["topic"] == "Energy | Oil") & (trends["bucket_start"] == "2026-03-02 10:15:00+00:00")]
    assert surge["sentiment_index"].item() == round(expected, 4) < -0.5
    prequential = pd.read_csv(options.out / "prequential.csv")
    assert set(prequential["head"]) == {"topic", "sentiment"}
    assert prequential.groupby("head")["labels"].sum().to_dict() == {"sentiment": 100, "topic": 100}
    assert json.loads((options.out / "summary.json").read_text())["files"] == summary["files"]


def test_cli_replay_writes_outputs_and_rejects_bad_feeds(keyword_model: Path, tmp_path: Path, capsys) -> None:
    from monitor.cli import main

    feed = write_jsonl(make_feed(minutes=30), tmp_path / "feed.jsonl")
    out = tmp_path / "out"
    assert main(["replay", str(feed), "--model", str(keyword_model), "--out", str(out), "--format", "csv",
                 "--no-progress", "--no-learn"]) == 0
    printed = capsys.readouterr().out
    assert "replayed 60 items and 20 labels (direct)" in printed
    assert "alert quality against the labelled surges" in printed and " precision " in printed
    assert main(["replay", str(feed), "--model", str(keyword_model), "--out", str(out), "--no-progress",
                 "--no-learn", "--batching", "backlog", "--sweep", "ratio=2,50", "min_count=5"]) == 0
    printed = capsys.readouterr().out
    assert "sweep over ratio, min_count (2 settings;" in printed
    rows = pd.read_csv(out / "sweep.csv")
    assert list(rows["ratio"]) == [2.0] * 3 + [50.0] * 3 and set(rows["min_count"]) == {5}
    assert rows[rows["ratio"] == 50.0]["alerts"].sum() == 0  # no share reaches 50 x its baseline
    assert main(["replay", str(feed), "--model", str(keyword_model), "--out", str(out), "--sweep", "ratio"]) == 2
    assert "expected KEY=V1,V2" in capsys.readouterr().err
    assert main(["replay", str(feed), "--model", str(keyword_model), "--out", str(out), "--sweep", "ratio=0.5"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
    assert {p.name for p in out.iterdir()} >= {"predictions.csv", "trends.csv", "prequential.csv", "alerts.jsonl",
                                               "events.jsonl", "summary.json", "report.html"}
    bad = write_jsonl([{"id": "x", "text": "fed holds rates", "published_at": "2026-03-02T09:00:00Z"}],
                      tmp_path / "bad.jsonl")
    assert main(["replay", str(bad), "--model", str(keyword_model), "--out", str(out), "--no-progress"]) == 2
    assert f"{bad}, row 1: missing_field: 'source' is required" in capsys.readouterr().err
    assert main(["replay", str(feed), "--model", str(keyword_model), "--out", str(out), "--bucket", "fortnight",
                 "--no-progress"]) == 2

