"""``monitor replay --via-kafka`` on the real broker agrees with the direct replay, result for result."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from monitor.config import KafkaConfig
from monitor.replay.runner import ReplayOptions, replay

pytestmark = pytest.mark.integration


def _unit_helpers() -> ModuleType:
    """The keyword model and feed builders of tests/unit/test_replay.py (one definition for both layers)."""
    path = Path(__file__).parents[1] / "unit" / "test_replay.py"
    spec = importlib.util.spec_from_file_location("replay_unit_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helpers = _unit_helpers()


@pytest.fixture(scope="module")
def keyword_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from monitor.model.backbone import tiny_backbone

    root = tmp_path_factory.mktemp("kw")
    return helpers.keyword_checkpoint(tiny_backbone(root / "backbone"), root / "kw-1")


def test_replay_via_kafka_matches_the_direct_replay(kafka_broker, keyword_model: Path, tmp_path: Path) -> None:
    feed = helpers.write_jsonl(helpers.make_feed(), tmp_path / "feed.jsonl")
    config = helpers.config_for(keyword_model)
    config = dataclasses.replace(config, kafka=KafkaConfig(bootstrap_servers=kafka_broker.bootstrap))
    summaries = {}
    for name, via_kafka in (("direct", False), ("kafka", True)):
        options = ReplayOptions(feeds=(feed,), out=tmp_path / name, fmt="csv", seed=3, via_kafka=via_kafka,
                                progress=False)
        summaries[name] = replay(config, options)
    direct, kafka = tmp_path / "direct", tmp_path / "kafka"
    assert summaries["kafka"]["path"] == "kafka" and summaries["direct"]["path"] == "direct"
    # the daemon saw exactly the planned micro-batches (lock-step), so everything matches byte for byte
    assert summaries["kafka"]["kafka"]["kafka_batches"] == summaries["kafka"]["batches"] == 19
    for name in ("predictions.csv", "alerts.jsonl", "trends.csv", "prequential.csv"):
        assert (direct / name).read_bytes() == (kafka / name).read_bytes(), name
    predictions = pd.read_csv(kafka / "predictions.csv")
    assert len(predictions) == 300 and predictions["model_version"].eq("kw-1").all()
    alerts = [json.loads(line) for line in (kafka / "alerts.jsonl").read_text().splitlines()]
    assert [(a["state"], a["key"]) for a in alerts if a["scope"] == "topic"] == [
        ("raised", "Energy | Oil"), ("cleared", "Energy | Oil")]
