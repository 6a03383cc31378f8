"""Model registry: lineage, the CURRENT pointer, rollback with a clear error for unknown versions."""

from __future__ import annotations

import json
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


# --- broken versions: refused before they can serve, marked in the listing ---------------------------
def _break(path: Path, how: str) -> None:
    import pickle
    import shutil

    weights = path / "model.safetensors"
    if how == "corrupt safetensors":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])  # truncated: tensors lie outside the file
    elif how == "pickle named model.safetensors":
        weights.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    elif how == "only pytorch_model.bin":
        shutil.move(weights, path / "pytorch_model.bin")
    elif how == "non-JSON meta.json":
        (path / "meta.json").write_text("{not json", encoding="utf-8")
    elif how == "label sets differ":
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        meta["topics"] = ["A", "B", "C"]
        (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    elif how == "meta without topics":
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        del meta["topics"]
        (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


BREAKS = ["corrupt safetensors", "pickle named model.safetensors", "only pytorch_model.bin", "non-JSON meta.json",
          "label sets differ", "meta without topics"]


@pytest.mark.parametrize("how", BREAKS)
def test_a_broken_version_is_refused_and_marked(tmp_path: Path, tiny_backbone: Path, how: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.cli import main
    from monitor.model.checkpoint import CheckpointError, validate_checkpoint

    registry = ModelRegistry(tmp_path / "reg").init()
    _save(tiny_backbone, registry, "v1", None)
    registry.set_current("v1", reason="bootstrap")
    _save(tiny_backbone, registry, "v2", "v1")
    _break(registry.path("v2"), how)
    with pytest.raises(CheckpointError):
        validate_checkpoint(registry.path("v2"))
    for action in ("rollback", "promote"):
        assert main(["model", "--registry", str(registry.root), action, "v2"]) == 2
        assert "CURRENT is unchanged" in capsys.readouterr().err
        assert registry.current_version() == "v1"
    with pytest.raises(RegistryError, match="cannot serve"):
        registry.set_current("v2")
    assert main(["model", "--registry", str(registry.root), "list"]) == 0
    listing = capsys.readouterr().out
    assert next(line for line in listing.splitlines() if "v2" in line).startswith(" !")
    assert "BROKEN" in listing and "v1" in listing
    assert main(["model", "--registry", str(registry.root), "add", str(registry.path("v2"))]) == 2
    assert "is not a loadable checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["corrupt safetensors", "non-JSON meta.json"])
def test_the_daemon_on_a_broken_current_exits_2_naming_version_and_fix(
    tmp_path: Path, tiny_backbone: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.cli import main

    registry = ModelRegistry(tmp_path / "reg").init()
    _save(tiny_backbone, registry, "v1", None)
    registry.set_current("v1", reason="bootstrap")
    _break(registry.path("v1"), how)  # broken on disk after it was promoted
    # No broker at this address: the model is checked first, so this exits at once.
    code = main(["run", "--model", str(registry.root), "--bootstrap", "127.0.0.1:1", "--metrics-port", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "'v1'" in err and f"monitor model rollback VERSION --registry {registry.root}" in err
    assert "Traceback" not in err


def test_run_without_a_model_exits_2_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.cli import main

    assert main(["run", "--model", str(tmp_path / "nothing"), "--bootstrap", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nothing") in err and "monitor model promote" in err


def test_current_is_readable_by_other_users(tmp_path: Path, tiny_backbone: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg").init()
    _save(tiny_backbone, registry, "v1", None)
    registry.set_current("v1")
    assert (registry.root / "CURRENT").stat().st_mode & 0o777 == 0o644


def test_the_watcher_retries_a_failed_load_with_backoff(tmp_path: Path, tiny_backbone: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg").init()
    _save(tiny_backbone, registry, "v1", None)
    _save(tiny_backbone, registry, "v2", "v1")
    registry.set_current("v1")
    now = [0.0]
    watcher = RegistryWatcher(registry.root, "v1", clock=lambda: now[0])
    registry.set_current("v2")
    assert watcher.changed() == registry.path("v2")
    assert watcher.failed("v2") == 1.0  # e.g. files not yet visible on a shared filesystem
    assert watcher.changed() is None  # not hammered ...
    now[0] = 1.0
    assert watcher.changed() == registry.path("v2")  # ... but retried
    assert watcher.failed("v2") == 2.0
    now[0] = 2.5
    assert watcher.changed() is None
    now[0] = 3.0
    assert watcher.changed() == registry.path("v2")
    watcher.loaded("v2")
    assert watcher.changed() is None and watcher.serving == "v2"


def test_origin_follows_the_parents_back_to_the_first_version_still_here(tmp_path: Path, tiny_backbone: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry").init()
    _save(tiny_backbone, registry, "v1", "trained-elsewhere")  # its parent never entered this registry
    _save(tiny_backbone, registry, "v2", "v1")
    _save(tiny_backbone, registry, "v3", "v2")
    _save(tiny_backbone, registry, "other", None)
    assert [registry.origin(v) for v in ("v3", "v2", "v1", "other")] == ["v1", "v1", "v1", "other"]
