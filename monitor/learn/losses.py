"""The loss terms of training: masked per-head cross-entropy and LwF distillation.

Plain functions, combined explicitly in ``trainer.fit``:

    loss = CE_topic + CE_sentiment                             (each masked to its labelled rows)
         + distill_weight * (KD_topic + KD_sentiment)          (if a teacher is given)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["IGNORE_INDEX", "distillation_loss", "masked_cross_entropy"]

#: Label index of an example that has no label for a head: it adds nothing to that head's loss.
IGNORE_INDEX = -100


def masked_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the rows whose label is not :data:`IGNORE_INDEX`.

    A batch with no labelled row gives exactly 0 (not NaN, as ``F.cross_entropy``'s mean would),
    still attached to the graph so ``backward`` works.

    >>> import torch
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

    >>> import torch
    >>> z = torch.tensor([[1.0, 2.0, 0.5]])
    >>> distillation_loss(z, z, temperature=2.0).item()
    0.0
    """
    student = F.log_softmax(student_logits / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2

