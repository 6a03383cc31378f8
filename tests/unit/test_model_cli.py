"""``monitor train`` and ``monitor eval`` end to end on the tiny backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.model import load_checkpoint

ROWS = [
    {"text": "apple earnings beat , profit rises", "topic": "Earnings", "sentiment": "positive"},
    {"text": "tesla earnings miss , profit falls", "topic": "Earnings", "sentiment": "negative"},
    {"text": "oil prices surge", "topic": "Energy | Oil", "sentiment": "positive"},
    {"text": "oil prices plunge", "topic": "Energy | Oil"},
    {"text": "fed raises interest rates", "topic": "Macro", "sentiment": "neutral"},
    {"text": "inflation data", "topic": "Macro"},
    {"text": "stocks jump on good news", "sentiment": "positive"},
    {"text": "shares drop on bad news", "sentiment": "negative"},
]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 3), encoding="utf-8")
    return path


def test_train_then_eval(tiny_backbone: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    topics = tmp_path / "topics.txt"
    topics.write_text("# mine\nEarnings\nEnergy | Oil\nMacro\n", encoding="utf-8")
    out = tmp_path / "model"
    code = main(
        ["train", "--data", f"{data}:jsonl", "--backbone", str(tiny_backbone), "--topics", str(topics),
         "--out", str(out), "--epochs", "2", "--batch-size", "4", "--val-fraction", "0.25", "--device", "cpu",
         "--no-progress", "--version", "v-test", "--max-length", "16"]
    )  # fmt: skip
    assert code == 0
    meta = load_checkpoint(out).meta
    assert (meta.version, meta.topics, meta.train_config["max_length"]) == (
        "v-test",
        ("Earnings", "Energy | Oil", "Macro"),
        16,
    )
    assert meta.metrics["train_examples"] + meta.metrics["val_examples"] == len(ROWS) * 3
    assert meta.data_fingerprint.startswith("sha256:")
    capsys.readouterr()

    assert main(["eval", "--model", str(out), "--data", str(data), "--json", "--device", "cpu"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["model"] == "v-test" and body["examples"] == len(ROWS) * 3
    assert body["heads"]["topic"]["support"] == 18 and body["heads"]["sentiment"]["support"] == 18

    assert main(["eval", "--model", str(out), "--data", str(data), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "[topic] accuracy" in text and "confusion matrix" in text and "macro avg" in text


def test_bad_data_is_reported_with_file_and_line(
    tiny_backbone: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "sentiment": "up"}\n', encoding="utf-8")
    code = main(["train", "--data", str(bad), "--backbone", str(tiny_backbone), "--out", str(tmp_path / "m")])
    assert code == 2
    assert "bad.jsonl line 1: sentiment 'up'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_eval_refuses_incomplete_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.safetensors").write_bytes(b"")
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "x", "sentiment": "neutral"}\n', encoding="utf-8")
    assert main(["eval", "--model", str(tmp_path / "half"), "--data", str(data)]) == 2
    assert "incomplete checkpoint" in capsys.readouterr().err
