"""Fixtures for daemon-level integration tests: a tiny model registry and Kafka helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_registry(tiny_registry_path: Path) -> Path:
    """A model registry whose serving version is a tiny random BERT (real tokenizer, real checkpoint)."""
    return tiny_registry_path
