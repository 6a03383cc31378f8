"""Tokenize once, then group texts of similar length and pad each group only to its own longest.

Padding is wasted compute (a 20-token tweet padded to 64 costs three times as much), so both
the predictor and the trainer build batches from length-sorted token lists. The predictor
sorts everything it is given (order is restored afterwards) and cuts batches by a budget of
padded tokens (:func:`budget_batches`): short texts travel in large batches, long ones in small
ones, and no batch costs more than the budget. The trainer sorts within shuffled buckets so
batches still vary from epoch to epoch.

Before tokenizing, every URL is replaced by the word ``url`` (:func:`normalize`): news tweets end
in ``https://t.co/<hash>`` links that carry no signal but cost 15-20 WordPiece tokens each (the
Twitter topic set averages 44 tokens with links, 28 without). Training and inference both go
through :func:`encode`, so the model never sees the difference.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = [
    "Batch",
    "Tokenizer",
    "bucketed_batches",
    "budget_batches",
    "collate",
    "encode",
    "encode_counting",
    "normalize",
    "sorted_batches",
]

_URL = re.compile(r"https?://\S+|www\.\S+")


class Tokenizer(Protocol):
    """What the model code needs from a Hugging Face tokenizer."""

    pad_token_id: int | None

    def __call__(self, text: list[str], **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Batch:
    """A padded batch; ``indices`` are the positions of its rows in the encoded input list."""

    indices: list[int]
    input_ids: Tensor
    attention_mask: Tensor

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens in the batch."""
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        """Token slots computed, padding included (rows x width)."""
        return int(self.input_ids.numel())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.indices, self.input_ids.to(device), self.attention_mask.to(device))


def normalize(text: str) -> str:
    """Replace URLs by the word ``url``.

    >>> normalize("Fed hikes https://t.co/QPN8Gwl7Uh and www.x.com/a")
    'Fed hikes url and url'
    """
    return _URL.sub("url", text)


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per :func:`normalize`-d text with special tokens, truncated to ``max_length``."""
    if not texts:
        return []
    encoded = tokenizer([normalize(t) for t in texts], truncation=True, max_length=max_length, add_special_tokens=True)
    return [list(ids) for ids in encoded["input_ids"]]


def encode_counting(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
    """:func:`encode`, plus how many texts were longer than ``max_length`` tokens (cut).

    Tokenizes to ``max_length + 1``: a row of that length was cut, and only those rows are
    encoded again at ``max_length`` (the tokenizer's own truncation, so the ids equal ``encode``'s).
    """
    ids = encode(tokenizer, texts, max_length + 1)
    cut = [i for i, row in enumerate(ids) if len(row) > max_length]
    if cut:
        for i, row in zip(cut, encode(tokenizer, [texts[i] for i in cut], max_length), strict=True):
            ids[i] = row
    return ids, len(cut)


def collate(ids: Sequence[Sequence[int]], indices: Sequence[int], pad_id: int) -> Batch:
    """Right-pad the rows ``indices`` of ``ids`` to the longest of them.

    >>> b = collate([[5, 6, 7], [8]], [0, 1], pad_id=0)
    >>> b.input_ids.tolist(), b.attention_mask.tolist(), b.tokens, b.padded_tokens
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]], 4, 6)
    """
    width = max(len(ids[i]) for i in indices)
    input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        input_ids[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
        attention_mask[row, : len(ids[i])] = 1
    return Batch(list(indices), input_ids, attention_mask)


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (stable), cut into batches: minimal padding, for inference.

    >>> sorted_batches([5, 1, 3, 2], batch_size=2)
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def budget_batches(lengths: Sequence[int], max_tokens: int, max_count: int) -> list[list[int]]:
    """Indices sorted by length (stable), cut so each batch's padded size fits a token budget.

    A batch holds at most ``max_count`` rows and, padded to its longest row, at most
    ``max_tokens`` token slots; a single row longer than the budget forms a batch of its own.
    Every index appears exactly once; the caller restores input order through the indices.

    >>> budget_batches([5, 1, 3, 2, 9], max_tokens=6, max_count=8)
    [[1, 3], [2], [0], [4]]
    >>> budget_batches([2, 2, 2], max_tokens=100, max_count=2)
    [[0, 1], [2]]
    """
    if max_tokens < 1 or max_count < 1:
        raise ValueError(f"need max_tokens >= 1 and max_count >= 1, got {max_tokens}, {max_count}")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending lengths: the row being added is the batch's longest
        if current and (len(current) >= max_count or (len(current) + 1) * lengths[i] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, bucket_batches: int = 50
) -> list[list[int]]:
    """Shuffled batches of similar-length examples, for training.

    Shuffle all indices, sort each bucket of ``bucket_batches * batch_size`` by length, cut it into
    batches, then shuffle the batch order. Every index appears exactly once; the result depends
    only on ``rng``'s state, so a seeded ``rng`` makes epochs reproducible.

    >>> batches = bucketed_batches([3, 1, 2, 5, 4], 2, random.Random(0))
    >>> sorted(i for b in batches for i in b)
    [0, 1, 2, 3, 4]
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    bucket = max(1, bucket_batches) * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lengths.__getitem__)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
