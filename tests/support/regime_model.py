"""A tiny model trained on regime A of the scripted stream, in a registry, and the stream as Kafka messages.

Shared by the daemon-level learning tests (all-in-one and scaled-out roles).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from regimes import TOPICS, stream
from transformers import AutoTokenizer

from monitor.learn import TrainConfig, fit
from monitor.model.backbone import tiny_backbone
from monitor.model.checkpoint import CheckpointMeta, save_checkpoint
from monitor.model.network import MultiTaskClassifier
from monitor.records import Example
from monitor.registry import ModelRegistry


def rows(regime: str, n: int, seed: int) -> list[dict[str, str]]:
    """Input messages with their labels: topic from the subject, sentiment from the regime's keywords."""
    return [{"id": f"{regime}{seed}-{i:04d}", "text": e.text, "topic": e.topic or "", "sentiment": e.sentiment or ""}
            for i, e in enumerate(stream(regime, n, seed))]


def item(row: dict[str, str], published_at: str = "2026-03-02T09:00:00Z") -> dict[str, Any]:
    return {"id": row["id"], "text": row["text"], "source": "wire", "published_at": published_at}


def label(row: dict[str, str]) -> dict[str, str]:
    return {"id": row["id"], "topic": row["topic"], "sentiment": row["sentiment"], "source": "desk"}


def regime_a_registry(root: Path) -> Path:
    """A registry under ``root`` serving ``v-a``, a tiny BERT trained on regime A."""
    backbone = tiny_backbone(root / "backbone")
    tokenizer = AutoTokenizer.from_pretrained(str(backbone))
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(backbone, TOPICS)
    train = [Example(r["text"], topic=r["topic"], sentiment=r["sentiment"]) for r in rows("A", 700, 1)]
    fit(model, tokenizer, train[:600], train[600:], TrainConfig(epochs=8, batch_size=16, lr_encoder=3e-3,
                                                                lr_head=1e-2, max_length=16, device="cpu",
                                                                freeze_embeddings=False),
        progress=False)
    registry = ModelRegistry(root / "registry").init()
    meta = CheckpointMeta(version="v-a", parent=None, backbone=str(backbone), topics=TOPICS,
                          sentiments=model.sentiments, data_fingerprint="regime-a", max_length=16)
    save_checkpoint(model, tokenizer, meta, registry.path("v-a"))
    registry.set_current("v-a", reason="trained on regime A")
    return registry.root
