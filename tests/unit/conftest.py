"""Shared fixtures for the unit layer: a tiny random BERT backbone, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a 2-layer, hidden-32 random BERT and a real WordPiece tokenizer."""
    from monitor.model.backbone import tiny_backbone as build

    return build(tmp_path_factory.mktemp("tiny-backbone"))
