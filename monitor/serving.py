"""Finding and loading the serving model, and noticing when it changes.

``model.path`` is either one checkpoint directory (it never changes) or a model registry
(``monitor.registry``), whose ``CURRENT`` version serves; ``RegistryWatcher`` reports a new
``CURRENT`` so the daemon can hot-swap between batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from monitor.config import ModelConfig
from monitor.model.backends import build_predictor
from monitor.model.checkpoint import META_FILE, CheckpointError, LoadedModel, load_checkpoint
from monitor.model.predictor import Predictor, resolve_device
from monitor.registry import ModelRegistry, is_registry

__all__ = ["ModelNotFound", "RegistryWatcher", "load_predictor", "resolve_model_dir"]

log = logging.getLogger(__name__)


class ModelNotFound(RuntimeError):
    """``model.path`` holds no usable model; the message says how to make one."""


def resolve_model_dir(path: Path | str) -> Path:
    """The checkpoint directory that serves for ``path`` (a checkpoint or a registry)."""
    path = Path(path)
    if is_registry(path):
        version = ModelRegistry(path).current_version()
        if version is None:
            raise ModelNotFound(f"model registry {path} has no serving version yet (no CURRENT file)")
        return ModelRegistry(path).path(version)
    if (path / META_FILE).is_file():
        return path
    raise ModelNotFound(
        f"no model at {path}: train one with `monitor train --data FILE --out {path}/versions/<name>` "
        "and `monitor model promote`, or point model.path at a checkpoint directory"
    )


def load_predictor(directory: Path, config: ModelConfig) -> tuple[Predictor, LoadedModel]:
    """Load a checkpoint into a ready ``Predictor``: backend, threads and batch budget per ``config``.

    The truncation length is the checkpoint's own (``meta.max_length``, the length it was trained
    and gated with) when it records one, else ``model.max_length``. Backend selection, the ONNX
    export and check, int8 and the thread probe: ``monitor.model.backends``.
    """
    device = resolve_device(config.device)
    try:
        loaded = load_checkpoint(directory, device=str(device))
    except CheckpointError as err:
        raise ModelNotFound(str(err)) from err
    max_length = int(getattr(loaded.meta, "max_length", None) or config.max_length)
    predictor, _choice = build_predictor(Path(directory), loaded, config, device, max_length)
    return predictor, loaded


class RegistryWatcher:
    """Polls a registry's ``CURRENT``; ``changed()`` returns the directory of a version not yet serving.

    The caller loads it and reports ``loaded(version)``, or ``failed(version)`` when it could not
    (files not yet visible on a shared filesystem, a corrupt copy): a version that failed is
    offered again after a backoff (1 s doubling to 60 s), never given up on, never hammered.
    """

    def __init__(self, path: Path | str, serving_version: str, enabled: bool = True, *,
                 backoff_s: float = 1.0, backoff_max_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.enabled = enabled and is_registry(self.path)
        self.serving = serving_version
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self._offered: str | None = None
        self._retry_at = 0.0
        self._delay = backoff_s

    def changed(self) -> Path | None:
        if not self.enabled:
            return None
        registry = ModelRegistry(self.path)
        version = registry.current_version()
        if version is None or version == self.serving:
            return None
        now = self._clock()
        if version != self._offered:  # a new CURRENT: offer it at once
            self._offered, self._delay = version, self.backoff_s
        elif now < self._retry_at:
            return None
        self._retry_at = now + self._delay
        return registry.path(version)

    def loaded(self, version: str) -> None:
        """``version`` now serves."""
        self.serving, self._offered, self._delay = version, None, self.backoff_s

    def failed(self, version: str) -> float:
        """Loading ``version`` failed; return the seconds until it is offered again."""
        delay = self._delay
        self._retry_at = self._clock() + delay
        self._delay = min(self._delay * 2, self.backoff_max_s)
        return delay
