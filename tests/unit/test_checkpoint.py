"""Checkpoint round trip, atomic writes and the refusal to unpickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

import monitor.model.checkpoint as checkpoint
from monitor.model import (
    CheckpointError,
    CheckpointMeta,
    MultiTaskClassifier,
    Predictor,
    load_checkpoint,
    save_checkpoint,
)

TEXTS = ["Fed raises rates", "oil prices fall", "Apple beats earnings"]
TOPICS = ("Macro", "Earnings", "Energy | Oil")


def _meta(model: MultiTaskClassifier, version: str = "v1") -> CheckpointMeta:
    return CheckpointMeta(
        version=version,
        parent=None,
        backbone="tiny",
        topics=model.topics,
        sentiments=model.sentiments,
        data_fingerprint="sha256:abc",
        metrics={"val_macro_f1": 0.5},
        train_config={"epochs": 1},
        created_at="2026-01-01T00:00:00+00:00",  # fixed: two metas built a second apart must be equal
    )


@pytest.fixture
def saved(tiny_backbone: Path, tmp_path: Path) -> tuple[Path, MultiTaskClassifier]:
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(tiny_backbone, topics=TOPICS).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    return save_checkpoint(model, tokenizer, _meta(model), tmp_path / "v1"), model


def test_round_trip_gives_identical_predictions(saved: tuple[Path, MultiTaskClassifier]) -> None:
    path, model = saved
    assert sorted(p.name for p in path.iterdir()) >= ["config.json", "meta.json", "model.safetensors"]
    loaded = load_checkpoint(path)
    assert loaded.meta == _meta(model)
    assert loaded.model.topics == TOPICS
    before = Predictor(model, loaded.tokenizer, "v1").logits(TEXTS)
    after = Predictor(loaded.model, loaded.tokenizer, "v1").logits(TEXTS)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_checkpoint_is_readable_by_others(saved: tuple[Path, MultiTaskClassifier]) -> None:
    assert saved[0].stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in saved[0].iterdir())


def test_meta_json_is_plain_json(saved: tuple[Path, MultiTaskClassifier]) -> None:
    body = json.loads((saved[0] / "meta.json").read_text())
    assert body["topics"] == list(TOPICS) and body["format"] == 1
    assert CheckpointMeta.from_dict(body).created_timestamp > 0


def test_existing_destination_needs_overwrite(saved: tuple[Path, MultiTaskClassifier], tiny_backbone: Path) -> None:
    path, model = saved
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    with pytest.raises(FileExistsError):
        save_checkpoint(model, tokenizer, _meta(model), path)
    save_checkpoint(model, tokenizer, _meta(model, "v2"), path, overwrite=True)
    assert load_checkpoint(path).meta.version == "v2"
    assert [p.name for p in path.parent.iterdir()] == ["v1"]  # no temp or backup dirs left behind


@pytest.mark.parametrize("overwrite", [False, True])
def test_crash_mid_write_leaves_previous_state(
    saved: tuple[Path, MultiTaskClassifier], tiny_backbone: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    path, model = saved
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_meta", crash)
    target = path if overwrite else path.parent / "v2"
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, tokenizer, _meta(model, "v2"), target, overwrite=overwrite)
    assert [p.name for p in path.parent.iterdir()] == ["v1"]
    assert load_checkpoint(path).meta.version == "v1"


def test_directory_without_meta_is_never_loaded(saved: tuple[Path, MultiTaskClassifier]) -> None:
    (saved[0] / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(saved[0])


def test_pickle_based_weights_are_refused(saved: tuple[Path, MultiTaskClassifier]) -> None:
    path, model = saved
    (path / "model.safetensors").unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"refusing to load pickle-based weights pytorch_model\.bin"):
        load_checkpoint(path)


def test_meta_must_match_model_labels(saved: tuple[Path, MultiTaskClassifier], tiny_backbone: Path) -> None:
    path, model = saved
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    wrong = CheckpointMeta("v9", None, "tiny", ("a", "b"), model.sentiments, "x")
    with pytest.raises(ValueError, match="label sets"):
        save_checkpoint(model, tokenizer, wrong, path.parent / "v9")


def test_source_offsets_round_trip_and_apply_to_their_source_only(tiny_backbone: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(tiny_backbone, topics=TOPICS).eval()
    model.source_offsets = {"wire": (torch.tensor([0.0, 3.0, 0.0]), torch.tensor([-1.0, 0.0, 5.0]))}
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    path = save_checkpoint(model, tokenizer, _meta(model), tmp_path / "v1")  # the meta says none: the model's win
    body = json.loads((path / "meta.json").read_text())
    assert body["source_offsets"] == {"wire": {"topic": [0.0, 3.0, 0.0], "sentiment": [-1.0, 0.0, 5.0]}}
    loaded = load_checkpoint(path)
    predictor = Predictor(loaded.model, loaded.tokenizer, "v1")
    shared = predictor.logits(TEXTS)
    wire = predictor.logits(TEXTS, ["wire"] * 3)
    mixed = predictor.logits(TEXTS, ["tweets", "wire", "unknown"])
    assert torch.equal(predictor.logits(TEXTS, ["tweets"] * 3)[1], shared[1])
    assert torch.allclose(wire[1] - shared[1], torch.tensor([[-1.0, 0.0, 5.0]] * 3))
    assert torch.allclose(wire[0] - shared[0], torch.tensor([[0.0, 3.0, 0.0]] * 3))
    assert torch.equal(mixed[1][1], wire[1][1]) and torch.equal(mixed[1][2], shared[1][2])
    assert {s.sentiment for s in predictor.predict(TEXTS, ["wire"] * 3)} == {"positive"}
    with pytest.raises(ValueError, match="2 sources for 3 texts"):
        predictor.logits(TEXTS, ["wire"] * 2)


@pytest.mark.parametrize("offsets", [
    {"wire": {"topic": [0.0, 0.0, 0.0]}},
    {"wire": {"topic": [0.0, 0.0], "sentiment": [0.0, 0.0, 0.0]}},
    {"wire": {"topic": [0.0, 0.0, 0.0], "sentiment": [0.0, "x", 0.0]}},
    {"wire": {"topic": [0.0, 0.0, 0.0], "sentiment": [0.0, float("nan"), 0.0]}},
    ["wire"],
])
def test_bad_source_offsets_are_refused(saved: tuple[Path, MultiTaskClassifier], offsets: object) -> None:
    body = json.loads((saved[0] / "meta.json").read_text())
    with pytest.raises(CheckpointError, match="source_offsets"):
        CheckpointMeta.from_dict({**body, "source_offsets": offsets})
