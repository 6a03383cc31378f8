"""The replay buffer: bounded, balanced over classes and strata, seeded, holdout, atomic persistence."""

from __future__ import annotations

import os
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.learn.buffer import ReplayBuffer, example_key, in_holdout, load_examples, save_examples, stratum
from monitor.records import Example

DAY0 = datetime(2026, 3, 2, tzinfo=UTC)


def _ex(i: int, sentiment: str = "positive", source: str = "wire", day: int = 0, topic: str | None = None) -> Example:
    return Example(f"text {source} {day} {i} {sentiment}", topic=topic, sentiment=sentiment, source=source,
                   id=f"{source}-{day}-{i}-{sentiment}", time=DAY0 + timedelta(days=day, seconds=i))


def test_bounded_and_class_balanced() -> None:
    buf = ReplayBuffer(capacity=100, holdout_fraction=0.0, seed=0)
    rng = random.Random(0)
    for i in range(2000):  # 90 % positive, 10 % negative
        buf.add(_ex(i, "positive" if rng.random() < 0.9 else "negative"))
    counts = Counter(e.sentiment for e in buf.examples)
    assert len(buf) == 100 and counts == {"positive": 50, "negative": 50}


def test_old_regimes_stay_represented() -> None:
    """200 examples of day 0, then 2000 of day 5: a plain reservoir would keep ~9 % of day 0."""
    buf = ReplayBuffer(capacity=100, holdout_fraction=0.0, seed=0)
    for i in range(200):
        buf.add(_ex(i, day=0))
    for i in range(2000):
        buf.add(_ex(i, day=5))
    periods = Counter(stratum(e, 86400) for e in buf.examples)
    assert periods == {"wire@20514": 50, "wire@20519": 50}


def test_small_cells_are_kept_whole_and_sources_balance() -> None:
    buf = ReplayBuffer(capacity=60, holdout_fraction=0.0, seed=0)
    for i in range(5):
        buf.add(_ex(i, "negative", source="rare"))
    for i in range(500):
        buf.add(_ex(i, source="wire"))
        buf.add(_ex(i, source="blog"))
    by_cell = Counter((e.source, e.sentiment) for e in buf.examples)
    assert by_cell[("rare", "negative")] == 5
    assert abs(by_cell[("wire", "positive")] - by_cell[("blog", "positive")]) <= 1
    assert sum(by_cell.values()) == 60


def test_reservoir_within_a_cell_is_uniform() -> None:
    """Each cell is a uniform sample of its stream: kept indices average about n / 2."""
    means = []
    for seed in range(20):
        buf = ReplayBuffer(capacity=20, holdout_fraction=0.0, seed=seed)
        for i in range(1000):
            buf.add(_ex(i))
        means.append(sum(int(e.id.split("-")[2]) for e in buf.examples) / len(buf))  # type: ignore[union-attr]
    assert 400 < sum(means) / len(means) < 600


def test_holdout_is_stable_disjoint_and_bounded() -> None:
    buf = ReplayBuffer(capacity=200, holdout_fraction=0.2, seed=0)
    examples = [_ex(i, random.Random(i).choice(["positive", "negative"])) for i in range(3000)]
    for e in examples:
        buf.add(e)
    holdout = {example_key(e) for e in buf.holdout}
    assert 0 < len(holdout) <= 40 and len(buf) == 200
    assert all(in_holdout(e, 0.2) for e in buf.holdout)
    assert not holdout & {example_key(e) for e in buf.sample(1000, random.Random(0))}
    routed = sum(in_holdout(e, 0.2) for e in examples) / len(examples)
    assert 0.17 < routed < 0.23
    sized = ReplayBuffer(capacity=200, holdout_fraction=0.2, seed=0, holdout_capacity=300)  # holdout_size
    for e in examples:
        sized.add(e)
    assert len(sized.holdout) == 300 and len(sized) == 200


def test_duplicates_and_unlabelled_are_ignored() -> None:
    buf = ReplayBuffer(capacity=10, holdout_fraction=0.0)
    e = _ex(1)
    assert buf.add(e) and not buf.add(e) and not buf.add(Example("no labels"))
    assert len(buf) == 1 and buf.added == 1


def test_sample_excludes_and_is_seeded() -> None:
    buf = ReplayBuffer(capacity=50, holdout_fraction=0.0)
    for i in range(50):
        buf.add(_ex(i))
    exclude = {example_key(_ex(i)) for i in range(40)}
    sample = buf.sample(30, random.Random(3), exclude=exclude)
    assert len(sample) == 10 and not {example_key(e) for e in sample} & exclude
    assert buf.sample(5, random.Random(3)) == buf.sample(5, random.Random(3))


def test_survives_a_restart_with_the_same_content_and_choices(tmp_path: Path) -> None:
    path = tmp_path / "state" / "buffer.jsonl"
    buf = ReplayBuffer(capacity=30, holdout_fraction=0.2, seed=7)
    for i in range(300):
        buf.add(_ex(i, ["positive", "negative", "neutral"][i % 3], topic="Macro" if i % 2 else None))
    buf.seeds.append("sha256:abc")
    buf.save(path)
    again = ReplayBuffer.load(path, capacity=30, holdout_fraction=0.2, seed=999)
    assert again.examples == buf.examples and again.holdout == buf.holdout and again.added == buf.added
    assert again.seeds == ["sha256:abc"]  # the warm-start seeds absorbed, so a restart does not add them again
    for i in range(300, 600):  # the random state was restored: both make the same choices from here on
        buf.add(_ex(i))
        again.add(_ex(i))
    assert again.examples == buf.examples
    assert [p.name for p in path.parent.iterdir()] == ["buffer.jsonl"]  # no temp files left behind


def test_load_trims_to_a_smaller_capacity_and_missing_file_is_empty(tmp_path: Path) -> None:
    buf = ReplayBuffer(capacity=40, holdout_fraction=0.0)
    for i in range(100):
        buf.add(_ex(i, "positive" if i % 4 else "negative"))
    buf.save(tmp_path / "b.jsonl")
    small = ReplayBuffer.load(tmp_path / "b.jsonl", capacity=10, holdout_fraction=0.0)
    assert len(small) == 10 and Counter(e.sentiment for e in small.examples) == {"positive": 5, "negative": 5}
    assert len(ReplayBuffer.load(tmp_path / "none.jsonl", capacity=10)) == 0


def test_a_failed_write_leaves_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "window.jsonl"
    save_examples(path, [_ex(1)], {"new_labels": 1})
    before = path.read_bytes()

    def broken_replace(src: str, dst: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_examples(path, [_ex(2), _ex(3)], {"new_labels": 3})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["window.jsonl"]
    header, examples = load_examples(path)
    assert header["new_labels"] == 1 and examples == [_ex(1)]


def test_sample_gives_each_head_an_equal_share() -> None:
    # A warm seed's shape: 20 topic classes and 3 sentiment classes, 20 examples each.
    buf = ReplayBuffer(capacity=1000, holdout_fraction=0.0)
    for k in range(20):
        for i in range(20):
            buf.add(Example(f"topic {k} {i}", topic=f"T{k}", source="tweets_topic"))
    for s in ("negative", "neutral", "positive"):
        for i in range(20):
            buf.add(Example(f"{s} {i}", sentiment=s, source="tweets_sentiment"))
    sample = buf.sample(100, random.Random(0))
    assert len(sample) == 100 and len({example_key(e) for e in sample}) == 100
    assert sum(e.sentiment is not None for e in sample) == 50  # uniform would give about 13
    big = buf.sample(200, random.Random(0))  # more than the 60 sentiment examples: topic takes the rest
    assert sum(e.sentiment is not None for e in big) == 60 and len(big) == 200
