"""Drift: pure signals (``signals``), river detectors by name (``detectors``), ``DriftWatch`` (one
signal, harmful direction only) and ``DriftTracker`` (every watch of the serving version).

``learn`` does not import this package; the online learner (``monitor.learn.online``) is the one
place that connects a drift report to the label requests and the retrain policy.
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
