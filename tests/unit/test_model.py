"""The network, the tiny backbone and the batched predictor."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from monitor.labels import DEFAULT_TOPICS, SENTIMENTS
from monitor.model import MultiTaskClassifier, Predictor, freeze

TEXTS = [
    "Fed raises interest rates",
    "Apple shares jump after strong earnings beat and record revenue growth this quarter",
    "oil",
    "Bank of China cuts guidance",
    "Tesla stock falls 5 percent",
    "gold",
    "The company appointed a new chief executive officer",
]


def _model(tiny_backbone: Path, seed: int = 0) -> MultiTaskClassifier:
    torch.manual_seed(seed)
    return MultiTaskClassifier.from_backbone(tiny_backbone).eval()


def test_tokenizer_knows_finance_words(tiny_backbone: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    ids = tokenizer("Fed raises rates")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


def test_forward_shapes_and_padding_invariance(tiny_backbone: Path) -> None:
    model = _model(tiny_backbone)
    assert model.topics == DEFAULT_TOPICS and model.sentiments == SENTIMENTS
    ids = torch.tensor([[2, 10, 11, 3]])
    topic, sentiment = model(ids, torch.ones_like(ids))
    assert topic.shape == (1, 20) and sentiment.shape == (1, 3)
    # Padding must not change the result: mean pooling ignores masked positions.
    padded = torch.tensor([[2, 10, 11, 3, 0, 0]])
    topic_p, sentiment_p = model(padded, torch.tensor([[1, 1, 1, 1, 0, 0]]))
    torch.testing.assert_close(topic_p, topic, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sentiment_p, sentiment, atol=1e-5, rtol=1e-5)


def test_rejects_degenerate_label_sets(tiny_backbone: Path) -> None:
    encoder = _model(tiny_backbone).encoder
    with pytest.raises(ValueError, match="distinct"):
        MultiTaskClassifier(encoder, ["a", "a"], SENTIMENTS)


def test_freeze_embeddings_and_lowest_layers(tiny_backbone: Path) -> None:
    model = _model(tiny_backbone)
    frozen = freeze(model, embeddings=True, layers=1)
    bert: Any = model.encoder
    assert frozen == sum(p.numel() for m in (bert.embeddings, bert.encoder.layer[0]) for p in m.parameters())
    assert not any(p.requires_grad for p in bert.embeddings.parameters())
    assert not any(p.requires_grad for p in bert.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in bert.encoder.layer[1].parameters())
    assert all(p.requires_grad for p in model.topic_head.parameters())
    with pytest.raises(ValueError, match=r"0\.\.2"):
        freeze(model, embeddings=False, layers=3)


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_lower_then_upper_is_the_forward_pass(tiny_backbone: Path, layers: int) -> None:
    model = _model(tiny_backbone)
    ids = torch.tensor([[2, 10, 11, 3, 0, 0], [2, 12, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        whole = model(ids, mask)
        hidden = model.lower(ids, mask, layers)
        parts = model.upper(hidden, mask, layers)
        # A row's token vectors do not depend on the padding of the batch they were computed in.
        alone = model.lower(ids[1:, :3], mask[1:, :3], layers)
    assert hidden.shape == (2, 6, 32)
    for a, b in zip(parts, whole, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[0], hidden[1, :3], atol=1e-5, rtol=1e-5)


def test_predictor_preserves_order_and_matches_unbatched(tiny_backbone: Path) -> None:
    model = _model(tiny_backbone)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    predictor = Predictor(model, tokenizer, "v-test", device="cpu", batch_size=3)
    batched = predictor.predict(TEXTS)
    stats = predictor.last_stats
    assert stats.texts == len(TEXTS) and stats.batches == 3 and len(stats.batch_seconds) == 3
    assert 0 < stats.tokens <= stats.padded_tokens
    for text, got in zip(TEXTS, batched, strict=True):
        alone = predictor.predict([text])[0]
        assert alone.topic == got.topic and alone.sentiment == got.sentiment
        for label, p in alone.sentiment_probs.items():
            assert got.sentiment_probs[label] == pytest.approx(p, abs=1e-5)
        assert got.confidence == pytest.approx(min(max(got.topic_probs.values()), max(got.sentiment_probs.values())))
        assert sum(got.topic_probs.values()) == pytest.approx(1.0, abs=1e-5)
    # Unsorted input with distinct lengths: rows must come back in input order, not length order.
    assert predictor.predict(TEXTS[::-1]) == batched[::-1]


def test_urls_are_replaced_before_tokenizing(tiny_backbone: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    predictor = Predictor(_model(tiny_backbone), tokenizer, "v", device="cpu")
    with_link = predictor.logits(["oil prices fall https://t.co/QPN8Gwl7Uh"])
    stats = predictor.last_stats
    plain = predictor.logits(["oil prices fall url"])
    assert torch.equal(with_link[0], plain[0]) and torch.equal(with_link[1], plain[1])
    assert stats.tokens == predictor.last_stats.tokens == 6  # [CLS] oil prices fall url [SEP]


def test_predictor_truncates_and_handles_empty(tiny_backbone: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    predictor = Predictor(_model(tiny_backbone), tokenizer, "v", device="cpu", max_length=4)
    predictor.predict(["stock market rises on strong earnings and jobs data"])
    assert predictor.last_stats.padded_tokens == 4
    assert predictor.predict([]) == []


def test_predictor_is_usable_while_another_thread_trains_a_copy(tiny_backbone: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    predictor = Predictor(_model(tiny_backbone), tokenizer, "v", device="cpu")
    expected = predictor.predict(TEXTS)
    trainee = _model(tiny_backbone, seed=1).train()
    optimizer = torch.optim.SGD(trainee.parameters(), lr=0.1)
    errors: list[BaseException] = []

    def train() -> None:
        try:
            for _ in range(20):
                batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
                topic, sentiment = trainee(batch["input_ids"], batch["attention_mask"])
                (topic.sum() + sentiment.sum()).backward()
                optimizer.step()
                optimizer.zero_grad()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    worker = threading.Thread(target=train)
    worker.start()
    results = [predictor.predict(TEXTS) for _ in range(20)]
    worker.join()
    assert not errors
    assert all(r == expected for r in results)


def test_the_pipeline_serves_each_item_with_its_sources_offsets(tiny_backbone: Path) -> None:
    from datetime import UTC, datetime

    from transformers import AutoTokenizer

    from monitor.pipeline import ModelSlot, Pipeline
    from monitor.records import NewsItem

    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(tiny_backbone)
    model.source_offsets = {"wire": (torch.zeros(len(model.topics)), torch.tensor([50.0, 0.0, 0.0]))}
    predictor = Predictor(model, AutoTokenizer.from_pretrained(str(tiny_backbone)), "v1", max_length=16)
    now = datetime(2026, 3, 2, tzinfo=UTC)
    items = [NewsItem(f"n{i}", "oil prices fall", source, now) for i, source in enumerate(["wire", "forum"] * 3)]
    outcome = Pipeline(ModelSlot(predictor), None, None).process(items, [0.0] * len(items))
    shared = predictor.predict(["oil prices fall"])[0]
    assert shared.sentiment != "negative"  # the tiny random model's own answer
    assert [p.sentiment for p in outcome.predictions] == ["negative", shared.sentiment] * 3
