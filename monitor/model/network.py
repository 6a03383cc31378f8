"""The network: one shared BERT encoder, mean pooling, a topic head and a sentiment head.

Both heads read the same pooled sentence vector, so every labelled example (topic-only,
sentiment-only or both) trains the shared encoder. Heads are a dropout + linear layer:
the encoder does the work, and a small head keeps forgetting cheap to control.

The forward pass can also run in two parts, ``lower(ids, mask, k)`` (the embeddings and the
lowest ``k`` blocks) then ``upper(hidden, mask, k)`` (the other blocks, pooling and heads): a
trainer that freezes the lowest ``k`` blocks computes ``lower`` once per example and only
``upper`` each epoch (``monitor.learn.trainer``). In eval mode the two parts give ``forward``'s
logits.

**Per-source offsets** (``source_offsets``): a source whose labellers follow another convention
than the training data's (headlines called positive that tweets would call neutral) gets its own
pair of logit offsets, added to the logits of its items only (:meth:`offsets`). Every other item,
and every item of an unknown source, gets the shared heads' answer. The learner fits an offset
when a new source brings labels (``monitor.learn.settings.TrainSettings.source_offset_lr``); the
checkpoint keeps them in ``meta.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModel, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask

from monitor.labels import DEFAULT_TOPICS, SENTIMENTS

__all__ = ["MultiTaskClassifier", "Offsets", "freeze", "frozen_modules", "mean_pool"]

#: A source's ``(topic, sentiment)`` logit offsets.
Offsets = tuple[Tensor, Tensor]


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average the token vectors where ``attention_mask`` is 1 (padding does not count).

    >>> import torch
    >>> h = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> mean_pool(h, torch.tensor([[1, 1, 0]])).tolist()
    [[2.0]]
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class MultiTaskClassifier(nn.Module):
    """Shared encoder + two linear heads; ``forward`` returns ``(topic_logits, sentiment_logits)``."""

    def __init__(
        self,
        encoder: PreTrainedModel,
        topics: Sequence[str] = DEFAULT_TOPICS,
        sentiments: Sequence[str] = SENTIMENTS,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        for name, labels in (("topics", topics), ("sentiments", sentiments)):
            if len(labels) < 2 or len(set(labels)) != len(labels):
                raise ValueError(f"{name} must hold at least two distinct labels, got {list(labels)}")
        self.encoder = encoder
        self.topics: tuple[str, ...] = tuple(topics)
        self.sentiments: tuple[str, ...] = tuple(sentiments)
        hidden = int(encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.topic_head = nn.Linear(hidden, len(self.topics))
        self.sentiment_head = nn.Linear(hidden, len(self.sentiments))
        self.source_offsets: dict[str, Offsets] = {}
        """Per-source ``(topic, sentiment)`` logit offsets (module docstring); none by default."""

    @classmethod
    def from_backbone(
        cls,
        path: Path | str,
        topics: Sequence[str] = DEFAULT_TOPICS,
        sentiments: Sequence[str] = SENTIMENTS,
        dropout: float = 0.1,
    ) -> MultiTaskClassifier:
        """Load a pretrained encoder from a local directory (offline) and add fresh heads."""
        encoder = AutoModel.from_pretrained(str(path), local_files_only=True)
        return cls(encoder, topics, sentiments, dropout)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return self._heads(hidden, attention_mask)

    def lower(self, input_ids: Tensor, attention_mask: Tensor, layers: int) -> Tensor:
        """The token vectors after the embeddings and the lowest ``layers`` blocks (``[batch, width, hidden]``)."""
        hidden = _embeddings(self.encoder)(input_ids=input_ids)
        return self._blocks(hidden, attention_mask, _encoder_layers(self.encoder)[:layers])

    def upper(self, hidden: Tensor, attention_mask: Tensor, layers: int) -> tuple[Tensor, Tensor]:
        """``forward`` from the output of :meth:`lower` with the same ``layers``: the other blocks, pooling, heads."""
        return self._heads(self._blocks(hidden, attention_mask, _encoder_layers(self.encoder)[layers:]), attention_mask)

    def offsets(self, sources: Sequence[str]) -> Offsets | None:
        """The ``(topic, sentiment)`` logit offsets of each of ``sources`` as two ``[rows, labels]`` tensors (zeros
        for a source without one); None when none of them has one.

        >>> m = MultiTaskClassifier.__new__(MultiTaskClassifier)
        >>> m.source_offsets = {"wire": (torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0, 2.0]))}
        >>> m.offsets(["tweets", "wire"])[1].tolist(), m.offsets(["tweets"])
        ([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]], None)
        """
        if not any(s in self.source_offsets for s in sources):
            return None
        some_topic, some_sentiment = next(iter(self.source_offsets.values()))
        none = (torch.zeros_like(some_topic), torch.zeros_like(some_sentiment))
        rows = [self.source_offsets.get(s, none) for s in sources]
        return torch.stack([t for t, _ in rows]), torch.stack([s for _, s in rows])

    def with_offsets(self, logits: Offsets, sources: Sequence[str]) -> Offsets:
        """``(topic, sentiment)`` logits plus the offsets of each row's source (:meth:`offsets`), on the logits'
        device; the same logits when none of the sources has offsets."""
        offsets = self.offsets(sources)
        if offsets is None:
            return logits
        return logits[0] + offsets[0].to(logits[0].device), logits[1] + offsets[1].to(logits[1].device)

    def _heads(self, hidden: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        pooled = self.dropout(mean_pool(hidden, attention_mask))
        return self.topic_head(pooled), self.sentiment_head(pooled)

    def _blocks(self, hidden: Tensor, attention_mask: Tensor, blocks: Sequence[nn.Module]) -> Tensor:
        if not blocks:
            return hidden
        mask = create_bidirectional_mask(config=self.encoder.config, inputs_embeds=hidden,
                                         attention_mask=attention_mask)
        for block in blocks:
            out = block(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden


def freeze(model: MultiTaskClassifier, embeddings: bool, layers: int) -> int:
    """Freeze the embeddings and/or the lowest ``layers`` encoder layers; returns the frozen count.

    Frozen parameters get ``requires_grad=False``: the trainer leaves them out of the optimizer
    and backward stops early, which is both a regulariser against forgetting and a CPU saving.
    """
    frozen = 0
    for module in frozen_modules(model, embeddings, layers):
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.requires_grad_(False)
                frozen += parameter.numel()
    return frozen


def frozen_modules(model: MultiTaskClassifier, embeddings: bool, layers: int) -> list[nn.Module]:
    """The modules :func:`freeze` freezes: the lowest ``layers`` blocks, and the embeddings if ``embeddings``."""
    blocks = _encoder_layers(model.encoder)
    if layers < 0 or layers > len(blocks):
        raise ValueError(f"freeze layers must be in 0..{len(blocks)}, got {layers}")
    return [*blocks[:layers], *([_embeddings(model.encoder)] if embeddings else [])]


def _embeddings(encoder: nn.Module) -> nn.Module:
    module = getattr(encoder, "embeddings", None)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{type(encoder).__name__} has no 'embeddings' module to freeze")
    return module


def _encoder_layers(encoder: nn.Module) -> Sequence[nn.Module]:
    """The transformer blocks, lowest first (BERT-style ``encoder.layer``)."""
    inner = getattr(encoder, "encoder", None)
    blocks = getattr(inner, "layer", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"{type(encoder).__name__} has no encoder.layer list; cannot freeze layers")
    return list(blocks)
