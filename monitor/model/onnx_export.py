"""Export a checkpoint to ONNX beside its safetensors weights, checked against torch.

Files added to a checkpoint directory (``monitor.model.checkpoint``)::

    model.onnx        the encoder + both heads, fp32, one self-contained protobuf file
    model.int8.onnx   optional: the same with int8 weights (dynamic quantization; ``monitor.model.onnx_int8``)
    onnx.json         OnnxRecord: sha256 of each file, the weights it came from, the check, accepted or not

An export is **accepted** only when, on a fixed probe set (:func:`probe_texts`, short to
truncated, in batches of one and in padded budget batches), ONNX Runtime gives the same label as
torch for every text and head and no logit differs by ``TOLERANCE`` (1e-4) or more. A rejected
export keeps its record (with the reason) so the next load logs it and serves with torch
without exporting again; a new weights file or another onnxruntime version exports again.

Files are written to a temporary name and renamed; ``onnx.json`` goes last, so a crash leaves
no record or the previous one. Loading (``monitor.model.onnx_backend``) reads the bytes once,
checks their sha256 against the record and hands the same bytes to ONNX Runtime: nothing is
unpickled and a changed file is refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import random
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from monitor.model.batching import Tokenizer
from monitor.model.checkpoint import WEIGHTS_FILE
from monitor.model.network import MultiTaskClassifier

__all__ = [
    "ONNX_FILE",
    "RECORD_FILE",
    "TOLERANCE",
    "ExportCheck",
    "OnnxRecord",
    "compare",
    "ensure_export",
    "export_onnx",
    "file_sha256",
    "probe_texts",
    "read_record",
    "write_atomic",
    "write_record",
]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
RECORD_FILE = "onnx.json"
TOLERANCE = 1e-4
OPSET = 17
RECORD_FORMAT = 1
INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("topic_logits", "sentiment_logits")

_PROBE_TEXT = (
    "Fed raises interest rates by 25 basis points as inflation stays high; Apple shares jump after record "
    "quarterly revenue beat; oil prices fall on weak China demand; $TSLA downgraded to sell by analysts; "
    "Bank of England holds rates, signals cuts later this year; Treasury yields climb to a 16-year high; "
    "company appoints new CEO after chief executive resigns; merger talks collapse, stock plunges 12% "
    "premarket; gold hits all-time high as dollar slides; jobs report shows unemployment rising to 4.1% "
    "https://t.co/QPN8Gwl7Uh; SEC probe into crypto exchange widens; dividend raised 8%, buyback announced"
)
_PROBE_WORDS = tuple(_PROBE_TEXT.split(" "))


def probe_texts(n: int = 48, seed: int = 0) -> list[str]:
    """``n`` deterministic finance-like texts of 1 to ~150 words (the longest are truncated).

    >>> texts = probe_texts(6)
    >>> len(texts), texts == probe_texts(6), len(texts[0].split())
    (6, True, 1)
    """
    rng = random.Random(seed)
    lengths = [1, 2, 3, 150, 90] + [rng.randint(4, 40) for _ in range(max(0, n - 5))]
    return [" ".join(rng.choice(_PROBE_WORDS) for _ in range(k)) for k in lengths[:n]]


@dataclass(frozen=True)
class ExportCheck:
    """ONNX against torch on the probe set."""

    texts: int
    max_abs_diff: float
    labels_identical: bool
    tolerance: float = TOLERANCE

    @property
    def passed(self) -> bool:
        return self.labels_identical and self.max_abs_diff < self.tolerance


@dataclass(frozen=True)
class OnnxRecord:
    """``onnx.json``: what was exported from which weights, and whether it may serve."""

    accepted: bool
    reason: str
    sha256: str = ""
    weights_sha256: str = ""
    onnxruntime: str = ""
    torch: str = ""
    opset: int = OPSET
    check: Mapping[str, Any] = field(default_factory=dict)
    int8: Mapping[str, Any] = field(default_factory=dict)
    """Empty, or ``{"file", "sha256", "probe_agreement"}`` once ``onnx_int8.quantize`` ran."""
    seconds: float = 0.0
    format: int = RECORD_FORMAT

    def stale(self, weights_sha256: str, onnxruntime_version: str) -> bool:
        """Whether this record no longer describes an export of these weights for this runtime."""
        return (self.weights_sha256, self.onnxruntime, self.format) != (
            weights_sha256, onnxruntime_version, RECORD_FORMAT)


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_record(directory: Path | str) -> OnnxRecord | None:
    """The directory's ``onnx.json``, or None when absent or unreadable (then it is exported again)."""
    path = Path(directory) / RECORD_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return OnnxRecord(**{k: v for k, v in body.items() if k in OnnxRecord.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        log.warning("ignoring unreadable %s (%s); exporting again", path, exc)
        return None


def write_record(directory: Path | str, record: OnnxRecord) -> None:
    write_atomic(Path(directory) / RECORD_FILE, (json.dumps(asdict(record), indent=2) + "\n").encode())


def compare(reference: tuple[torch.Tensor, torch.Tensor], other: tuple[torch.Tensor, torch.Tensor]) -> ExportCheck:
    """Max |logit difference| and whether every argmax agrees, over both heads.

    >>> a = (torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]))
    >>> compare(a, (a[0] + 1e-5, a[1])).passed, compare(a, (torch.tensor([[0.0, 1.0]]), a[1])).labels_identical
    (True, False)
    """
    diff = max(float((r - o).abs().max()) if r.numel() else 0.0 for r, o in zip(reference, other, strict=True))
    same = all(bool(torch.equal(r.argmax(-1), o.argmax(-1))) for r, o in zip(reference, other, strict=True))
    return ExportCheck(texts=int(reference[0].shape[0]), max_abs_diff=diff, labels_identical=same)


def export_onnx(
    model: MultiTaskClassifier, tokenizer: Tokenizer, directory: Path | str, max_length: int
) -> OnnxRecord:
    """Export ``model`` to ``directory/model.onnx``, check it on the probe set, write the record."""
    import onnxruntime

    from monitor.model.onnx_backend import OnnxBackend
    from monitor.model.predictor import Predictor

    directory = Path(directory)
    started = time.perf_counter()
    cpu_model = copy.deepcopy(model).to("cpu").eval()  # the reference, as torch serves it
    export_model = copy.deepcopy(cpu_model)
    # Eager attention exports the plain matmul-softmax graph that ONNX Runtime fuses; sdpa would do too.
    set_attn = getattr(export_model.encoder, "set_attn_implementation", None)
    if callable(set_attn):
        set_attn("eager")
    data = _export_bytes(export_model)
    del export_model
    write_atomic(directory / ONNX_FILE, data)
    sha = hashlib.sha256(data).hexdigest()
    torch_predictor = Predictor(cpu_model, tokenizer, "probe", device="cpu", max_length=max_length, batch_size=16,
                                max_tokens=256)
    onnx_predictor = Predictor(cpu_model, tokenizer, "probe", max_length=max_length, batch_size=16, max_tokens=256,
                               backend=OnnxBackend.from_file(directory / ONNX_FILE, sha, threads=1))
    check = probe_check(torch_predictor, onnx_predictor)
    accepted = check.passed
    reason = (
        f"accepted: labels identical on {check.texts} probe texts, max |logit diff| {check.max_abs_diff:.2e} "
        f"< {check.tolerance:g}"
        if accepted
        else f"rejected: labels identical={check.labels_identical}, max |logit diff| {check.max_abs_diff:.2e} "
        f"(tolerance {check.tolerance:g}) on {check.texts} probe texts"
    )
    record = OnnxRecord(
        accepted=accepted, reason=reason, sha256=sha, weights_sha256=file_sha256(directory / WEIGHTS_FILE),
        onnxruntime=onnxruntime.__version__, torch=torch.__version__, check=asdict(check),
        seconds=round(time.perf_counter() - started, 2),
    )
    write_record(directory, record)
    (log.info if accepted else log.warning)("ONNX export of %s %s (%.1f s)", directory, reason, record.seconds)
    return record


def probe_check(reference: Any, candidate: Any, texts: list[str] | None = None) -> ExportCheck:
    """``candidate`` against ``reference`` (two Predictors) on the probe set, alone and in budget batches."""
    texts = texts if texts is not None else probe_texts()
    batched = compare(reference.logits(texts), candidate.logits(texts))
    alone = [compare(reference.logits([t]), candidate.logits([t])) for t in texts[:8]]
    worst = max([batched, *alone], key=lambda c: c.max_abs_diff)
    return ExportCheck(texts=len(texts), max_abs_diff=worst.max_abs_diff,
                       labels_identical=batched.labels_identical and all(c.labels_identical for c in alone))


def ensure_export(
    directory: Path | str, model: MultiTaskClassifier, tokenizer: Tokenizer, max_length: int
) -> OnnxRecord:
    """The directory's current ONNX record, exporting first when there is none or it is stale.

    Never raises: a failed export (exporter error, read-only directory) comes back as a
    rejected record, not written, whose reason says what happened.
    """
    import onnxruntime

    directory = Path(directory)
    try:
        weights_sha = file_sha256(directory / WEIGHTS_FILE)
        record = read_record(directory)
        if record is not None and not record.stale(weights_sha, onnxruntime.__version__):
            return record
        return export_onnx(model, tokenizer, directory, max_length)
    except Exception as exc:  # the torch backend keeps serving; the reason is logged by the caller
        log.exception("ONNX export of %s failed", directory)
        return OnnxRecord(accepted=False, reason=f"export failed: {type(exc).__name__}: {exc}")


def _export_bytes(model: MultiTaskClassifier) -> bytes:
    """The ONNX protobuf of ``model`` with dynamic batch and sequence axes."""
    # The example batch has a padded row, so the attention-mask path is traced (an all-ones mask may be
    # optimised away by the encoder's mask code).
    vocab = int(model.encoder.config.vocab_size)
    input_ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]]) % vocab
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "topic_logits": {0: "batch"}, "sentiment_logits": {0: "batch"}}
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp:
        target = Path(tmp) / ONNX_FILE
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python code in the encoder
            torch.onnx.export(
                model, (input_ids, attention_mask), str(target), input_names=list(INPUTS),
                output_names=list(OUTPUTS), dynamic_axes=axes, opset_version=OPSET, dynamo=False,
            )
        extra = [p.name for p in Path(tmp).iterdir() if p.name != ONNX_FILE]
        if extra:
            raise RuntimeError(f"ONNX export wrote external data files {extra}; only single-file models are served")
        return target.read_bytes()


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
