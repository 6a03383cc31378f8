"""What a training run computes once, before its first epoch: the frozen blocks' states and the teacher's targets.

- ``lower_states``: each example's token vectors after the embeddings and the frozen blocks (they learn
  nothing, so every epoch would compute the same ones); ``stack_states`` pads a batch of them.
- ``teacher_logits``: the distillation teacher's logits of every example, read from those states when the
  teacher's frozen modules are the student's (an update's teacher is the serving model it started from).
- ``anchored_targets`` / ``congruent_rows``: which teacher's answers each example is distilled towards, and
  which rows a head distils.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from monitor.learn.losses import IGNORE_INDEX
from monitor.model.batching import collate
from monitor.model.network import MultiTaskClassifier, frozen_modules

__all__ = ["anchored_targets", "congruent_rows", "lower_states", "stack_states", "teacher_logits"]


def congruent_rows(distilled: Tensor, targets: tuple[Tensor, Tensor],
                   labels: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The rows each head distils with ``distill_congruent``: ``distilled``, and those the teacher labels right.

    A new example the old model already answers right is one the update should not lose (a
    "negative flip"): distilling it there keeps that answer, while the examples it got wrong learn
    from their labels alone. An unlabelled head of a row adds nothing beyond ``distilled``.

    >>> logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    >>> keep = congruent_rows(torch.tensor([False, False, True]), (logits, logits),
    ...                       (torch.tensor([0, 1, IGNORE_INDEX]), torch.tensor([IGNORE_INDEX, 0, 0])))
    >>> [k.tolist() for k in keep]
    [[True, False, True], [False, True, True]]
    """
    topic, sentiment = (distilled | (teacher.argmax(dim=-1) == y) for teacher, y in zip(targets, labels, strict=True))
    return topic, sentiment


@torch.no_grad()
def anchored_targets(teacher: tuple[Tensor, Tensor], anchor: tuple[Tensor, Tensor],
                     labels: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Per example, both heads' logits of whichever teacher gives its labels the higher log-probability.

    The serving model has already moved once or more from the lineage's first model (the anchor): where it
    drifted on an old example and the anchor still knows it, the anchor's answers are distilled, so
    forgetting does not pile up over promotions; where the serving model learned something the anchor
    never knew (a new class), its own answers are. Ties and unlabelled rows keep the serving model's.

    >>> teacher = (torch.tensor([[0.0, 2.0], [2.0, 0.0]]), torch.zeros(2, 2))
    >>> anchor = (torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.ones(2, 2))
    >>> topic, sentiment = anchored_targets(teacher, anchor, (torch.tensor([0, 0]), torch.tensor([IGNORE_INDEX] * 2)))
    >>> topic.tolist(), sentiment.tolist()  # row 0: the anchor knows label 0 better; row 1: the teacher does
    ([[2.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]])
    """
    def support(logits: tuple[Tensor, Tensor]) -> Tensor:
        total = torch.zeros(len(labels[0]))
        for head, y in zip(logits, labels, strict=True):
            known = y != IGNORE_INDEX
            log_p = torch.log_softmax(head.float(), dim=-1)
            total[known] += log_p[known, y[known]]
        return total

    use_anchor = support(anchor) > support(teacher)
    return tuple(torch.where(use_anchor[:, None], a, t) for t, a in zip(teacher, anchor, strict=True))  # type: ignore[return-value]


@torch.no_grad()  # the targets are constants: a graph here would hold every example's activations
def teacher_logits(teacher: MultiTaskClassifier, ids: Sequence[Sequence[int]], sources: Sequence[str], pad_id: int,
                   device: torch.device, batch_size: int, student: MultiTaskClassifier,
                   states: Sequence[Tensor] | None, below: int) -> tuple[Tensor, Tensor]:
    """The teacher's (topic, sentiment) logits of every training example (its source offsets added, as it serves),
    on the CPU, in ``ids`` order.

    When the teacher's embeddings and lowest ``below`` blocks are the student's (an update's student starts as a copy
    of the serving model, and those modules stay frozen through a lineage), the student's cached ``states`` are the
    teacher's too: only its upper blocks run (:meth:`MultiTaskClassifier.upper`)."""
    teacher.to(device).eval()
    shared = None
    if states is not None and _same_modules(frozen_modules(teacher, True, below), frozen_modules(student, True, below)):
        shared = states
    topic: Tensor | None = None
    sentiment: Tensor | None = None
    for indices in _by_length(ids, batch_size):
        if shared is not None:
            t, s = teacher.upper(*stack_states(shared, indices), below)
        else:
            batch = collate(ids, indices, pad_id).to(device)
            t, s = teacher(batch.input_ids, batch.attention_mask)
        if topic is None or sentiment is None:
            topic, sentiment = t.new_zeros(len(ids), t.shape[1]).cpu(), s.new_zeros(len(ids), s.shape[1]).cpu()
        rows = torch.tensor(indices)
        topic[rows], sentiment[rows] = t.float().cpu(), s.float().cpu()
    assert topic is not None and sentiment is not None  # fit refuses an empty training set
    return teacher.with_offsets((topic, sentiment), sources)


def _same_modules(a: Sequence[torch.nn.Module], b: Sequence[torch.nn.Module]) -> bool:
    """Whether two lists of modules hold equal weights and buffers, module by module."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        xs, ys = x.state_dict(), y.state_dict()
        if xs.keys() != ys.keys() or not all(torch.equal(xs[k], ys[k].to(xs[k].device)) for k in xs):
            return False
    return True


@torch.no_grad()
def lower_states(model: MultiTaskClassifier, ids: Sequence[Sequence[int]], pad_id: int, device: torch.device,
                 layers: int, batch_size: int) -> list[Tensor]:
    """Each example's token vectors after the embeddings and the lowest ``layers`` (frozen) blocks, in ``ids`` order."""
    model.eval()
    states: list[Tensor] = [torch.empty(0)] * len(ids)
    for indices in _by_length(ids, batch_size):
        batch = collate(ids, indices, pad_id).to(device)
        hidden = model.lower(batch.input_ids, batch.attention_mask, layers)
        for row, i in enumerate(indices):
            states[i] = hidden[row, : len(ids[i])].clone()
    return states


def _by_length(ids: Sequence[Sequence[int]], batch_size: int) -> Iterator[list[int]]:
    """The positions in ``ids`` of batches of ``batch_size`` rows in order of length (little padding).

    >>> list(_by_length([[1, 2, 3], [1], [1, 2]], 2))
    [[1, 2], [0]]
    """
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def stack_states(states: Sequence[Tensor], indices: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The rows ``indices`` of ``states`` right-padded with zeros to the longest, and their attention mask."""
    width = max(states[i].shape[0] for i in indices)
    first = states[indices[0]]
    hidden = first.new_zeros(len(indices), width, first.shape[1])
    mask = torch.zeros(len(indices), width, dtype=torch.long, device=first.device)
    for row, i in enumerate(indices):
        hidden[row, : states[i].shape[0]] = states[i]
        mask[row, : states[i].shape[0]] = 1
    return hidden, mask
