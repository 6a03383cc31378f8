"""Replay with a learner: labels reach it at published_at + label_delay_s of event time, never earlier;
the daemon's online learner drifts, retrains, promotes and swaps at fixed points of the stream.

The learning scenario is the one of tests/unit/test_online_learner.py (tests/support/regimes.py
and its fast settings): a tiny model trained on regime A meets regime B's new sentiment keywords.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from regimes import START, TOPICS, stream
from test_online_learner import FAST
from test_replay import config_for, keyword_checkpoint, make_feed, write_jsonl

from monitor.config import BatchConfig, LearningConfig, ModelConfig, MonitorConfig
from monitor.records import Label, NewsItem, Prediction
from monitor.replay.learning import EventClock
from monitor.replay.runner import ReplayOptions, replay

#: The scenario's learner settings (as in test_online_learner's promotion test).
#: A run "takes" 60 s of event time (6 items of the feed): a configured figure, not the measured wall time,
#: so that two replays (direct and via Kafka) swap at the same item.
LEARNING: dict[str, Any] = {**FAST, "min_new_labels": 400, "window_size": 240, "max_forgetting": 0.05, "epochs": 12,
                            "patience": 3, "replay_ratio": 2.0, "freeze_embeddings": False,
                            "backtest_training_s": 60.0}


def regime_a_registry(backbone: Path, root: Path) -> Path:
    """A registry serving ``v-a``: the tiny model trained on regime A."""
    import torch
    from transformers import AutoTokenizer

    from monitor.learn import TrainConfig, fit
    from monitor.model.checkpoint import CheckpointMeta, save_checkpoint
    from monitor.model.network import MultiTaskClassifier
    from monitor.registry import ModelRegistry

    tokenizer = AutoTokenizer.from_pretrained(str(backbone))
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(backbone, TOPICS)
    cfg = TrainConfig(epochs=8, batch_size=16, lr_encoder=3e-3, lr_head=1e-2, max_length=16, device="cpu")
    fit(model, tokenizer, stream("A", 600, 1), stream("A", 100, 2), cfg, progress=False)
    registry = ModelRegistry(root / "registry").init()
    meta = CheckpointMeta(version="v-a", parent=None, backbone=str(backbone), topics=TOPICS,
                          sentiments=model.sentiments, data_fingerprint="regime-a", max_length=16)
    save_checkpoint(model, tokenizer, meta, registry.path("v-a"))
    registry.set_current("v-a", reason="trained on regime A")
    return registry.root


def regime_feed(path: Path) -> Path:
    """200 regime-A items then 400 regime-B items, 10 s apart, every one labelled 30-180 s later."""
    rows = []
    for regime, n, seed in (("A", 200, 5), ("B", 400, 6)):
        for e in stream(regime, n, seed):
            k = len(rows)
            at = datetime.fromtimestamp(START.timestamp() + 10 * k, UTC)
            rows.append({"id": f"{regime}-{k}", "text": e.text, "source": "wire", "published_at": at.isoformat(),
                         "topic": e.topic, "sentiment": e.sentiment, "label_delay_s": 30 + (k * 17) % 150})
    return write_jsonl(rows, path)


def learning_config(registry: Path, **settings: Any) -> MonitorConfig:
    return MonitorConfig(batch=BatchConfig(max_batch=20), model=ModelConfig(path=str(registry), device="cpu"),
                         learning=LearningConfig(enabled=True, settings={**LEARNING, **settings}))


class RecordingLearner:
    """A ``monitor.app.Learner`` that writes down every call, with the replay's event clock at that moment."""

    def __init__(self, clock: EventClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, str, float]] = []
        self.closed = False

    def observe(self, items: Sequence[NewsItem], predictions: Sequence[Prediction]) -> None:
        assert [i.id for i in items] == [p.id for p in predictions]
        self.calls.extend(("item", i.id, i.published_at.timestamp()) for i in items)

    def on_label(self, label: Label) -> None:
        self.calls.append(("label", label.id, self.clock()))

    def persist(self) -> None:
        self.calls.append(("persist", "", self.clock()))

    def drain_label_requests(self) -> list[tuple[str, bytes]]:
        return []

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def keyword_model(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keyword_checkpoint(tiny_backbone, tmp_path_factory.mktemp("kw") / "kw-1")


def test_labels_reach_the_learner_at_their_visibility_time(keyword_model: Path, tmp_path: Path) -> None:
    rows = make_feed(minutes=40)
    feed = write_jsonl(rows, tmp_path / "feed.jsonl")
    learners: list[RecordingLearner] = []

    def factory(config: Any, clock: EventClock, metrics: Any) -> RecordingLearner:
        assert config.model.path == str(tmp_path / "out" / "registry")  # a private copy, never the real registry
        learners.append(RecordingLearner(clock))
        return learners[-1]

    options = ReplayOptions(feeds=(feed,), out=tmp_path / "out", learn=True, progress=False, learner_factory=factory)
    summary = replay(config_for(keyword_model, max_batch=8), options)
    (learner,) = learners
    assert learner.closed and summary["learning"]["enabled"]
    from monitor.stream.codec import parse_time

    published = {r["id"]: parse_time(r["published_at"]).timestamp() for r in rows}
    visible = {r["id"]: published[r["id"]] + r["label_delay_s"] for r in rows if "sentiment" in r}
    observed: dict[str, int] = {}
    labels = 0
    for n, (kind, item_id, at) in enumerate(learner.calls):
        if kind == "item":
            observed[item_id] = n
        elif kind == "label":
            labels += 1
            assert item_id in observed, f"label of {item_id} before its item"
            assert at == visible[item_id], "the learner's clock at a label is the label's visibility time"
            before = [a for k, _, a in learner.calls[:n] if k == "item"]
            after = [a for k, _, a in learner.calls[n:] if k == "item"]
            assert max(before) <= at <= min(after, default=at), f"label of {item_id} out of event order"
    assert labels == len(visible) == 27
    # some labels are delayed past later items, so the order really was rearranged
    order = [i for k, i, _ in learner.calls if k == "label"]
    assert order != sorted(order)
    # each batch is followed by one persist, as in the daemon's loop
    assert learner.calls[-1][0] == "persist" and sum(k == "persist" for k, _, _ in learner.calls) == summary["batches"]


def test_learning_replay_drifts_retrains_promotes_and_swaps(tiny_backbone: Path, tmp_path: Path) -> None:
    registry = regime_a_registry(tiny_backbone, tmp_path / "models")
    feed = regime_feed(tmp_path / "feed.jsonl")
    out = tmp_path / "out"
    summary = replay(learning_config(registry), ReplayOptions(feeds=(feed,), out=out, fmt="csv", learn=True,
                                                              progress=False))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    kinds = [(e["type"], e.get("signal") or e.get("outcome") or e.get("version") or "") for e in events]
    assert kinds[0] == ("drift", "sentiment_error")
    training = [e for e in events if e["type"] == "training"]
    swap = [e for e in events if e["type"] == "model_swap"]
    assert [(t["outcome"], t["version"], t["parent"]) for t in training] == [("promoted", "v-a-r1", "v-a")]
    assert [(s["previous"], s["version"]) for s in swap] == [("v-a", "v-a-r1")]
    assert "seconds" not in training[0]["fit"]  # wall-clock durations stay out of the event log
    assert summary["learning"]["training_runs"] == {"promoted": 1} and summary["model_versions"] == ["v-a", "v-a-r1"]
    # the promoted model serves from the first batch once the run's 60 s have passed, never earlier
    predictions = pd.read_csv(out / "predictions.csv", parse_dates=["published_at"])
    first_new = predictions[predictions["model_version"] == "v-a-r1"].iloc[0]
    assert first_new["id"] == swap[0]["first_item"]
    assert first_new["published_at"].timestamp() >= training[0]["at_s"]
    assert (predictions[predictions["published_at"].map(pd.Timestamp.timestamp) < training[0]["at_s"]]
            ["model_version"] == "v-a").all()
    # prequential: regime B is learnt (the last 100 B labels are judged on the new model)
    b = predictions[predictions["id"].str.startswith("B")]
    before, after = b[b["model_version"] == "v-a"], b[b["model_version"] == "v-a-r1"]
    assert before["sentiment_correct"].mean() < 0.5 < 0.9 < after["sentiment_correct"].mean()
    assert (out / "registry" / "versions" / "v-a-r1" / "meta.json").is_file()  # promoted into the private copy
    assert (registry / "CURRENT").read_text().strip() == "v-a"  # the real registry is untouched


def test_a_retrain_serves_only_once_its_duration_has_passed_in_event_time(tiny_backbone: Path, tmp_path: Path) -> None:
    """backtest_training_s = 600: the run that starts at event time t serves from t + 600 s (60 items
    later on this 10 s feed), not from the next batch; those 60 items are still classified by v-a."""
    registry = regime_a_registry(tiny_backbone, tmp_path / "models")
    feed = regime_feed(tmp_path / "feed.jsonl")
    out = tmp_path / "out"
    replay(learning_config(registry, backtest_training_s=600.0),
           ReplayOptions(feeds=(feed,), out=out, fmt="csv", learn=True, progress=False))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    (training,) = [e for e in events if e["type"] == "training"]
    assert training["outcome"] == "promoted" and training["at_s"] >= training["started_at_s"] + 600
    predictions = pd.read_csv(out / "predictions.csv", parse_dates=["published_at"])
    at = predictions["published_at"].map(pd.Timestamp.timestamp)
    first_new = at[predictions["model_version"] == "v-a-r1"].min()
    assert first_new >= training["started_at_s"] + 600
    during = predictions[(at > training["started_at_s"]) & (at < training["started_at_s"] + 600)]
    assert len(during) >= 50 and (during["model_version"] == "v-a").all()


def test_in_a_replay_the_wait_for_shadow_labels_ends_on_event_time(tiny_backbone: Path, tmp_path: Path) -> None:
    """shadow_labels 1000 never come: the replayed learner judges its challenger shadow_wait_s (300 s) of event
    time after the run started, on the labels that came meanwhile, not at the end of the feed."""
    registry = regime_a_registry(tiny_backbone, tmp_path / "models")
    feed = regime_feed(tmp_path / "feed.jsonl")
    out = tmp_path / "out"
    replay(learning_config(registry, shadow_labels=1000, shadow_wait_s=300.0),
           ReplayOptions(feeds=(feed,), out=out, fmt="csv", learn=True, progress=False))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    training = [e for e in events if e["type"] == "training"]
    assert training and training[0]["outcome"] == "promoted", training
    first = training[0]
    assert first["started_at_s"] + 300 <= first["at_s"] < START.timestamp() + 10 * 590  # before the feed ends
    assert 0 < first["gate"]["shadow_labels"] < 1000
    assert first["gate"]["shadow_answers"] == 2 * first["gate"]["shadow_labels"]
