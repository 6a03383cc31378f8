"""The ONNX backend: export + check against torch, checksums, backend selection, int8 quantization."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

import monitor.model.onnx_export as onnx_export
from monitor.config import ConfigError, ModelConfig
from monitor.model import CheckpointMeta, MultiTaskClassifier, Predictor, load_checkpoint, save_checkpoint
from monitor.model.onnx_backend import OnnxBackend, OnnxError
from monitor.model.onnx_export import ONNX_FILE, RECORD_FILE, ensure_export, file_sha256, probe_texts, read_record
from monitor.serving import load_predictor

TEXTS = [
    "Fed raises interest rates",
    "Apple shares jump after strong earnings beat and record revenue growth this quarter",
    "oil",
    "Bank of China cuts guidance https://t.co/QPN8Gwl7Uh",
    "gold",
]


def _settings(**overrides: Any) -> ModelConfig:
    return replace(ModelConfig(device="cpu", threads=1, backend="auto", max_length=32), **overrides)


def _checkpoint(tiny_backbone: Path, dest: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = MultiTaskClassifier.from_backbone(tiny_backbone).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    meta = CheckpointMeta(version=f"v{seed}", parent=None, backbone="tiny", topics=model.topics,
                          sentiments=model.sentiments, data_fingerprint="sha256:x")
    return save_checkpoint(model, tokenizer, meta, dest)


@pytest.fixture(scope="module")
def exported(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint with its accepted ONNX export (export once per module: a few seconds)."""
    path = _checkpoint(tiny_backbone, tmp_path_factory.mktemp("onnx") / "v0")
    predictor, _ = load_predictor(path, _settings(backend="onnx"))
    assert predictor.backend.name == "onnx"
    return path


def _copy(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / exported.name))


def test_export_is_recorded_beside_the_weights_with_its_checksum(exported: Path) -> None:
    record = read_record(exported)
    assert record is not None and record.accepted, record
    assert record.sha256 == file_sha256(exported / ONNX_FILE)
    assert record.weights_sha256 == file_sha256(exported / "model.safetensors")
    assert record.check["texts"] == len(probe_texts()) and record.check["max_abs_diff"] < 1e-4
    assert json.loads((exported / RECORD_FILE).read_text())["accepted"] is True


def test_onnx_and_torch_give_the_same_labels_and_logits(exported: Path) -> None:
    onnx_predictor, _ = load_predictor(exported, _settings(backend="onnx"))
    torch_predictor, _ = load_predictor(exported, _settings(backend="torch"))
    assert (onnx_predictor.backend.name, torch_predictor.backend.name) == ("onnx", "torch")
    texts = TEXTS + probe_texts(20, seed=3)
    a, b = onnx_predictor.logits(texts), torch_predictor.logits(texts)
    assert torch.allclose(a[0], b[0], atol=1e-4) and torch.allclose(a[1], b[1], atol=1e-4)
    assert [s.topic for s in onnx_predictor.predict(texts)] == [s.topic for s in torch_predictor.predict(texts)]


def test_a_current_export_is_reused_and_a_stale_one_redone(exported: Path, tmp_path: Path,
                                                          tiny_backbone: Path) -> None:
    path = _copy(exported, tmp_path)
    before = (path / ONNX_FILE).stat().st_mtime_ns
    predictor, _ = load_predictor(path, _settings())
    assert predictor.backend.name == "onnx" and (path / ONNX_FILE).stat().st_mtime_ns == before
    # New weights in the same directory: the record no longer matches them, so it is exported again.
    other = _checkpoint(tiny_backbone, tmp_path / "other", seed=1)
    shutil.copy(other / "model.safetensors", path / "model.safetensors")
    predictor, _ = load_predictor(path, _settings())
    record = read_record(path)
    assert record is not None and record.weights_sha256 == file_sha256(other / "model.safetensors")
    assert record.sha256 != read_record(exported).sha256  # type: ignore[union-attr]
    torch_predictor, _ = load_predictor(path, _settings(backend="torch"))
    assert torch.allclose(predictor.logits(TEXTS)[0], torch_predictor.logits(TEXTS)[0], atol=1e-4)


def test_export_whose_logits_differ_is_refused_and_torch_serves(
    tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = _checkpoint(tiny_backbone, tmp_path / "v0")
    real_export = onnx_export._export_bytes

    def drifted(model: MultiTaskClassifier) -> bytes:  # an exporter that got the sentiment head wrong
        with torch.no_grad():
            model.sentiment_head.bias.add_(torch.tensor([0.0, 0.01, 0.0]))
        return real_export(model)

    monkeypatch.setattr(onnx_export, "_export_bytes", drifted)
    with caplog.at_level(logging.WARNING):
        predictor, _ = load_predictor(path, _settings(backend="onnx"))
    assert predictor.backend.name == "torch"
    record = read_record(path)
    assert record is not None and not record.accepted and "rejected" in record.reason
    assert record.check["max_abs_diff"] >= 1e-4
    assert any("not used, torch serves" in r.getMessage() for r in caplog.records)
    # The rejection is remembered: the next load does not export again and serves torch.
    monkeypatch.setattr(onnx_export, "_export_bytes", lambda model: pytest.fail("exported again"))
    assert load_predictor(path, _settings())[0].backend.name == "torch"


def test_changed_onnx_file_is_refused(exported: Path, tmp_path: Path) -> None:
    path = _copy(exported, tmp_path)
    data = bytearray((path / ONNX_FILE).read_bytes())
    data[-10] ^= 0xFF
    (path / ONNX_FILE).write_bytes(bytes(data))
    record = read_record(path)
    assert record is not None
    with pytest.raises(OnnxError, match="sha256"):
        OnnxBackend.from_file(path / ONNX_FILE, record.sha256)
    assert load_predictor(path, _settings(backend="onnx"))[0].backend.name == "torch"


def test_failed_export_falls_back_to_torch(
    tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _checkpoint(tiny_backbone, tmp_path / "v0")

    def broken(model: MultiTaskClassifier) -> bytes:
        raise RuntimeError("exporter does not support this op")

    monkeypatch.setattr(onnx_export, "_export_bytes", broken)
    loaded = load_checkpoint(path)
    record = ensure_export(path, loaded.model, loaded.tokenizer, 32)
    assert not record.accepted and "export failed: RuntimeError: exporter does not support" in record.reason
    assert not (path / RECORD_FILE).exists()  # not remembered: the next load tries again
    assert load_predictor(path, _settings())[0].backend.name == "torch"


def test_backend_switch(exported: Path) -> None:
    assert load_predictor(exported, _settings(backend="auto"))[0].backend.name == "onnx"
    assert load_predictor(exported, _settings(backend="torch"))[0].backend.name == "torch"
    with pytest.raises(ConfigError, match=r"model\.backend: must be auto, torch or onnx"):
        _settings(backend="tensorrt")


def test_threads_auto_probes_once_per_backend(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import monitor.model.backends as backends

    calls: list[list[int]] = []

    def fake_probe(run_with: Any) -> Any:
        run_with(1)()  # the probe really runs the backend
        calls.append([1])
        return SimpleNamespace(threads=1)

    monkeypatch.setattr(backends, "probe_threads", fake_probe)
    monkeypatch.setattr(backends, "_PROBED", {})
    for _ in range(2):
        predictor, _ = load_predictor(exported, _settings(threads="auto"))
        assert predictor.backend.name == "onnx" and getattr(predictor.backend, "threads", None) == 1
    assert len(calls) == 1


def test_int8_is_quantized_and_recorded(exported: Path, tmp_path: Path) -> None:
    path = _copy(exported, tmp_path)
    # No labelled data beside the model: the guard keeps fp32 and says why.
    predictor, _ = load_predictor(path, _settings(int8=True))
    assert predictor.backend.name == "onnx"
    record = read_record(path)
    assert record is not None and record.int8["sha256"] == file_sha256(path / "model.int8.onnx")
    assert 0.0 <= record.int8["probe_agreement"] <= 1.0
    int8 = Predictor(predictor.model, predictor.tokenizer, "q", max_length=32,
                     backend=OnnxBackend.from_file(path / "model.int8.onnx", record.int8["sha256"], name="onnx-int8"))
    assert len(int8.predict(TEXTS)) == len(TEXTS)


def test_model_add_and_promote_export_before_anything_serves(tiny_backbone: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.cli import main

    checkpoint = _checkpoint(tiny_backbone, tmp_path / "ckpt")
    registry = tmp_path / "models"
    assert main(["model", "--registry", str(registry), "add", str(checkpoint)]) == 0
    assert "ONNX export accepted" in capsys.readouterr().out
    version = registry / "versions" / load_checkpoint(checkpoint).meta.version
    record = read_record(version)
    assert record is not None and record.accepted and record.sha256 == file_sha256(version / ONNX_FILE)
    assert not (checkpoint / ONNX_FILE).exists()  # the source checkpoint is left as it was
    (version / ONNX_FILE).unlink()
    (version / RECORD_FILE).unlink()
    assert main(["model", "--registry", str(registry), "promote", version.name]) == 0
    assert (version / ONNX_FILE).is_file() and read_record(version) is not None  # exported before CURRENT moved
