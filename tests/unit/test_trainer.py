"""The training loop and its loss terms, on the tiny random backbone."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from monitor.learn import (
    IGNORE_INDEX,
    TrainConfig,
    TrainingDiverged,
    distillation_loss,
    evaluate,
    fit,
    masked_cross_entropy,
)
from monitor.model import MultiTaskClassifier, Predictor
from monitor.records import Example

TOPICS = ("Earnings", "Energy | Oil", "Macro")
# Random embeddings are worth training here (the real backbone freezes its pretrained ones by default).
FAST = TrainConfig(
    epochs=3, batch_size=4, lr_encoder=1e-3, lr_head=1e-2, max_length=16, device="cpu", freeze_embeddings=False
)


def _data() -> list[Example]:
    """Separable toy data with partial labels: some topic-only, some sentiment-only, some both."""
    rows = [
        ("apple earnings beat , profit rises", "Earnings", "positive"),
        ("tesla earnings miss , profit falls", "Earnings", "negative"),
        ("revenue growth strong this quarter", "Earnings", None),
        ("oil prices surge", "Energy | Oil", "positive"),
        ("oil prices plunge", "Energy | Oil", "negative"),
        ("gas energy supply", "Energy | Oil", None),
        ("fed raises interest rates", "Macro", None),
        ("inflation and unemployment data", "Macro", "neutral"),
        ("economy gdp growth strong", "Macro", "positive"),
        ("stocks jump on good news", None, "positive"),
        ("shares drop on bad news", None, "negative"),
        ("market hold , no change", None, "neutral"),
    ]
    return [Example(text, topic=t, sentiment=s) for text, t, s in rows]


def _model(tiny_backbone: Path, seed: int = 0) -> MultiTaskClassifier:
    torch.manual_seed(seed)
    return MultiTaskClassifier.from_backbone(tiny_backbone, topics=TOPICS)


@pytest.fixture
def tokenizer(tiny_backbone: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(tiny_backbone))


def test_masked_loss_head_without_labels_contributes_zero(
    tiny_backbone: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    model = _model(tiny_backbone)
    batch = tokenizer(["oil prices fall", "fed raises rates"], padding=True, return_tensors="pt")
    topic_logits, sentiment_logits = model(batch["input_ids"], batch["attention_mask"])
    no_sentiment = torch.full((2,), IGNORE_INDEX)
    sentiment_loss = masked_cross_entropy(sentiment_logits, no_sentiment)
    assert sentiment_loss.item() == 0.0 and not math.isnan(sentiment_loss.item())
    (masked_cross_entropy(topic_logits, torch.tensor([1, IGNORE_INDEX])) + sentiment_loss).backward()
    assert all(p.grad is None or not p.grad.any() for p in model.sentiment_head.parameters())
    assert model.topic_head.weight.grad is not None and model.topic_head.weight.grad.any()


def test_masked_loss_ignores_unlabelled_rows() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    only_first = masked_cross_entropy(logits, torch.tensor([0, IGNORE_INDEX]))
    assert only_first.item() == pytest.approx(torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0])).item())


def test_distillation_is_zero_when_student_equals_teacher(
    tiny_backbone: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    student = _model(tiny_backbone).eval()
    teacher = copy.deepcopy(student)
    batch = tokenizer(["oil prices fall", "fed"], padding=True, return_tensors="pt")
    for s, t in zip(student(**batch), teacher(**batch), strict=True):
        assert distillation_loss(s, t, temperature=2.0).item() == pytest.approx(0.0, abs=1e-7)
        assert distillation_loss(s, t + torch.randn_like(t), temperature=2.0).item() > 0


def test_fit_learns_partial_labels_and_restores_best(tiny_backbone: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    model = _model(tiny_backbone)
    data = _data()
    cfg = TrainConfig(**{**FAST.to_dict(), "epochs": 12, "patience": 12, "lr_encoder": 3e-3})
    result = fit(model, tokenizer, data, data, cfg, progress=False)
    assert result.epochs_run == 12 and result.examples_seen == 12 * len(data)
    assert result.history[-1].train_loss < result.history[0].train_loss
    scores = [r.val_score for r in result.history]
    assert result.best_score == max(s for s in scores if s is not None) > 0.9
    # The weights left in the model are the best epoch's, not the last one's.
    assert evaluate(model, data, tokenizer, max_length=16).macro_f1 == pytest.approx(result.best_score)
    assert set(result.history[0].val_heads) == {"topic", "sentiment"}


def test_fit_is_reproducible_for_a_seed(tiny_backbone: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    def run(seed: int) -> dict[str, torch.Tensor]:
        model = _model(tiny_backbone)
        cfg = TrainConfig(**{**FAST.to_dict(), "seed": seed, "epochs": 2})
        fit(model, tokenizer, _data(), [], cfg, progress=False)
        return model.state_dict()

    first, second, other = run(1), run(1), run(2)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_frozen_blocks_run_once_per_example_and_train_as_if_run_every_step(
    tiny_backbone: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    def run(cache: bool) -> tuple[dict[str, torch.Tensor], int, float]:
        model = _model(tiny_backbone)
        calls = [0]
        model.encoder.encoder.layer[0].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        cfg = TrainConfig(**{**FAST.to_dict(), "freeze_embeddings": True, "freeze_layers": 1, "cache_frozen": cache,
                             "epochs": 4})
        teacher = _model(tiny_backbone, seed=1).eval()
        fitted = fit(model, tokenizer, _data(), [], cfg, teacher=teacher, progress=False)
        return model.state_dict(), calls[0], fitted.history[-1].train_loss

    cached, cached_calls, cached_loss = run(True)
    every, every_calls, every_loss = run(False)
    assert cached_calls == 1  # 12 examples, one batch of 64, before the first epoch
    assert every_calls == 4 * 3  # 3 batches of 4 in each of 4 epochs
    assert cached_loss == pytest.approx(every_loss, rel=1e-4)
    for name in every:
        torch.testing.assert_close(cached[name], every[name], atol=1e-5, rtol=1e-4)


def test_a_teacher_with_the_students_frozen_blocks_distils_from_their_cached_states(
    tiny_backbone: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    def run(cache: bool, same_lower: bool = True) -> tuple[dict[str, torch.Tensor], int]:
        model = _model(tiny_backbone)
        teacher = copy.deepcopy(model).eval()  # an update's student starts as the serving model
        if not same_lower:
            with torch.no_grad():
                teacher.encoder.encoder.layer[0].output.dense.bias.add_(0.1)
        calls = [0]
        teacher.encoder.encoder.layer[0].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        cfg = TrainConfig(**{**FAST.to_dict(), "freeze_embeddings": True, "freeze_layers": 1, "cache_frozen": cache,
                             "distill_weight": 5.0})
        fit(model, tokenizer, _data(), [], cfg, teacher=teacher, progress=False)
        return model.state_dict(), calls[0]

    cached, cached_calls = run(True)
    every, every_calls = run(False)
    assert (cached_calls, every_calls) == (0, 1)  # the whole teacher runs once (12 examples, one batch) without
    for name in every:
        torch.testing.assert_close(cached[name], every[name], atol=1e-5, rtol=1e-4)
    assert run(True, same_lower=False)[1] == 1  # a teacher whose frozen blocks differ runs whole


def test_fit_raises_on_nan_loss(tiny_backbone: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    model = _model(tiny_backbone)
    with torch.no_grad():
        model.sentiment_head.weight[0, 0] = math.nan
    with pytest.raises(TrainingDiverged, match="loss is nan at epoch 1, step 1"):
        fit(model, tokenizer, _data(), [], FAST, progress=False)


def test_fit_stops_on_budget_and_on_request(tiny_backbone: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    budget = TrainConfig(**{**FAST.to_dict(), "max_seconds": 0.0})
    result = fit(_model(tiny_backbone), tokenizer, _data(), _data(), budget, progress=False)
    assert (result.stop_reason, result.examples_seen, math.isnan(result.best_score)) == ("time_budget", 0, True)
    calls = iter([False, False, True])
    result = fit(
        _model(tiny_backbone),
        tokenizer,
        _data(),
        _data(),
        FAST,
        progress=False,
        should_stop=lambda: next(calls),
    )
    assert result.stopped_early and result.stop_reason == "should_stop" and result.examples_seen == 8


def test_fit_with_teacher_forgets_less(tiny_backbone: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Training on topic labels only: LwF keeps the outputs closer to the starting model's."""
    batch = tokenizer([e.text for e in _data()], padding=True, return_tensors="pt")

    def run(teacher: bool) -> float:
        model = _model(tiny_backbone)
        start = copy.deepcopy(model).eval()
        cfg = TrainConfig(**{**FAST.to_dict(), "distill_weight": 50.0})
        topic_only = [Example(e.text, topic=e.topic) for e in _data() if e.topic]
        fit(model, tokenizer, topic_only, [], cfg, teacher=start if teacher else None, progress=False)
        with torch.no_grad():
            outputs = zip(model(**batch), start(**batch), strict=True)
            return sum(distillation_loss(s, t, temperature=1.0).item() for s, t in outputs)

    assert run(teacher=True) < run(teacher=False) / 2


def test_teacher_passes_build_no_graph(tiny_backbone: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """The teacher's logits are constants: a graph there would hold every training example's activations
    for the whole fit (5 MB an example with MiniLM: a 1,500-example run took 7 GB more)."""
    model, teacher = _model(tiny_backbone), _model(tiny_backbone, seed=1)
    grad_enabled: list[bool] = []
    teacher.register_forward_hook(lambda module, inputs, outputs: grad_enabled.append(torch.is_grad_enabled()))
    fit(model, tokenizer, _data(), [], FAST, teacher=teacher, progress=False)
    assert grad_enabled and not any(grad_enabled)


def test_congruent_distillation_covers_the_heads_the_teacher_gets_right(tiny_backbone: Path,
                                                                         tokenizer: PreTrainedTokenizerBase) -> None:
    """distill_congruent, no row named: labels the teacher always misses = no teacher; labels it gets = distilled."""
    cfg = TrainConfig(**{**FAST.to_dict(), "distill_weight": 50.0, "distill_congruent": True})
    start = _model(tiny_backbone).eval()
    batch = tokenizer([e.text for e in _data()], padding=True, return_tensors="pt")
    with torch.no_grad():
        topic_guess, sentiment_guess = (logits.argmax(dim=-1).tolist() for logits in start(**batch))

    def relabelled(shift: int) -> list[Example]:  # shift 0: the teacher's answers; 1: never its answers
        return [Example(e.text, topic=start.topics[(t + shift) % len(start.topics)],
                        sentiment=start.sentiments[(s + shift) % len(start.sentiments)])
                for e, t, s in zip(_data(), topic_guess, sentiment_guess, strict=True)]

    def weights(data: list[Example], teacher: bool) -> list[torch.Tensor]:
        model = copy.deepcopy(start)
        fit(model, tokenizer, data, [], cfg, teacher=copy.deepcopy(start).eval() if teacher else None,
            distill_rows=[False] * len(data), progress=False)
        return [p.detach().clone() for p in model.parameters()]

    wrong, right = relabelled(1), relabelled(0)
    assert all(torch.equal(a, b) for a, b in zip(weights(wrong, True), weights(wrong, False), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(weights(right, True), weights(right, False), strict=True))


def test_distill_rows_limit_the_distillation_to_the_rows_named(tiny_backbone: Path,
                                                               tokenizer: PreTrainedTokenizerBase) -> None:
    """No row distilled = no teacher at all (bit for bit); some rows distilled = a different model."""
    cfg = TrainConfig(**{**FAST.to_dict(), "distill_weight": 50.0})

    def weights(teacher: bool, rows: list[bool] | None) -> list[torch.Tensor]:
        model = _model(tiny_backbone)
        start = copy.deepcopy(model).eval()
        fit(model, tokenizer, _data(), [], cfg, teacher=start if teacher else None, distill_rows=rows, progress=False)
        return [p.detach().clone() for p in model.parameters()]

    n = len(_data())
    plain, none = weights(False, None), weights(True, [False] * n)
    assert all(torch.equal(a, b) for a, b in zip(plain, none, strict=True))
    half = weights(True, [i % 2 == 0 for i in range(n)])
    assert not all(torch.equal(a, b) for a, b in zip(plain, half, strict=True))
    with pytest.raises(ValueError, match="distill_rows has 1 entries"):
        weights(True, [True])


def test_fit_rejects_unknown_labels_and_bad_config(tiny_backbone: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ValueError, match="'Sports'"):
        fit(_model(tiny_backbone), tokenizer, [Example("x", topic="Sports")], [], FAST, progress=False)
    with pytest.raises(ValueError, match="warmup_ratio"):
        TrainConfig(warmup_ratio=1.5)


def test_source_offsets_learn_a_source_label_convention(tiny_backbone: Path,
                                                        tokenizer: PreTrainedTokenizerBase) -> None:
    """The same texts labelled neutral by one source and positive by another: only per-source offsets can fit
    both, and the other source's items keep the shared heads' answers."""
    texts = [e.text for e in _data()]
    data = ([Example(t, sentiment="neutral", source="tweets") for t in texts]
            + [Example(t, sentiment="positive", source="wire") for t in texts])
    cfg = TrainConfig(**{**FAST.to_dict(), "epochs": 12, "offset_sources": ("wire",), "lr_offsets": 0.3})

    def answers(offsets: bool) -> tuple[list[str], list[str]]:
        model = _model(tiny_backbone)
        fit(model, tokenizer, data, [], cfg if offsets else FAST, progress=False)
        predictor = Predictor(model, tokenizer, "t", max_length=16)
        return ([s.sentiment for s in predictor.predict(texts, ["wire"] * len(texts))],
                [s.sentiment for s in predictor.predict(texts, ["tweets"] * len(texts))])

    wire, tweets = answers(offsets=True)
    assert wire == ["positive"] * len(texts) and tweets == ["neutral"] * len(texts)
    wire, tweets = answers(offsets=False)  # one convention for both: the sources cannot both be right
    assert wire == tweets


def test_source_offsets_start_from_the_model_and_the_others_stay(tiny_backbone: Path,
                                                                 tokenizer: PreTrainedTokenizerBase) -> None:
    model = _model(tiny_backbone)
    kept = (torch.tensor([0.5, 0.0, -0.5]), torch.tensor([1.0, 0.0, 0.0]))
    model.source_offsets = {"forum": kept, "wire": (torch.zeros(3), torch.tensor([0.0, 0.0, 2.0]))}
    data = [Example(e.text, sentiment="negative", source="wire") for e in _data()]
    fit(model, tokenizer, data, [], TrainConfig(**{**FAST.to_dict(), "offset_sources": ("wire",)}), progress=False)
    assert set(model.source_offsets) == {"forum", "wire"}
    assert all(torch.equal(a, b) for a, b in zip(model.source_offsets["forum"], kept, strict=True))
    wire = model.source_offsets["wire"][1]
    assert not wire.requires_grad and wire[0] > 0 and wire[2] < 2.0  # moved toward negative, from its start
    fresh = _model(tiny_backbone)  # the same fit from no offsets: its positive offset ends lower
    fit(fresh, tokenizer, data, [], TrainConfig(**{**FAST.to_dict(), "offset_sources": ("wire",)}), progress=False)
    assert fresh.source_offsets["wire"][1][2] < wire[2] - 1.0
    with pytest.raises(ValueError, match="lr_offsets"):
        TrainConfig(offset_sources=("wire",), lr_offsets=0.0)
