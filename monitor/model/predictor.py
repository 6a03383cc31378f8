"""Batched inference: texts in, per-head labels and probabilities out, in input order.

Texts are tokenized once, sorted by length into micro-batches and padded per batch (see
``monitor.model.batching``), run under ``torch.inference_mode`` and put back in input order.

**Confidence** is the *minimum* over the two heads of the top class probability: a
prediction is only as trustworthy as its less certain head, and the monitor uses confidence to
decide which items to ask labels for, where under-confidence is the safe error.

**Threads**: a ``Predictor`` holds a private copy of the tokenizer (fast tokenizers mutate
their truncation state on each call and fail if shared across threads) and a lock around
``predict``, so one thread can serve predictions while another trains a *different* copy of
the model with the original tokenizer.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from monitor.model.batching import Tokenizer, collate, encode, sorted_batches
from monitor.model.network import MultiTaskClassifier

__all__ = ["PredictStats", "Predictor", "Scored", "resolve_device"]


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


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """Run a :class:`MultiTaskClassifier` over texts in length-sorted micro-batches.

    The model is moved to ``device`` and put in eval mode; it must not be trained while a
    predictor uses it (train a copy instead).
    """

    def __init__(
        self,
        model: MultiTaskClassifier,
        tokenizer: Tokenizer,
        version: str,
        device: str | torch.device | None = None,
        max_length: int = 128,
        batch_size: int = 32,
    ) -> None:
        if max_length < 2 or batch_size < 1:
            raise ValueError(f"need max_length >= 2 and batch_size >= 1, got {max_length}, {batch_size}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = copy.deepcopy(tokenizer)
        self.version = version
        self.max_length = max_length
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._last_stats = PredictStats()

    @property
    def last_stats(self) -> PredictStats:
        return self._last_stats

    def logits(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw ``(topic, sentiment)`` logits on CPU, one row per text in input order."""
        with self._lock:
            return self._logits(texts)

    def predict(self, texts: Sequence[str]) -> list[Scored]:
        """Labels, probabilities and confidence for each text, in input order."""
        topic_logits, sentiment_logits = self.logits(texts)
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
        ids = encode(self.tokenizer, texts, self.max_length)
        pad_id = self.tokenizer.pad_token_id or 0
        tokens = padded = 0
        batch_seconds = []
        with torch.inference_mode():
            for indices in sorted_batches([len(row) for row in ids], self.batch_size):
                batch_started = time.perf_counter()
                batch = collate(ids, indices, pad_id).to(self.device)
                topic_logits, sentiment_logits = self.model(batch.input_ids, batch.attention_mask)
                rows = torch.tensor(indices)
                topic_out[rows] = topic_logits.float().cpu()
                sentiment_out[rows] = sentiment_logits.float().cpu()
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
        )
        return topic_out, sentiment_out
