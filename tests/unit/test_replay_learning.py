"""Replay with a learner: labels reach it at published_at + label_delay_s of event time, never earlier."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from test_replay import config_for, keyword_checkpoint, make_feed, write_jsonl

from monitor.records import Label, NewsItem, Prediction
from monitor.replay.learning import EventClock
from monitor.replay.runner import ReplayOptions, replay


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
