"""The ONNX Runtime backend of the ``Predictor``: one CPU inference session per model file.

The file's bytes are read once, their sha256 compared with the export record
(``monitor.model.onnx_export``) and the same bytes given to ONNX Runtime, which parses a
protobuf: nothing is unpickled, and a file changed after its check is refused.

Threads: ``intra_op_num_threads`` is the configured or probed count (``monitor.model.threads``),
one inter-op thread, sequential execution (one batch at a time, as the daemon runs them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["OnnxBackend", "OnnxError"]


class OnnxError(RuntimeError):
    """An ONNX model file that must not be served (checksum mismatch, unreadable)."""


class OnnxBackend:
    """``(input_ids, attention_mask) -> (topic_logits, sentiment_logits)`` through ONNX Runtime."""

    def __init__(self, session: Any, name: str = "onnx", threads: int = 0) -> None:
        self.session = session
        self.name = name
        self.threads = threads

    @classmethod
    def from_file(cls, path: Path | str, sha256: str, threads: int = 0, name: str = "onnx") -> OnnxBackend:
        """A session on ``path`` after checking its bytes against ``sha256``; ``threads`` 0 = ORT default."""
        import onnxruntime as ort

        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise OnnxError(f"cannot read {path}: {exc}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise OnnxError(f"{path} has sha256 {actual[:12]}..., its export record says {sha256[:12]}...: refusing it")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initializers etc. are noise here
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return cls(session, name=name, threads=threads)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feed = {"input_ids": _int64(input_ids), "attention_mask": _int64(attention_mask)}
        topic, sentiment = self.session.run(None, feed)
        return torch.from_numpy(np.asarray(topic, dtype=np.float32)), torch.from_numpy(
            np.asarray(sentiment, dtype=np.float32))


def _int64(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.int64).numpy())
