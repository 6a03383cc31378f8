"""Batched inference: texts in, per-head labels and probabilities out, in input order.

Texts are tokenized once, sorted by length and cut into batches bounded by a budget of padded
tokens and a maximum count (``monitor.model.batching.budget_batches``), run by a *backend* and
put back in input order. Two backends compute the logits of a padded batch:

- :class:`TorchBackend`: the ``MultiTaskClassifier`` itself under ``torch.inference_mode``; on
  CUDA optionally in fp16 (``torch.autocast``). The training path and the fallback.
- ``OnnxBackend`` (``monitor.model.onnx_backend``): an ONNX Runtime session on CPU, exported
  from the same weights and checked against torch (``monitor.model.onnx_export``).

**Confidence** is the *minimum* over the two heads of the top class probability: a
prediction is only as trustworthy as its less certain head, and the monitor uses confidence to
decide which items to ask labels for, where under-confidence is the safe error.

**Threads**: a ``Predictor`` holds a private copy of the tokenizer (fast tokenizers mutate
their truncation state on each call and fail if shared across threads) and a lock around
``predict``, so one thread can serve predictions while another trains a *different* copy of
the model with the original tokenizer.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from monitor.model.batching import Tokenizer, budget_batches, collate, encode_counting
from monitor.model.network import MultiTaskClassifier

__all__ = ["Backend", "PredictStats", "Predictor", "Scored", "TorchBackend", "resolve_device"]


@dataclass(frozen=True)
class Scored:
    """The model's answer for one text."""

    topic: str
    topic_probs: dict[str, float]
    sentiment: str
    sentiment_probs: dict[str, float]
    confidence: float


@dataclass(frozen=True)
class PredictStats:
    """What the last ``predict`` call cost: for padding-waste and throughput metrics."""

    texts: int = 0
    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0
    batch_seconds: tuple[float, ...] = ()
    truncated: int = 0
    """Texts longer than ``max_length`` tokens, cut to it."""

    @property
    def padding_share(self) -> float:
        """Share of the computed token slots that were padding (0 when nothing ran)."""
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


class Backend(Protocol):
    """Computes ``(topic, sentiment)`` logits of one padded batch, as float32 CPU tensors."""

    name: str
    """``torch``, ``torch-fp16``, ``onnx`` or ``onnx-int8``: for logs and the backend metric."""

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TorchBackend:
    """The torch model on its device; ``fp16`` runs CUDA batches under fp16 autocast."""

    def __init__(self, model: MultiTaskClassifier, device: torch.device, fp16: bool = False) -> None:
        self.model = model
        self.device = device
        self.fp16 = fp16 and device.type == "cuda"
        self.name = "torch-fp16" if self.fp16 else "torch"

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            topic, sentiment = self.model(input_ids.to(self.device), attention_mask.to(self.device))
        return topic.float().cpu(), sentiment.float().cpu()


class Predictor:
    """Run a :class:`MultiTaskClassifier` (or a backend built from it) over texts in budgeted batches.

    The model is moved to ``device`` and put in eval mode; it must not be trained while a
    predictor uses it (train a copy instead). ``batch_size`` bounds the texts per batch and
    ``max_tokens`` (optional) the padded token slots per batch; ``backend`` replaces the torch
    forward pass (``model`` still names the label sets).
    """

    def __init__(
        self,
        model: MultiTaskClassifier,
        tokenizer: Tokenizer,
        version: str,
        device: str | torch.device | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        *,
        max_tokens: int | None = None,
        backend: Backend | None = None,
        fp16: bool = False,
    ) -> None:
        if max_length < 2 or batch_size < 1 or (max_tokens is not None and max_tokens < 1):
            raise ValueError(
                f"need max_length >= 2, batch_size >= 1 and max_tokens >= 1, got {max_length}, {batch_size}, "
                f"{max_tokens}"
            )
        self.device = resolve_device(device) if backend is None else torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.backend: Backend = backend or TorchBackend(self.model, self.device, fp16=fp16)
        self.tokenizer = copy.deepcopy(tokenizer)
        self.version = version
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_tokens = max_tokens if max_tokens is not None else batch_size * max_length
        self._lock = threading.Lock()
        self._last_stats = PredictStats()

    @property
    def last_stats(self) -> PredictStats:
        return self._last_stats

    def describe(self) -> dict[str, str]:
        """Backend, intra-op threads (0 = library default) and batch bounds: the backend info metric."""
        threads = getattr(self.backend, "threads", None)
        if threads is None:
            threads = torch.get_num_threads() if self.device.type == "cpu" else 0
        return {"backend": self.backend.name, "threads": str(threads), "max_tokens": str(self.max_tokens),
                "batch_size": str(self.batch_size), "max_length": str(self.max_length)}

    def logits(self, texts: Sequence[str], sources: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(topic, sentiment)`` logits on CPU, one row per text in input order; with ``sources`` (one per text),
        plus each source's offsets (``MultiTaskClassifier.offsets``)."""
        if sources is not None and len(sources) != len(texts):
            raise ValueError(f"{len(sources)} sources for {len(texts)} texts")
        with self._lock:
            logits = self._logits(texts)
        if sources is None:
            return logits
        with torch.no_grad():  # the offsets may be a model's in training (its validation)
            return self.model.with_offsets(logits, sources)

    def predict(self, texts: Sequence[str], sources: Sequence[str] | None = None) -> list[Scored]:
        """Labels, probabilities and confidence for each text, in input order (``sources``: see :meth:`logits`)."""
        topic_logits, sentiment_logits = self.logits(texts, sources)
        topic_probs = topic_logits.softmax(dim=-1)
        sentiment_probs = sentiment_logits.softmax(dim=-1)
        topics, sentiments = self.model.topics, self.model.sentiments
        scored = []
        for tp, sp in zip(topic_probs.tolist(), sentiment_probs.tolist(), strict=True):
            t, s = max(range(len(tp)), key=tp.__getitem__), max(range(len(sp)), key=sp.__getitem__)
            scored.append(
                Scored(
                    topic=topics[t],
                    topic_probs=dict(zip(topics, tp, strict=True)),
                    sentiment=sentiments[s],
                    sentiment_probs=dict(zip(sentiments, sp, strict=True)),
                    confidence=min(tp[t], sp[s]),
                )
            )
        return scored

    def _logits(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        started = time.perf_counter()
        n_topics, n_sentiments = len(self.model.topics), len(self.model.sentiments)
        topic_out = torch.empty((len(texts), n_topics))
        sentiment_out = torch.empty((len(texts), n_sentiments))
        ids, truncated = encode_counting(self.tokenizer, texts, self.max_length)
        pad_id = self.tokenizer.pad_token_id or 0
        tokens = padded = 0
        batch_seconds = []
        for indices in budget_batches([len(row) for row in ids], self.max_tokens, self.batch_size):
            batch_started = time.perf_counter()
            batch = collate(ids, indices, pad_id)
            topic_logits, sentiment_logits = self.backend(batch.input_ids, batch.attention_mask)
            rows = torch.tensor(indices)
            topic_out[rows] = topic_logits
            sentiment_out[rows] = sentiment_logits
            tokens += batch.tokens
            padded += batch.padded_tokens
            batch_seconds.append(time.perf_counter() - batch_started)
        self._last_stats = PredictStats(
            texts=len(texts),
            batches=len(batch_seconds),
            tokens=tokens,
            padded_tokens=padded,
            seconds=time.perf_counter() - started,
            batch_seconds=tuple(batch_seconds),
            truncated=truncated,
        )
        return topic_out, sentiment_out
