"""Warm start and offline updates: a model's training data seeds the replay buffer when it enters a
registry; ``monitor train --from`` fine-tunes a checkpoint like one learner update; ``--backbone`` is
loaded whole or refused."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from regimes import TOPICS, stream

from monitor.cli import main
from monitor.learn import evaluate
from monitor.learn.buffer import ReplayBuffer, load_examples
from monitor.learn.warmstart import SEED_FILE, mixed_sample, read_seed, write_seed
from monitor.model import load_checkpoint
from monitor.records import Example
from monitor.registry import ModelRegistry

#: Tiny-model training options (2 layers, hidden 32): high learning rates, nothing frozen.
FAST = ["--batch-size", "16", "--lr-encoder", "3e-3", "--lr-head", "1e-2", "--device", "cpu", "--no-progress",
        "--threads", "1", "--freeze-layers", "0"]


def write_jsonl(examples: list[Example], path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": e.text, "topic": e.topic, "sentiment": e.sentiment,
                                        "source": e.source}) + "\n" for e in examples), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``monitor train`` on regime A (600 examples) with a 3-topic list: checkpoint ``v-a``."""
    root = tmp_path_factory.mktemp("warm")
    topics = root / "topics.txt"
    topics.write_text("\n".join(TOPICS) + "\n", encoding="utf-8")
    data = write_jsonl(stream("A", 600, 1), root / "a.jsonl")
    out = root / "v-a"
    code = main(["train", "--data", str(data), "--backbone", str(tiny_backbone), "--topics", str(topics),
                 "--out", str(out), "--version", "v-a", "--epochs", "8", "--max-length", "16",
                 "--replay-per-class", "30", *FAST])
    assert code == 0
    return out


def test_mixed_sample_keeps_the_class_mix_of_each_head(tmp_path: Path) -> None:
    data = [Example(f"a{i}", topic="A", source="big") for i in range(300)]
    data += [Example(f"b{i}", topic="B", source="big") for i in range(30)]
    data += [Example(f"c{i}", topic="A", sentiment="negative", source="small") for i in range(10)]
    data += [Example(f"s{i}", sentiment="neutral", source="small") for i in range(90)]
    picked = mixed_sample(data, {"topic": 110, "sentiment": 20})
    topics = Counter(e.topic for e in picked if e.topic is not None)
    assert sum(topics.values()) == 110 and 3 <= topics["B"] <= 18  # about 30/340 of them, not half
    assert sum(e.sentiment is not None for e in picked) == 20  # the rows with both labels count for both
    assert mixed_sample(data, 5) == mixed_sample(data, 5) != mixed_sample(data, 5, seed=1)
    assert len(mixed_sample(data, 1000)) == len(data)
    # the seed's replay part: per_class x the classes of each head, in the same mix
    write_seed(tmp_path, data, per_class=55, holdout_per_head=0)
    _, replay = read_seed(tmp_path, "replay")
    topics = Counter(e.topic for e in replay if e.topic is not None)
    assert 110 <= sum(topics.values()) <= 120 and 3 <= topics["B"] <= 18  # the sentiment rows add a few topics


def test_train_writes_a_seed_in_the_data_mix_with_the_fingerprint(trained: Path) -> None:
    header, seed = read_seed(trained)
    meta = load_checkpoint(trained).meta
    assert header["fingerprint"] == meta.data_fingerprint and header["of"] == meta.metrics["train_examples"]
    assert header["per_class"] == 30 and header["kind"] == "replay-seed"
    _, replay = read_seed(trained, "replay")
    topics = Counter(e.topic for e in replay if e.topic is not None)
    sentiments = Counter(e.sentiment for e in replay if e.sentiment is not None)
    assert set(topics) == set(TOPICS) and sum(topics.values()) == 30 * len(TOPICS)  # per_class x classes
    assert sum(sentiments.values()) >= 30 * len(sentiments) and len(sentiments) == 3
    assert len(seed) < 600 and meta.max_length == 16


def test_seed_holdout_part_is_a_sample_per_head_from_validation_and_goes_to_the_holdout(trained: Path) -> None:
    header, replay = read_seed(trained, "replay")
    _, held = read_seed(trained, "holdout")
    assert header["holdout"] == len(held) > 0 and header["holdout_from"] == "validation examples"
    assert not {e.text for e in replay} & {e.text for e in held}
    # monitor train's 10 % validation split of 600, never trained on: all of it (fewer than 1000 a head)
    # but the few whose text the replay part holds too (the synthetic stream repeats texts)
    val_examples = load_checkpoint(trained).meta.metrics["val_examples"]
    assert val_examples - 5 <= len(held) <= val_examples <= 61
    buffer = ReplayBuffer(capacity=2000, holdout_fraction=0.1, holdout_capacity=1000)
    from monitor.learn.warmstart import seed_buffer

    assert seed_buffer(buffer, trained) == len(replay) + len(held)
    assert sorted(e.text for e in buffer.holdout) == sorted(e.text for e in held)  # whole, not a hash share
    assert sorted(e.text for e in buffer.examples) == sorted(e.text for e in replay)
    # per head: an equal number of examples for each head, in the classes' own proportions (2/3 neutral)
    many = [Example(f"t{i}", topic=f"T{i % 20}", source="tweets_topic") for i in range(4000)]
    many += [Example(f"s{i}", sentiment=["negative", "neutral", "neutral"][i % 3], source="tweets_sentiment")
             for i in range(3000)]
    picked = mixed_sample(many, 600)
    assert Counter(e.source for e in picked) == {"tweets_topic": 600, "tweets_sentiment": 600}
    assert 0.6 < Counter(e.sentiment for e in picked)["neutral"] / 600 < 0.73
    assert mixed_sample(many, 600) == picked and mixed_sample(many, 600, seed=1) != picked


def test_model_add_seeds_the_replay_buffer_and_the_holdout(trained: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    registry = tmp_path / "models"
    assert main(["model", "--registry", str(registry), "add", str(trained), "--promote"]) == 0
    assert "examples of v-a's training data added" in capsys.readouterr().out
    buffer_file = registry / "learner" / "buffer.jsonl"
    header, rows = load_examples(buffer_file)
    _, seed = read_seed(trained)
    assert header["seeds"] == [read_seed(trained)[0]["fingerprint"]]
    buffer = ReplayBuffer.load(buffer_file, 2000, 0.2, holdout_capacity=1000)
    assert len(buffer) + len(buffer.holdout) == len(seed) == len(rows)
    assert 0 < len(buffer.holdout) < len(seed) / 2  # the old domain is in the forgetting holdout
    assert (registry / "versions" / "v-a" / SEED_FILE).is_file()
    # adding it again (or a learner starting on it) does not add the seed twice
    assert main(["model", "--registry", str(registry), "add", str(trained)]) == 0
    assert len(load_examples(buffer_file)[1]) == len(rows)


def test_model_add_replay_from_seeds_a_model_trained_elsewhere(trained: Path, tmp_path: Path) -> None:
    bare = tmp_path / "elsewhere"
    import shutil

    shutil.copytree(trained, bare)
    (bare / SEED_FILE).unlink()
    registry = tmp_path / "models"
    assert main(["model", "--registry", str(registry), "add", str(bare)]) == 0
    assert not (registry / "learner" / "buffer.jsonl").exists()  # nothing to seed from
    data = write_jsonl(stream("A", 200, 9), tmp_path / "theirs.jsonl")
    assert main(["model", "--registry", str(registry), "add", str(bare), "--replay-from", str(data),
                 "--replay-per-class", "10"]) == 0
    buffer = ReplayBuffer.load(registry / "learner" / "buffer.jsonl", 2000, 0.1, holdout_capacity=1000)
    _, replay = read_seed(registry / "versions" / "v-a", "replay")  # 10 x the 3 classes of each head, in their mix
    assert sum(e.sentiment is not None for e in replay) == 30 and len(buffer) <= len(replay) <= 10 * (3 + 3)
    assert 0 < len(buffer.holdout) <= 2 * 500  # the holdout part: their examples the replay part did not take
    assert main(["model", "--registry", str(registry), "add", str(bare), "--replay-from",
                 str(tmp_path / "missing.jsonl")]) == 2


def test_train_from_is_an_offline_update_that_learns_and_keeps(trained: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(stream("B", 240, 6), tmp_path / "b.jsonl")
    out = tmp_path / "v-b"
    code = main(["train", "--from", str(trained), "--data", str(data), "--out", str(out), "--version", "v-b",
                 "--epochs", "12", "--distill-weight", "0.2", "--replay-ratio", "1.0", "--no-freeze-embeddings", *FAST])
    assert code == 0, capsys.readouterr().err
    n = len(read_seed(trained, "replay")[1])  # ratio 1.0 would take 240; the seed holds fewer
    assert f"fine-tuning v-a (replay_distill): 240 new + {n} replay examples (of {n})" in capsys.readouterr().err
    before, after = load_checkpoint(trained), load_checkpoint(out)
    assert (after.meta.parent, after.meta.max_length, after.meta.topics) == ("v-a", 16, before.meta.topics)
    assert after.meta.metrics["method"] == "replay_distill" and after.meta.metrics["replay_examples"] == n
    assert after.meta.train_config["distill_weight"] == 0.2
    test_a, test_b = stream("A", 150, 3), stream("B", 150, 4)

    def sentiment(m: object, xs: list[Example]) -> float:
        return evaluate(m.model, xs, m.tokenizer, max_length=16).heads["sentiment"].accuracy  # type: ignore[attr-defined]

    assert sentiment(before, test_b) < 0.5 < 0.9 < sentiment(after, test_b)
    assert sentiment(after, test_a) >= sentiment(before, test_a) - 0.05  # the replayed seed kept regime A
    assert read_seed(out)[0]["of"] > 240  # its seed carries the old domain on


def test_train_refuses_what_would_silently_start_from_random(trained: Path, tiny_backbone: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(stream("B", 40, 6), tmp_path / "b.jsonl")
    args = ["train", "--data", str(data), "--out", str(tmp_path / "x"), *FAST]
    topics = tmp_path / "topics.txt"
    topics.write_text("\n".join(TOPICS) + "\n", encoding="utf-8")
    assert main([*args, "--topics", str(topics), "--backbone", str(trained)]) == 2
    assert f"{trained} is a monitor checkpoint, not a pretrained backbone: to fine-tune it, pass --from" in (
        capsys.readouterr().err)
    partial = tmp_path / "partial"
    import shutil

    shutil.copytree(tiny_backbone, partial)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(partial / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "layer.1." not in k}, str(partial / "model.safetensors"))
    assert main([*args, "--topics", str(topics), "--backbone", str(partial)]) == 2
    assert "encoder weights are not in its files" in capsys.readouterr().err
    assert main([*args, "--from", str(trained), "--max-length", "32"]) == 2
    assert "the checkpoint's truncation length is 16" in capsys.readouterr().err
    assert main([*args, "--method", "replay"]) == 2
    assert "--method: only with --from" in capsys.readouterr().err
    assert main([*args, "--from", str(trained), "--distill-weight", "-1"]) == 2
    assert "distill_weight" in capsys.readouterr().err
    assert main([*args, "--from", str(trained), "--distill-on", "new"]) == 2
    assert "distill_on: must be replay, congruent or all, got 'new'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_eval_takes_threads_and_the_checkpoint_length(trained: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(stream("A", 30, 7), tmp_path / "a.jsonl")
    assert main(["eval", "--model", str(trained), "--data", str(data), "--threads", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 30
    assert main(["eval", "--model", str(trained), "--data", str(data), "--threads", "0"]) == 2


def test_a_learner_seeds_its_own_buffer_from_the_serving_version(trained: Path, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from monitor.config import LearningConfig, ModelConfig, MonitorConfig
    from monitor.learn.online import build_learner
    from monitor.metrics import Metrics

    registry = ModelRegistry(tmp_path / "models").init()
    import shutil

    shutil.copytree(trained, registry.path("v-a"))
    registry.set_current("v-a", reason="test")
    settings = {"state_dir": str(tmp_path / "state"), "buffer_size": 500, "freeze_layers": 0}
    config = MonitorConfig(model=ModelConfig(path=str(registry.root), device="cpu"),
                           learning=LearningConfig(enabled=True, settings=settings))
    learner = build_learner(config, Metrics(CollectorRegistry()))
    n = len(learner.buffer) + len(learner.buffer.holdout)
    assert n == len(read_seed(trained)[1]) and {e.time for e in learner.buffer.holdout} == {None}  # stratum wire@?
    learner.close()
    again = build_learner(config, Metrics(CollectorRegistry()))
    assert len(again.buffer) + len(again.buffer.holdout) == n  # absorbed once
    again.close()


def test_train_from_fits_offsets_for_a_new_source_and_eval_applies_them(trained: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The offline update as the learner's: a source its replay lacks gets logit offsets; monitor eval scores each
    example with its source's, or with those of --source."""
    from dataclasses import replace

    data = write_jsonl([replace(e, source="headlines") for e in stream("B", 120, 6)], tmp_path / "b.jsonl")
    out = tmp_path / "v-h"
    assert main(["train", "--from", str(trained), "--data", str(data), "--out", str(out), "--version", "v-h",
                 "--epochs", "2", *FAST]) == 0
    assert "source offsets trained: headlines" in capsys.readouterr().err
    assert sorted(load_checkpoint(out).meta.source_offsets) == ["headlines"]
    for extra, applied in (([], {"headlines": 120}), (["--source", "wire"], {})):
        assert main(["eval", "--model", str(out), "--data", str(data), "--json", "--device", "cpu", *extra]) == 0
        captured = capsys.readouterr()
        body = json.loads(captured.out)
        assert (body["source_offsets_applied"], body["source_offsets"]) == (applied, ["headlines"])
        # Items of a source without offsets are said to get the shared heads' answer (on stderr).
        assert ("no source offsets for: wire (120 examples)" in captured.err) == (not applied)
    assert main(["eval", "--model", str(out), "--data", str(data), "--device", "cpu"]) == 0
    assert "source offsets of the model: headlines; applied: headlines (120 examples)" in capsys.readouterr().out
