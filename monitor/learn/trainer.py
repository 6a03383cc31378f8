"""The training loop, written out: ``fit(model, tokenizer, train, val, cfg)``.

One epoch = length-bucketed, dynamically padded batches in a seeded random order; per step the
masked per-head cross-entropy (+ optional distillation from a frozen teacher), AdamW with separate
learning rates for the encoder and the heads, gradient clipping and a linear warmup/decay schedule.
After each epoch the validation macro-F1 (mean over the heads that have labels in ``val``) decides
early stopping; the best weights are restored at the end.

Frozen modules (the embeddings, the lowest ``freeze_layers`` blocks) run in eval mode, without
dropout: they are not trained, so their dropout would only add noise. When the embeddings and
those blocks are all frozen, their output for an example is the same in every epoch, so ``fit``
computes it once per example before the first epoch (``MultiTaskClassifier.lower``) and each step
runs only the blocks above (``upper``): the same result as running the whole network each step,
for a fraction of the compute (bench/README.md, "Twelfth round"). The token vectors
are kept while they fit in ``FROZEN_CACHE_BYTES``; a larger training set runs the whole network.
A distillation teacher whose embeddings and lowest blocks equal the student's (the serving model an
update starts from) reads its logits from the same vectors. What is computed once lives in
``monitor.learn.precompute``; this module is the loop.

Reproducible: the same seed, data and initial weights give bit-identical weights on CPU.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from monitor.learn.evaluate import evaluate
from monitor.learn.losses import IGNORE_INDEX, distillation_loss, masked_cross_entropy
from monitor.learn.precompute import anchored_targets, congruent_rows, lower_states, stack_states, teacher_logits
from monitor.model.batching import Tokenizer, bucketed_batches, collate, encode
from monitor.model.network import MultiTaskClassifier, freeze, frozen_modules
from monitor.model.predictor import resolve_device
from monitor.records import Example

__all__ = ["FROZEN_CACHE_BYTES", "EpochRecord", "FitResult", "TrainConfig", "TrainingDiverged", "fit", "label_indices"]

#: The most memory the frozen blocks' token vectors of one training set may take (float32).
FROZEN_CACHE_BYTES = 2 * 1024**3


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model's weights are not usable."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one ``fit`` run. Defaults are tuned for all-MiniLM-L6-v2 (see docs/classifier.md)."""

    epochs: int = 4
    """Passes over the training data (early stopping may end sooner)."""
    batch_size: int = 32
    lr_encoder: float = 1e-4
    """Peak learning rate of the encoder; 3e-5 underfits this sentence-embedding backbone."""
    lr_head: float = 1e-3
    """Peak learning rate of the two freshly initialised heads."""
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    """Fraction of all steps spent warming the learning rate up from 0."""
    max_length: int = 64
    """Truncation length in tokens (tweets and headlines are rarely longer)."""
    patience: int = 2
    """Stop after this many epochs without a better validation score."""
    freeze_embeddings: bool = True
    """Freeze the embedding layer: half of MiniLM's weights, so half the optimizer work, and it keeps
    the pretrained vocabulary intact for words the fine-tuning data never shows."""
    freeze_layers: int = 0
    """Freeze the lowest N encoder layers: less forgetting, cheaper steps."""
    max_grad_norm: float = 1.0
    seed: int = 0
    distill_weight: float = 1.0
    """Weight of the distillation term when ``fit`` gets a teacher."""
    distill_temperature: float = 2.0
    distill_congruent: bool = False
    """Also distil, on the rows ``distill_rows`` leaves out, each head whose label the teacher already answers
    right (positive-congruent training, Yan et al. 2021): fewer answers the old model got right are lost."""
    device: str = "auto"
    """"auto" = CUDA when available, else CPU."""
    max_seconds: float | None = None
    """Wall-clock budget; training stops (and keeps the best weights) when it is spent."""
    eval_batch_size: int = 64
    cache_frozen: bool = True
    """Compute the frozen blocks once per example (see the module docstring); False runs them every step
    (the same result, for comparing the cost)."""
    offset_sources: tuple[str, ...] = ()
    """Sources whose logit offsets (``MultiTaskClassifier.source_offsets``) train with the model, from the
    model's own or from zero; the offsets of other sources are applied to their rows unchanged."""
    lr_offsets: float = 0.1
    """Peak learning rate of those offsets: high, so that a source's label convention moves its offsets
    rather than the shared heads (bench/README.md, twenty-second round)."""

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "max_length": self.max_length}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.lr_encoder < 0 or self.lr_head <= 0:
            raise ValueError("learning rates must be positive (lr_encoder may be 0)")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.patience < 1 or self.freeze_layers < 0 or self.distill_temperature <= 0:
            raise ValueError("need patience >= 1, freeze_layers >= 0 and distill_temperature > 0")
        if self.offset_sources and self.lr_offsets <= 0:
            raise ValueError("offsets train only with lr_offsets > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    val_score: float | None
    val_heads: dict[str, float]
    steps: int
    seconds: float


@dataclass(frozen=True)
class FitResult:
    best_score: float
    """Best validation macro-F1 (mean over heads); NaN when ``val`` was empty."""
    epochs_run: int
    history: list[EpochRecord]
    seconds: float
    examples_seen: int
    stopped_early: bool
    stop_reason: str = "completed"
    """"completed", "patience", "time_budget" or "should_stop"."""
    best_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_indices(labels: Sequence[str | None], known: Sequence[str], head: str) -> Tensor:
    """Label names -> class indices, ``None`` -> ``IGNORE_INDEX``; an unknown name is an error.

    >>> label_indices(["b", None, "a"], ["a", "b"], "topic").tolist()
    [1, -100, 0]
    """
    index = {name: i for i, name in enumerate(known)}
    unknown = sorted({str(x) for x in labels if x is not None and x not in index})
    if unknown:
        raise ValueError(f"{head} labels {unknown} are not in the model's {head} set {list(known)}")
    return torch.tensor([IGNORE_INDEX if x is None else index[x] for x in labels], dtype=torch.long)


def fit(
    model: MultiTaskClassifier,
    tokenizer: Tokenizer,
    train: Sequence[Example],
    val: Sequence[Example],
    cfg: TrainConfig,
    *,
    teacher: MultiTaskClassifier | None = None,
    distill_rows: Sequence[bool] | None = None,
    anchor: MultiTaskClassifier | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Train ``model`` in place on ``train``; early-stop on ``val``; restore the best weights.

    ``teacher``: distil from it (its logits are computed once, before the first epoch: it is
    frozen and in eval mode, so every epoch would compute the same ones); ``distill_rows``: which
    training examples the distillation term covers (default: all), e.g. only the replayed ones;
    ``anchor``: a second teacher (the lineage's first model): each distilled example takes the targets
    of whichever of the two gives its label(s) the higher probability (:func:`anchored_targets`).
    """
    started = time.perf_counter()
    if not train:
        raise ValueError("fit needs at least one training example")
    for other in (teacher, anchor):
        if other is not None and (other.topics, other.sentiments) != (model.topics, model.sentiments):
            raise ValueError("the teacher's label sets differ from the student's; distillation needs the same heads")
    if anchor is not None and teacher is None:
        raise ValueError("an anchor is a second teacher: fit needs a teacher with it")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)  # dropout masks
    order_rng = random.Random(cfg.seed)  # batch order
    model.to(device)
    if cfg.freeze_embeddings or cfg.freeze_layers:
        freeze(model, embeddings=cfg.freeze_embeddings, layers=cfg.freeze_layers)
    still = frozen_modules(model, cfg.freeze_embeddings, cfg.freeze_layers)
    offset_params = _trainable_offsets(model, cfg.offset_sources, device)
    sources = [e.source for e in train]

    ids = encode(tokenizer, [e.text for e in train], cfg.max_length)
    lengths = [len(row) for row in ids]
    topic_y = label_indices([e.topic for e in train], model.topics, "topic")
    sentiment_y = label_indices([e.sentiment for e in train], model.sentiments, "sentiment")
    pad_id = tokenizer.pad_token_id or 0
    below = cfg.freeze_layers if cfg.freeze_embeddings and cfg.cache_frozen else 0  # blocks computed once
    hidden_size = int(model.encoder.config.hidden_size)
    if below and sum(lengths) * hidden_size * 4 > FROZEN_CACHE_BYTES:
        below = 0
    states = lower_states(model, ids, pad_id, device, below, cfg.eval_batch_size) if below else None
    targets = None
    if teacher is not None:
        targets = teacher_logits(teacher, ids, sources, pad_id, device, cfg.eval_batch_size, model, states, below)
    if targets is not None and anchor is not None:
        targets = anchored_targets(targets, teacher_logits(anchor, ids, sources, pad_id, device, cfg.eval_batch_size,
                                                            model, states, below),
                                   (topic_y, sentiment_y))
    distilled = torch.ones(len(train), dtype=torch.bool) if distill_rows is None else torch.tensor(distill_rows)
    if len(distilled) != len(train):
        raise ValueError(f"distill_rows has {len(distilled)} entries for {len(train)} training examples")
    keeps = (distilled, distilled)  # the rows each head (topic, sentiment) distils
    if targets is not None and cfg.distill_congruent:
        keeps = congruent_rows(distilled, targets, (topic_y, sentiment_y))

    trainable = [p for p in model.parameters() if p.requires_grad] + offset_params
    groups = _param_groups(model, cfg)
    if offset_params:
        groups.append({"params": offset_params, "lr": cfg.lr_offsets, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr_head)
    total_steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    warmup = int(cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _linear(step, warmup, total_steps))

    best_score, best_epoch, best_state = -math.inf, None, None
    best_offsets = model.source_offsets
    history: list[EpochRecord] = []
    examples_seen, bad_epochs, stop_reason = 0, 0, "completed"
    for epoch in range(1, cfg.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        for module in still:
            module.eval()
        loss_sum, steps = 0.0, 0
        batches = bucketed_batches(lengths, cfg.batch_size, order_rng)
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
        for indices in bar:
            if should_stop is not None and should_stop():
                stop_reason = "should_stop"
                break
            if cfg.max_seconds is not None and time.perf_counter() - started > cfg.max_seconds:
                stop_reason = "time_budget"
                break
            rows = torch.tensor(indices)
            if states is None:
                batch = collate(ids, indices, pad_id).to(device)
                topic_logits, sentiment_logits = model(batch.input_ids, batch.attention_mask)
            else:
                hidden, mask = stack_states(states, indices)
                topic_logits, sentiment_logits = model.upper(hidden, mask, below)
            topic_logits, sentiment_logits = model.with_offsets((topic_logits, sentiment_logits),
                                                                [sources[i] for i in indices])
            loss = masked_cross_entropy(topic_logits, topic_y[rows].to(device)) + masked_cross_entropy(
                sentiment_logits, sentiment_y[rows].to(device)
            )
            if targets is not None:
                for logits, teacher_head, head_keep in zip((topic_logits, sentiment_logits), targets, keeps,
                                                           strict=True):
                    keep = head_keep[rows]
                    if keep.any():
                        keep = keep.to(device)
                        distill = distillation_loss(logits[keep], teacher_head[rows].to(device)[keep],
                                                    cfg.distill_temperature)
                        # Averaged over the whole batch: each distilled example weighs the same, however many.
                        loss = loss + cfg.distill_weight * distill * (int(keep.sum()) / len(indices))
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch}, step {steps + 1}")

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item()
            steps += 1
            examples_seen += len(indices)
            bar.set_postfix(loss=f"{loss_sum / steps:.4f}")
        bar.close()

        val_score, val_heads = None, {}
        if val and steps and stop_reason != "should_stop":
            report = evaluate(model, val, tokenizer, batch_size=cfg.eval_batch_size, max_length=cfg.max_length)
            val_heads = {name: head.macro_f1 for name, head in report.heads.items()}
            val_score = report.macro_f1 if val_heads else None
        history.append(
            EpochRecord(
                epoch=epoch,
                train_loss=loss_sum / max(steps, 1),
                val_score=val_score,
                val_heads=val_heads,
                steps=steps,
                seconds=time.perf_counter() - epoch_started,
            )
        )
        if progress:
            tqdm.write(f"epoch {epoch}: train loss {history[-1].train_loss:.4f}, val macro-F1 {val_score}")
        if val_score is not None and val_score > best_score:
            best_score, best_epoch, bad_epochs = val_score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_offsets = _detached(model.source_offsets)
        elif val_score is not None:
            bad_epochs += 1
            if bad_epochs >= cfg.patience and stop_reason == "completed" and epoch < cfg.epochs:
                stop_reason = "patience"
        if stop_reason != "completed":
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.source_offsets = _detached(best_offsets)
    model.eval()
    return FitResult(
        best_score=best_score if best_epoch is not None else math.nan,
        epochs_run=len(history),
        history=history,
        seconds=time.perf_counter() - started,
        examples_seen=examples_seen,
        stopped_early=stop_reason != "completed",
        stop_reason=stop_reason,
        best_epoch=best_epoch,
    )


def _trainable_offsets(model: MultiTaskClassifier, sources: Sequence[str], device: torch.device) -> list[Tensor]:
    """Make the offsets of ``sources`` trainable parameters of ``model`` (from its own, else zeros), all of its
    offsets on ``device``; returns the parameters."""
    offsets = {k: (t.to(device), s.to(device)) for k, (t, s) in model.source_offsets.items()}
    params: list[Tensor] = []
    for source in sources:
        start = offsets.get(source) or (torch.zeros(len(model.topics)), torch.zeros(len(model.sentiments)))
        pair = tuple(torch.nn.Parameter(x.detach().clone().float().to(device)) for x in start)
        offsets[source] = (pair[0], pair[1])
        params += pair
    model.source_offsets = offsets
    return params


def _detached(offsets: dict[str, tuple[Tensor, Tensor]]) -> dict[str, tuple[Tensor, Tensor]]:
    return {k: (t.detach().clone(), s.detach().clone()) for k, (t, s) in offsets.items()}


def _param_groups(model: MultiTaskClassifier, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Encoder and heads at their own learning rates; no weight decay on biases and norms."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            key = (name.startswith("encoder."), parameter.ndim >= 2)
            groups.setdefault(key, []).append(parameter)
    return [
        {
            "params": params,
            "lr": cfg.lr_encoder if is_encoder else cfg.lr_head,
            "weight_decay": cfg.weight_decay if decays else 0.0,
        }
        for (is_encoder, decays), params in sorted(groups.items())
    ]


def _linear(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1, then linear decay to 0 at ``total``.

    >>> [round(_linear(s, 2, 10), 3) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))
