"""Fixtures for daemon-level integration tests: a tiny model registry and Kafka helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model registry whose serving version is a tiny random BERT (real tokenizer, real checkpoint)."""
    from transformers import AutoTokenizer

    from monitor.labels import DEFAULT_TOPICS, SENTIMENTS
    from monitor.model.backbone import tiny_backbone
    from monitor.model.checkpoint import CheckpointMeta, save_checkpoint
    from monitor.model.network import MultiTaskClassifier
    from monitor.registry import ModelRegistry

    root = tmp_path_factory.mktemp("models")
    backbone = tiny_backbone(root / "backbone")
    model = MultiTaskClassifier.from_backbone(backbone, DEFAULT_TOPICS, SENTIMENTS)
    meta = CheckpointMeta(version="v-tiny-1", parent=None, backbone=str(backbone), topics=DEFAULT_TOPICS,
                          sentiments=SENTIMENTS, data_fingerprint="none")
    registry = ModelRegistry(root / "registry").init()
    save_checkpoint(model, AutoTokenizer.from_pretrained(str(backbone)), meta, registry.path(meta.version))
    registry.set_current(meta.version, reason="test fixture")
    return registry.root
