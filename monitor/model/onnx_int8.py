"""int8 serving behind an accuracy guard: quantize the checked ONNX export, use it only if it keeps up.

``quantize`` writes ``model.int8.onnx`` (ONNX Runtime dynamic quantization: per-channel int8
weights of the weight matmuls, activations quantized per batch at run time) beside
``model.onnx`` and adds its sha256 and its label agreement with fp32 on the probe set to
``onnx.json``.

``guard`` decides whether the int8 model may serve. For **each head** and **each labelled set**
(the replay holdout and the recent labels of the learner, ``labelled_sets``), the accuracy of the
int8 model must be within ``max_accuracy_loss`` (default 0.005 = 0.5 pt) of the fp32 model's on
the same examples, and each of those sets must hold at least ``min_examples`` labels for the
head; otherwise fp32 serves. The decision is on the measured loss; the verdict also states the
number of examples and a one-sided 95 % upper bound on the loss from the paired disagreements
(b = fp32 right and int8 wrong, c = the reverse: loss = (b - c) / n, variance
((b + c) / n - loss²) / n), so the log says how sure it is.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from monitor.model.onnx_export import ONNX_FILE, OnnxRecord, file_sha256, probe_texts, write_atomic, write_record
from monitor.records import Example

__all__ = ["INT8_FILE", "HeadCheck", "Int8Verdict", "guard", "labelled_sets", "quantize"]

log = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
HEADS = ("topic", "sentiment")


@dataclass(frozen=True)
class HeadCheck:
    """fp32 against int8 on one head of one labelled set."""

    dataset: str
    head: str
    examples: int
    fp32_accuracy: float
    int8_accuracy: float
    agreement: float
    loss_upper95: float

    @property
    def loss(self) -> float:
        return self.fp32_accuracy - self.int8_accuracy


@dataclass(frozen=True)
class Int8Verdict:
    use: bool
    reason: str
    checks: tuple[HeadCheck, ...] = ()


def quantize(directory: Path | str, record: OnnxRecord, fp32: Any, int8_factory: Any) -> OnnxRecord:
    """Write ``model.int8.onnx`` from the accepted fp32 export; returns the record with its ``int8`` entry.

    ``fp32`` is the fp32 ONNX Predictor; ``int8_factory(path, sha256)`` builds the int8 one (for the
    probe agreement recorded in ``onnx.json``).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    directory = Path(directory)
    if not record.accepted:
        raise ValueError(f"no accepted fp32 export in {directory} to quantize: {record.reason}")
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        target = Path(tmp) / INT8_FILE
        # Per-channel int8 weights of the weight matmuls only (attention's activation x activation matmuls
        # stay fp32): on MiniLM this kept 97 % / 98 % of topic / sentiment labels against 91 % / 95 %
        # for per-tensor quantization of every MatMul, at the same speed.
        quantize_dynamic(str(directory / ONNX_FILE), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"], extra_options={"MatMulConstBOnly": True})
        data = target.read_bytes()
    write_atomic(directory / INT8_FILE, data)
    sha = file_sha256(directory / INT8_FILE)
    texts = probe_texts()
    int8 = int8_factory(directory / INT8_FILE, sha)
    a, b = fp32.predict(texts), int8.predict(texts)
    agree = sum(x.topic == y.topic and x.sentiment == y.sentiment for x, y in zip(a, b, strict=True)) / len(texts)
    updated = replace(record, int8={"file": INT8_FILE, "sha256": sha, "probe_agreement": round(agree, 4)})
    write_record(directory, updated)
    log.info("int8 model written to %s (agrees with fp32 on %.0f %% of %d probe texts)",
             directory / INT8_FILE, agree * 100, len(texts))
    return updated


def guard(
    fp32: Any, int8: Any, sets: Mapping[str, Sequence[Example]], max_accuracy_loss: float, min_examples: int
) -> Int8Verdict:
    """May ``int8`` (a Predictor) serve instead of ``fp32``? See the module docstring."""
    checks: list[HeadCheck] = []
    for name, examples in sets.items():
        texts, sources = [e.text for e in examples], [e.source for e in examples]  # as served: with their offsets
        a, b = (fp32.predict(texts, sources), int8.predict(texts, sources)) if texts else ([], [])
        for head in HEADS:
            rows = [(getattr(e, head), getattr(x, head), getattr(y, head))
                    for e, x, y in zip(examples, a, b, strict=True) if getattr(e, head) is not None]
            checks.append(_head_check(name, head, rows))
    if not checks:
        return Int8Verdict(False, "int8 not used: no labelled examples to check it on")
    short = [c for c in checks if c.examples < min_examples]
    if short:
        what = ", ".join(f"{c.dataset}/{c.head} {c.examples}" for c in short)
        return Int8Verdict(False, f"int8 not used: fewer than {min_examples} labelled examples ({what})", tuple(checks))
    worst = max(checks, key=lambda c: c.loss)
    summary = "; ".join(
        f"{c.dataset}/{c.head}: fp32 {c.fp32_accuracy:.4f} int8 {c.int8_accuracy:.4f} on {c.examples} "
        f"(agreement {c.agreement:.3f}, loss <= {c.loss_upper95 * 100:.2f} pt at 95 %)" for c in checks)
    if worst.loss > max_accuracy_loss:
        return Int8Verdict(False, f"int8 not used: {worst.dataset}/{worst.head} loses {worst.loss * 100:.2f} pt "
                                  f"> {max_accuracy_loss * 100:.2f} pt; {summary}", tuple(checks))
    return Int8Verdict(True, f"int8 used: every head within {max_accuracy_loss * 100:.2f} pt; {summary}",
                       tuple(checks))


def labelled_sets(state_dir: Path | str, limit: int = 1000) -> dict[str, list[Example]]:
    """The learner's replay holdout and recent labels (``buffer.jsonl``, ``window.jsonl``), newest ``limit`` each.

    Missing files give empty sets (then the guard keeps fp32). Read as plain JSON lines.
    """
    state_dir = Path(state_dir)
    holdout = [e for pool, e in _rows(state_dir / "buffer.jsonl") if pool == "holdout"]
    recent = [e for _, e in _rows(state_dir / "window.jsonl")]
    return {"holdout": holdout[-limit:], "recent": recent[-limit:]}


def verdict_json(verdict: Int8Verdict) -> str:
    return json.dumps({"use": verdict.use, "reason": verdict.reason, "checks": [asdict(c) for c in verdict.checks]})


def _rows(path: Path) -> list[tuple[str, Example]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines[1:]:  # the first line is the file's header
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("text") and (row.get("topic") or row.get("sentiment")):
            out.append((row.get("pool", ""), Example(row["text"], row.get("topic"), row.get("sentiment"))))
    return out


def _head_check(dataset: str, head: str, rows: Sequence[tuple[str, str, str]]) -> HeadCheck:
    n = len(rows)
    if n == 0:
        return HeadCheck(dataset, head, 0, 0.0, 0.0, 0.0, 0.0)
    right32 = [t == x for t, x, _ in rows]
    right8 = [t == y for t, _, y in rows]
    b = sum(r and not q for r, q in zip(right32, right8, strict=True))
    c = sum(q and not r for r, q in zip(right32, right8, strict=True))
    loss = (b - c) / n
    variance = max(0.0, ((b + c) / n - loss * loss) / n)
    return HeadCheck(
        dataset=dataset, head=head, examples=n, fp32_accuracy=sum(right32) / n, int8_accuracy=sum(right8) / n,
        agreement=sum(x == y for _, x, y in rows) / n, loss_upper95=loss + 1.645 * math.sqrt(variance),
    )
