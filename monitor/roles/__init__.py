"""The daemon's roles for scale-out (``monitor serve`` is ``monitor.app.Monitor`` without state).

``analytics`` and ``learner`` are single-owner roles: ``Elected`` waits for the role's lease and
only then builds the worker, so that a standby instance reads the offsets, the learner state and
the model registry as the previous owner left them, not as they were when it started.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Elected", "Worker"]


class Worker(Protocol):
    def run(self) -> int: ...

    def stop(self) -> None: ...


class Elected:
    """Run the worker that ``build(lease)`` makes once this instance holds ``lease``."""

    def __init__(self, lease: Any, build: Callable[[Any], Worker]) -> None:
        self.lease = lease
        self._build = build
        self._stop = threading.Event()
        self._worker: Worker | None = None

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.stop()

    def run(self) -> int:
        try:
            if not self.lease.wait(self._stop.is_set):
                return 0
            self._worker = self._build(self.lease)
            if self._stop.is_set():
                self._worker.stop()
            return self._worker.run()
        finally:
            self.lease.close()
