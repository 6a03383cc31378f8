"""``monitor replay --via-kafka`` on the real broker agrees with the direct replay, result for result,
without and with continual learning."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from monitor.config import KafkaConfig, MonitorConfig
from monitor.replay.runner import ReplayOptions, replay

# The models, feeds and configs are built by the unit tests' helpers (one definition for both layers).
sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
import test_replay as helpers
import test_replay_learning as learning

pytestmark = pytest.mark.integration


def via(config: MonitorConfig, bootstrap: str) -> MonitorConfig:
    return dataclasses.replace(config, kafka=KafkaConfig(bootstrap_servers=bootstrap))


@pytest.fixture(scope="module")
def keyword_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from monitor.model.backbone import tiny_backbone

    root = tmp_path_factory.mktemp("kw")
    return helpers.keyword_checkpoint(tiny_backbone(root / "backbone"), root / "kw-1")


def test_replay_via_kafka_matches_the_direct_replay(kafka_broker, keyword_model: Path, tmp_path: Path) -> None:
    feed = helpers.write_jsonl(helpers.make_feed(), tmp_path / "feed.jsonl")
    config = via(helpers.config_for(keyword_model), kafka_broker.bootstrap)
    summaries = {}
    for name, via_kafka in (("direct", False), ("kafka", True)):
        options = ReplayOptions(feeds=(feed,), out=tmp_path / name, fmt="csv", seed=3, via_kafka=via_kafka,
                                progress=False)
        summaries[name] = replay(config, options)
    direct, kafka = tmp_path / "direct", tmp_path / "kafka"
    assert summaries["kafka"]["path"] == "kafka" and summaries["direct"]["path"] == "direct"
    # the daemon saw exactly the planned micro-batches (lock-step), so everything matches byte for byte
    assert summaries["kafka"]["kafka"]["kafka_batches"] == summaries["kafka"]["batches"] == 300  # 30 s apart
    for name in ("predictions.csv", "alerts.jsonl", "trends.csv", "prequential.csv"):
        assert (direct / name).read_bytes() == (kafka / name).read_bytes(), name
    predictions = pd.read_csv(kafka / "predictions.csv")
    assert len(predictions) == 300 and predictions["model_version"].eq("kw-1").all()
    alerts = [json.loads(line) for line in (kafka / "alerts.jsonl").read_text().splitlines()]
    assert [(a["state"], a["key"]) for a in alerts if a["scope"] == "topic"] == [
        ("raised", "Energy | Oil"), ("cleared", "Energy | Oil")]


def test_learning_replay_via_kafka_matches_the_direct_replay(kafka_broker, tmp_path: Path) -> None:
    from monitor.model.backbone import tiny_backbone

    registry = learning.regime_a_registry(tiny_backbone(tmp_path / "backbone"), tmp_path / "models")
    feed = learning.regime_feed(tmp_path / "feed.jsonl")
    config = via(learning.learning_config(registry), kafka_broker.bootstrap)
    summaries = {}
    for name, via_kafka in (("direct", False), ("kafka", True)):
        options = ReplayOptions(feeds=(feed,), out=tmp_path / name, fmt="csv", learn=True, via_kafka=via_kafka,
                                progress=False)
        summaries[name] = replay(config, options)
    direct, kafka = tmp_path / "direct", tmp_path / "kafka"
    # labels went through the labels topic and the daemon's learner, one planned batch at a time
    assert summaries["kafka"]["kafka"]["kafka_batches"] == summaries["kafka"]["batches"] > 600
    # the same drift, the same training run at the same point, the same promoted model, the same predictions
    for name in ("events.jsonl", "predictions.csv", "alerts.jsonl", "prequential.csv", "trends.csv"):
        assert (direct / name).read_bytes() == (kafka / name).read_bytes(), name
    assert summaries["kafka"]["learning"]["training_runs"] == {"promoted": 1}
    versions = pd.read_csv(kafka / "predictions.csv")["model_version"]
    assert versions.iloc[0] == "v-a" and versions.iloc[-1] == "v-a-r1"
    assert (kafka / "registry" / "versions" / "v-a-r1").is_dir()
