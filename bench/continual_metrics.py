"""Continual-learning metrics over an accuracy matrix. Pure functions, no model here.

``R[i][j]`` is the accuracy on the test set of phase ``j`` after training on phase ``i`` (0-based
here, "phase 1" in the reports). Entries for phases not yet seen (``j > i``) may be ``None``:
the benchmark does not evaluate them, and nothing below reads them.

- **average accuracy** after phase ``k``: the mean of ``R[k][j]`` over the phases seen, ``j <= k``
  (Chaudhry et al., 2018; Lopez-Paz & Ranzato's ACC). The headline figure is the one after the
  last phase.
- **forgetting** after phase ``k`` (Chaudhry et al., 2018, "average forgetting"): for each old
  phase ``j < k``, the best accuracy any earlier model had on it after learning it,
  ``max_{j <= l < k} R[l][j]``, minus the accuracy now, ``R[k][j]``; averaged over ``j < k``.
  A term is negative when the current model beats every earlier one on that phase; such terms
  are kept, as in the definition, so the average can also show improvement.
- **backward transfer** (Lopez-Paz & Ranzato, 2017): the mean over ``j < K`` of
  ``R[K][j] - R[j][j]``; negative = forgetting measured against the accuracy right after learning.
- **prequential accuracy**: the accuracy of the serving model on each new chunk *before* it
  trains on it (test-then-train); the mean over the chunks after the first.

    >>> R = [[0.9, None], [0.7, 0.8]]
    >>> average_accuracy(R), round(forgetting(R), 3), round(backward_transfer(R), 3)
    (0.75, 0.2, -0.2)
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "Matrix",
    "average_accuracy",
    "average_accuracy_curve",
    "backward_transfer",
    "forgetting",
    "forgetting_curve",
    "mean",
]

Matrix = Sequence[Sequence[float | None]]


def _entry(matrix: Matrix, i: int, j: int) -> float:
    value = matrix[i][j]
    if value is None:
        raise ValueError(f"accuracy matrix entry [{i}][{j}] is missing; it is needed (phase {j + 1} was seen)")
    return float(value)


def _check_square(matrix: Matrix) -> int:
    k = len(matrix)
    if k == 0 or any(len(row) != k for row in matrix):
        raise ValueError(f"need a non-empty square accuracy matrix, got rows of {[len(r) for r in matrix]}")
    return k


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None; None if there are none.

    >>> mean([0.5, None, 1.0]), mean([None])
    (0.75, None)
    """
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def average_accuracy(matrix: Matrix, after: int | None = None) -> float:
    """Mean accuracy over the phases seen after phase ``after`` (0-based; default: the last).

    >>> average_accuracy([[1.0, None], [0.5, 0.7]], after=0)
    1.0
    """
    k = _check_square(matrix)
    row = k - 1 if after is None else after
    return sum(_entry(matrix, row, j) for j in range(row + 1)) / (row + 1)


def forgetting(matrix: Matrix, after: int | None = None) -> float:
    """Chaudhry et al.'s average forgetting after phase ``after`` (0-based; default: the last).

    0.0 after the first phase (nothing old to forget).

    >>> R = [[0.9, None, None], [0.6, 0.8, None], [0.7, 0.5, 0.9]]
    >>> round(forgetting(R, after=1), 3), round(forgetting(R), 3)   # ((0.9-0.7) + (0.8-0.5)) / 2
    (0.3, 0.25)
    """
    k = _check_square(matrix)
    now = k - 1 if after is None else after
    if now == 0:
        return 0.0
    drops = []
    for j in range(now):
        best = max(_entry(matrix, row, j) for row in range(j, now))
        drops.append(best - _entry(matrix, now, j))
    return sum(drops) / len(drops)


def backward_transfer(matrix: Matrix) -> float:
    """Mean over old phases of (final accuracy - accuracy right after learning it); 0.0 for one phase.

    >>> round(backward_transfer([[0.9, None, None], [0.6, 0.8, None], [0.7, 0.5, 0.9]]), 3)
    -0.25
    """
    k = _check_square(matrix)
    if k == 1:
        return 0.0
    return sum(_entry(matrix, k - 1, j) - _entry(matrix, j, j) for j in range(k - 1)) / (k - 1)


def forgetting_curve(matrix: Matrix) -> list[float]:
    """Forgetting after each phase (the first is 0.0): shows whether forgetting builds up.

    >>> [round(f, 3) for f in forgetting_curve([[0.9, None, None], [0.6, 0.8, None], [0.7, 0.5, 0.9]])]
    [0.0, 0.3, 0.25]
    """
    return [forgetting(matrix, after=i) for i in range(_check_square(matrix))]


def average_accuracy_curve(matrix: Matrix) -> list[float]:
    """Average accuracy over the phases seen, after each phase.

    >>> [round(a, 3) for a in average_accuracy_curve([[0.9, None], [0.6, 0.8]])]
    [0.9, 0.7]
    """
    return [average_accuracy(matrix, after=i) for i in range(_check_square(matrix))]
