"""Model registry: lineage, the CURRENT pointer, rollback with a clear error for unknown versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.model.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from monitor.model.network import MultiTaskClassifier
from monitor.registry import ModelRegistry, RegistryError
from monitor.serving import ModelNotFound, RegistryWatcher, resolve_model_dir


def _save(tiny_backbone: Path, registry: ModelRegistry, version: str, parent: str | None) -> None:
    from transformers import AutoTokenizer

    model = MultiTaskClassifier.from_backbone(tiny_backbone, ("A", "B"), ("negative", "neutral", "positive"))
    tok = AutoTokenizer.from_pretrained(str(tiny_backbone))
    meta = CheckpointMeta(
        version=version,
        parent=parent,
        backbone=str(tiny_backbone),
        topics=("A", "B"),
        sentiments=("negative", "neutral", "positive"),
        data_fingerprint="x",
        created_at=f"2026-01-0{len(registry.versions()) + 1}T00:00:00+00:00",
    )
    save_checkpoint(model, tok, meta, registry.path(version))


def test_promote_rollback_and_watch(tmp_path: Path, tiny_backbone: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg").init()
    with pytest.raises(ModelNotFound, match="no serving version"):
        resolve_model_dir(registry.root)
    _save(tiny_backbone, registry, "v1", None)
    registry.set_current("v1", reason="bootstrap")
    watcher = RegistryWatcher(registry.root, "v1")
    assert watcher.changed() is None
    _save(tiny_backbone, registry, "v2", "v1")
    registry.set_current("v2", reason="better")
    assert watcher.changed() == registry.path("v2")
    assert watcher.changed() is None
    assert [(v.meta.version, v.meta.parent, v.serving) for v in registry.versions()] == [
        ("v1", None, False),
        ("v2", "v1", True),
    ]
    registry.set_current("v1", "rollback")
    assert resolve_model_dir(registry.root) == registry.path("v1")
    assert load_checkpoint(resolve_model_dir(registry.root)).meta.version == "v1"
    assert [e["event"] for e in registry.history()] == ["promoted", "promoted", "rollback"]
    with pytest.raises(RegistryError, match=r"no model version 'v9'.*known: v1, v2"):
        registry.set_current("v9")
