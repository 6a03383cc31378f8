"""The loss terms of training: masked per-head cross-entropy, LwF distillation, online EWC.

Plain functions and one small stateful object, combined explicitly in ``trainer.fit``:

    loss = CE_topic + CE_sentiment                             (each masked to its labelled rows)
         + distill_weight * (KD_topic + KD_sentiment)          (if a teacher is given)
         + ewc_lambda * ewc.penalty(model)                     (if an OnlineEWC is given)
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from monitor.model.batching import Tokenizer, collate, encode
from monitor.model.network import MultiTaskClassifier
from monitor.records import Example

__all__ = ["IGNORE_INDEX", "OnlineEWC", "distillation_loss", "masked_cross_entropy"]

#: Label index of an example that has no label for a head: it adds nothing to that head's loss.
IGNORE_INDEX = -100


def masked_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the rows whose label is not :data:`IGNORE_INDEX`.

    A batch with no labelled row gives exactly 0 (not NaN, as ``F.cross_entropy``'s mean would),
    still attached to the graph so ``backward`` works.

    >>> logits = torch.zeros(2, 3, requires_grad=True)
    >>> masked_cross_entropy(logits, torch.tensor([IGNORE_INDEX, IGNORE_INDEX])).item()
    0.0
    >>> round(masked_cross_entropy(logits, torch.tensor([1, IGNORE_INDEX])).item(), 4)  # ln 3
    1.0986
    """
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (labels != IGNORE_INDEX).sum().clamp(min=1)
    return total / count


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Learning-without-forgetting term: KL(teacher || student) on softened outputs, times T².

    Both distributions are softened at ``temperature``; the T² factor keeps the gradient scale
    independent of T (Hinton et al., 2015). It applies to every example, labelled or not, which is
    what lets it protect the old behaviour on the classes a new batch does not mention.

    >>> z = torch.tensor([[1.0, 2.0, 0.5]])
    >>> distillation_loss(z, z, temperature=2.0).item()
    0.0
    """
    student = F.log_softmax(student_logits / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2


class OnlineEWC:
    """Online elastic weight consolidation (Schwarz et al., 2018) with one running diagonal Fisher.

    ``consolidate(model, examples)`` estimates the diagonal Fisher information of the current
    weights on ``examples`` and folds it in, ``F <- gamma * F + F_new``, then anchors at the
    current weights. ``penalty(model)`` is ``0.5 * sum(F_norm * (theta - theta_anchor)**2)`` over
    the trainable parameters, with ``F_norm = F / mean(F)`` (0 before the first consolidation);
    the trainer scales it by ``TrainConfig.ewc_lambda``.

    **Normalisation.** The raw Fisher's scale depends on the model and its data: squared gradients
    of a confident model are tiny, so a fixed lambda on the raw Fisher did nothing in one model
    (EWC at lambda 100 matched naive fine-tuning to the last digit) and everything in another.
    Divided by its mean, the Fisher says only which weights matter *relative to the others*: the
    penalty pulls each weight back towards its anchor with the force ``lambda * F_norm_i *
    (theta_i - anchor_i)``, so lambda is the strength of an L2 pull on a weight of average
    importance, the same for any model, any data and any number of parameters.

    The Fisher uses labels *sampled from the model's own predictions* (the true Fisher, so
    unlabelled examples count too) for both heads. Gradients come from micro-batches of size B:
    with per-example gradients of mean about 0 near an optimum, ``B * mean_grad**2`` is an unbiased
    estimate of the mean squared per-example gradient at a B-th of the backward passes.
    """

    def __init__(
        self, tokenizer: Tokenizer, gamma: float = 0.9, max_length: int = 64, batch_size: int = 8, seed: int = 0
    ) -> None:
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.tokenizer = tokenizer
        self.gamma = gamma
        self.max_length = max_length
        self.batch_size = batch_size
        self.seed = seed
        self._fisher: dict[str, Tensor] = {}
        self._anchor: dict[str, Tensor] = {}
        self._consolidations = 0
        self._scale = 1.0  # mean(F): the penalty's normaliser

    @property
    def consolidations(self) -> int:
        """How many times ``consolidate`` has run."""
        return self._consolidations

    def consolidate(self, model: MultiTaskClassifier, examples: Sequence[Example]) -> None:
        """Fold the Fisher of ``model`` on ``examples`` into the running estimate; re-anchor."""
        if not examples:
            raise ValueError("consolidate needs at least one example")
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        device = next(model.parameters()).device
        ids = encode(self.tokenizer, [e.text for e in examples], self.max_length)
        order = list(range(len(ids)))
        random.Random(self.seed).shuffle(order)
        generator = torch.Generator().manual_seed(self.seed)
        was_training = model.training
        model.eval()  # no dropout: the Fisher of the deterministic network that will be served
        batches = 0
        try:
            for start in range(0, len(order), self.batch_size):
                indices = order[start : start + self.batch_size]
                batch = collate(ids, indices, self.tokenizer.pad_token_id or 0).to(device)
                model.zero_grad(set_to_none=True)
                loss = torch.zeros((), device=device)
                for logits in model(batch.input_ids, batch.attention_mask):
                    sampled = torch.multinomial(logits.detach().float().softmax(-1).cpu(), 1, generator=generator)
                    loss = loss + F.cross_entropy(logits, sampled.squeeze(1).to(device))
                loss.backward()
                for name, parameter in params.items():
                    if parameter.grad is not None:
                        fisher[name] += len(indices) * parameter.grad.detach() ** 2
                batches += 1
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        for name, parameter in params.items():
            update = fisher[name] / batches
            previous = self._fisher.get(name)
            self._fisher[name] = update if previous is None else self.gamma * previous.to(device) + update
            self._anchor[name] = parameter.detach().clone()
        elements = sum(f.numel() for f in self._fisher.values())
        mean = sum(float(f.sum()) for f in self._fisher.values()) / max(1, elements)
        self._scale = mean if mean > 0 else 1.0
        self._consolidations += 1

    @property
    def mean_fisher(self) -> float:
        """Mean of the raw running Fisher over its elements (0 before the first consolidation)."""
        return self._scale if self._consolidations else 0.0

    def penalty(self, model: MultiTaskClassifier) -> Tensor:
        """``0.5 * sum F_norm (theta - anchor)^2`` (class docstring); differentiable in the parameters."""
        device = next(model.parameters()).device
        total = torch.zeros((), device=device)
        for name, parameter in model.named_parameters():
            fisher = self._fisher.get(name)
            if fisher is None or not parameter.requires_grad:
                continue
            anchor = self._anchor[name]
            total = total + (fisher.to(device) * (parameter - anchor.to(device)) ** 2).sum()
        return 0.5 * total / self._scale
