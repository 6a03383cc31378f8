"""Drift: pure signals (``signals``), river detectors by name (``detectors``), ``DriftWatch`` (one
signal, harmful direction only) and ``DriftTracker`` (every watch of the serving version).

Within ``learn`` only two modules import this package: ``settings`` (to validate detector names by
building them) and ``online``, the learner, which is the one place that connects a drift report to
the label requests and the retrain policy; this package imports nothing from ``learn``.
"""

from monitor.drift.detectors import DETECTORS, Detector, is_binary, make_detector
from monitor.drift.signals import HEADS, LABEL_FREE_SIGNALS, SIGNALS, head_errors, label_free_values
from monitor.drift.tracker import DriftTracker
from monitor.drift.watch import DriftWatch

__all__ = [
    "DETECTORS",
    "HEADS",
    "LABEL_FREE_SIGNALS",
    "SIGNALS",
    "Detector",
    "DriftTracker",
    "DriftWatch",
    "head_errors",
    "is_binary",
    "label_free_values",
    "make_detector",
]
