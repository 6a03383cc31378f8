"""Which backend serves a checkpoint, with how many threads and how large batches.

``model.backend``:

- ``torch``: the ``MultiTaskClassifier`` (fp16 autocast on CUDA when ``model.fp16``).
- ``onnx``: the ONNX Runtime export on CPU (exported and checked first when missing or stale).
- ``auto`` (default): ONNX on CPU when its export is accepted, else torch; torch on CUDA.

Whenever ONNX cannot serve (export rejected or failed, checksum mismatch, CUDA device) the
reason is logged and torch serves: torch is the training path and always the fallback. With
``model.int8`` the int8 model serves only when ``onnx_int8.guard`` accepts it.

Batches: ``model.max_batch_tokens: auto`` picks the padded-token budget measured best for the
backend (:data:`TOKEN_BUDGETS`), ``model.inference_batch_size`` bounds the texts per batch (on
CUDA at least :data:`CUDA_MIN_BATCH`). ``model.threads: auto`` runs ``monitor.model.threads``'s
probe once per backend kind and process, so hot swaps reuse the count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monitor.config import ModelConfig
from monitor.model.batching import collate, encode
from monitor.model.checkpoint import LoadedModel
from monitor.model.onnx_export import ONNX_FILE, ensure_export, probe_texts
from monitor.model.predictor import Backend, Predictor, TorchBackend
from monitor.model.threads import probe_threads

__all__ = ["BACKENDS", "CUDA_MIN_BATCH", "TOKEN_BUDGETS", "ServingChoice", "build_predictor"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
#: Padded tokens per inference batch by backend (bench/throughput.py, 1 thread, tweets of ~26 tokens).
TOKEN_BUDGETS = {"torch": 256, "onnx": 256, "onnx-int8": 256, "torch-fp16": 16384}
CUDA_MIN_BATCH = 256
_PROBED: dict[str, int] = {}


@dataclass(frozen=True)
class ServingChoice:
    """What ``build_predictor`` chose and why (logged at load, exported as ``monitor_inference_backend``)."""

    backend: str
    threads: int
    max_tokens: int
    batch_size: int
    reason: str


def build_predictor(directory: Path, loaded: LoadedModel, config: ModelConfig, device: torch.device,
                    max_length: int) -> tuple[Predictor, ServingChoice]:
    """A ready Predictor for ``loaded`` per the model settings ``config`` (see the module docstring)."""
    from monitor.model.onnx_backend import OnnxError

    name, reason = _choose(directory, loaded, config, device, max_length)
    threads = _threads(config, name, device, directory, loaded, max_length)
    backend: Backend | None = None
    if name.startswith("onnx"):
        try:
            backend = _open_onnx(directory, name, threads)
        except (OnnxError, OSError) as exc:
            log.error("ONNX model of %s refused, torch serves: %s", directory, exc)
            name, reason = "torch", f"ONNX refused ({exc}); torch serves"
    if name == "torch" and device.type == "cpu" and threads > 0:
        torch.set_num_threads(threads)
    budget = config.max_batch_tokens
    max_tokens = TOKEN_BUDGETS[name] if budget == "auto" else int(budget)
    batch_size = int(config.inference_batch_size)
    if device.type == "cuda":
        batch_size = max(batch_size, CUDA_MIN_BATCH)
    predictor = Predictor(loaded.model, loaded.tokenizer, loaded.meta.version, device=device, max_length=max_length,
                          batch_size=batch_size, max_tokens=max_tokens, backend=backend, fp16=name == "torch-fp16")
    choice = ServingChoice(name, threads, max_tokens, batch_size, reason)
    log.info("serving %s with %s: %s threads, batches of <= %d texts and <= %d padded tokens (%s)",
             loaded.meta.version, name, threads or "default", batch_size, max_tokens, reason)
    return predictor, choice


def _choose(directory: Path, loaded: LoadedModel, config: ModelConfig, device: torch.device,
            max_length: int) -> tuple[str, str]:
    """The backend name (torch, torch-fp16, onnx, onnx-int8) and why."""
    wanted = config.backend
    if wanted not in BACKENDS:
        raise ValueError(f"model.backend must be one of {', '.join(BACKENDS)}, got {wanted!r}")
    if device.type == "cuda":
        if wanted == "onnx":
            log.warning("model.backend onnx: ONNX serves on CPU only in this build; torch serves on %s", device)
        fp16 = bool(config.fp16)
        return ("torch-fp16" if fp16 else "torch"), f"CUDA device{' (fp16)' if fp16 else ''}"
    if wanted == "torch":
        return "torch", "model.backend torch"
    record = ensure_export(directory, loaded.model, loaded.tokenizer, max_length)
    if not record.accepted:
        log.warning("ONNX export of %s not used, torch serves: %s", directory, record.reason)
        return "torch", f"ONNX {record.reason}; torch serves"
    if not config.int8:
        return "onnx", "ONNX export accepted"
    return _int8_or_fp32(directory, loaded, config, max_length)


def _int8_or_fp32(directory: Path, loaded: LoadedModel, config: ModelConfig, max_length: int) -> tuple[str, str]:
    from monitor.model.onnx_backend import OnnxBackend
    from monitor.model.onnx_export import read_record
    from monitor.model.onnx_int8 import guard, labelled_sets, quantize

    def predictor(backend: Backend) -> Predictor:
        return Predictor(loaded.model, loaded.tokenizer, "guard", max_length=max_length, batch_size=32,
                         max_tokens=TOKEN_BUDGETS["onnx"], backend=backend)

    try:
        record = read_record(directory)
        if record is not None and not record.int8:
            quantize(directory, record, predictor(_open_onnx(directory, "onnx", 0)),
                     lambda path, sha: predictor(OnnxBackend.from_file(path, sha, name="onnx-int8")))
        fp32, int8 = predictor(_open_onnx(directory, "onnx", 0)), predictor(_open_onnx(directory, "onnx-int8", 0))
    except Exception as exc:  # fp32 keeps serving
        log.exception("int8 model of %s unavailable; fp32 ONNX serves", directory)
        return "onnx", f"int8 unavailable ({type(exc).__name__}: {exc}); fp32 ONNX serves"
    labels_dir = config.int8_labels_dir or _default_labels_dir(directory)
    verdict = guard(fp32, int8, labelled_sets(labels_dir), float(config.max_accuracy_loss),
                    int(config.int8_min_examples))
    (log.info if verdict.use else log.warning)("%s: %s", directory, verdict.reason)
    return ("onnx-int8" if verdict.use else "onnx"), verdict.reason


def _default_labels_dir(directory: Path) -> Path:
    """``<registry>/learner`` for a registry version (``<registry>/versions/<v>``), else ``<dir>/learner``."""
    return directory.parent.parent / "learner" if directory.parent.name == "versions" else directory / "learner"


def _open_onnx(directory: Path, name: str, threads: int) -> Backend:
    from monitor.model.onnx_backend import OnnxBackend
    from monitor.model.onnx_export import read_record
    from monitor.model.onnx_int8 import INT8_FILE

    record = read_record(directory)
    if record is None:
        raise FileNotFoundError(f"no ONNX export record in {directory}")
    if name == "onnx-int8":
        return OnnxBackend.from_file(directory / INT8_FILE, record.int8["sha256"], threads, name)
    return OnnxBackend.from_file(directory / ONNX_FILE, record.sha256, threads, name)


def _threads(config: ModelConfig, name: str, device: torch.device, directory: Path, loaded: LoadedModel,
             max_length: int) -> int:
    """The configured count; for ``auto`` the probed one (cached per backend kind); 0 = library default."""
    wanted = config.threads
    if wanted != "auto":
        return int(wanted)
    if device.type != "cpu":
        return 0  # the GPU does the work; torch's default serves the host side
    if name not in _PROBED:
        ids = encode(loaded.tokenizer, probe_texts(16, seed=1), max_length)
        batch = collate(ids, list(range(len(ids))), loaded.tokenizer.pad_token_id or 0)
        if name == "torch":
            model_backend = TorchBackend(loaded.model, torch.device("cpu"))

            def run_with(n: int) -> Any:
                torch.set_num_threads(n)
                return lambda: model_backend(batch.input_ids, batch.attention_mask)
        else:
            def run_with(n: int) -> Any:
                session = _open_onnx(directory, name, n)
                return lambda: session(batch.input_ids, batch.attention_mask)

        _PROBED[name] = probe_threads(run_with).threads
    return _PROBED[name]
