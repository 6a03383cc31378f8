"""River drift detectors by name: every detector class of ``river.drift`` and ``river.drift.binary``.

A detector is named in the settings (``"ADWIN"``, ``"PageHinkley"``, ``"DDM"``...) with optional
constructor parameters; ``make_detector`` builds it and turns any mistake (unknown name, unknown
parameter, a value river rejects) into a ``ConfigError`` that names the settings key. Names match
case-insensitively. Binary detectors (``river.drift.binary``) watch a 0/1 stream such as
"prediction was wrong"; they cannot watch a real-valued signal such as uncertainty.

    >>> d = make_detector("adwin", {"delta": 0.01}, key="learning.settings.detector")
    >>> type(d).__name__, d.delta
    ('ADWIN', 0.01)
    >>> make_detector("FOO", {}, key="learning.settings.detector")
    Traceback (most recent call last):
    ...
    monitor.config.ConfigError: learning.settings.detector: unknown detector 'FOO' (known: ADWIN, DDM, \
DummyDriftDetector, EDDM, FHDDM, HDDMA, HDDMW, KSWIN, NoDrift, PageHinkley)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from river import base, drift
from river.drift import binary

from monitor.config import ConfigError

__all__ = ["DETECTORS", "Detector", "detector_class", "is_binary", "make_detector"]

#: What the rest of the code needs of a detector: river's ``update`` then ``drift_detected``.
Detector = base.DriftDetector | base.BinaryDriftDetector


def _collect() -> dict[str, type[Detector]]:
    found: dict[str, type[Detector]] = {}
    for module in (drift, binary):
        for name in dir(module):
            cls = getattr(module, name)
            if (
                inspect.isclass(cls)
                and issubclass(cls, base.DriftDetector | base.BinaryDriftDetector)
                and not inspect.isabstract(cls)
            ):
                found[name] = cls
    return dict(sorted(found.items()))


#: Every supported detector class by its river name (``river.drift`` and ``river.drift.binary``).
DETECTORS: dict[str, type[Detector]] = _collect()


def detector_class(name: str, key: str) -> type[Detector]:
    """The detector class called ``name`` (case-insensitive), or a ``ConfigError`` naming ``key``."""
    by_lower = {known.lower(): cls for known, cls in DETECTORS.items()}
    cls = by_lower.get(str(name).lower())
    if cls is None:
        raise ConfigError(f"{key}: unknown detector {name!r} (known: {', '.join(DETECTORS)})")
    return cls


def is_binary(name: str) -> bool:
    """True for detectors of ``river.drift.binary``, which only take 0/1 (error) streams.

    >>> is_binary("DDM"), is_binary("ADWIN")
    (True, False)
    """
    return issubclass(detector_class(name, "detector"), base.BinaryDriftDetector)


def make_detector(name: str, params: Mapping[str, Any], key: str) -> Detector:
    """A fresh detector ``name(**params)``; every problem becomes a ``ConfigError`` naming ``key``."""
    cls = detector_class(name, key)
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(
            f"{key}_params.{unknown[0]}: {cls.__name__} has no parameter {unknown[0]!r} "
            f"(known: {', '.join(sorted(accepted)) or 'none'})"
        )
    try:
        detector = cls(**params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}_params: {cls.__name__}({dict(params)}) rejected: {err}") from None
    return detector
