"""The model registry: every version on disk with its lineage, and which one serves.

Layout of a registry directory::

    versions/<version>/     checkpoints written by monitor.model.save_checkpoint
    rejected/<version>/     challengers the gate refused, kept only with learning.settings.keep_rejected
                            (never served: nothing outside versions/ can become CURRENT)
    CURRENT                 the serving version id (replaced atomically by rename)
    history.jsonl           one JSON line per event: added, promoted, rejected, failed, rollback

Every monitor instance sharing the directory watches ``CURRENT`` and hot-swaps between
batches when it changes, so a promotion (or ``monitor model rollback``) reaches all of them.
``set_current`` refuses a version that does not pass ``validate_checkpoint`` (so a broken
version can never become ``CURRENT``), and writes ``CURRENT`` readable by every user (0644), so
instances running as other users can read it. ``versions()`` lists broken versions too, with
the reason in ``VersionInfo.problem``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.model.checkpoint import META_FILE, CheckpointError, CheckpointMeta, read_meta, validate_checkpoint

__all__ = ["ModelRegistry", "RegistryError", "VersionInfo", "is_registry"]

CURRENT_FILE = "CURRENT"
HISTORY_FILE = "history.jsonl"
VERSIONS_DIR = "versions"
REJECTED_DIR = "rejected"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (unknown version, empty registry)."""


@dataclass(frozen=True)
class VersionInfo:
    meta: CheckpointMeta
    path: Path
    serving: bool
    problem: str | None = None
    """Why this version cannot serve (unreadable metadata, corrupt weights...), or None."""


def is_registry(path: Path | str) -> bool:
    """A registry has a ``versions/`` folder; a single checkpoint has ``meta.json`` at its top."""
    return (Path(path) / VERSIONS_DIR).is_dir()


class ModelRegistry:
    """Versions on disk plus the ``CURRENT`` pointer; all writes are atomic renames."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def init(self) -> ModelRegistry:
        (self.root / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
        return self

    def path(self, version: str) -> Path:
        return self.root / VERSIONS_DIR / version

    def rejected_path(self, version: str) -> Path:
        """Where a refused challenger is kept for inspection (``keep_rejected``); never a serving candidate."""
        return self.root / REJECTED_DIR / version

    @property
    def staging(self) -> Path:
        """Where a new checkpoint is written before ``add`` (same filesystem, so the move is a rename)."""
        return self.root / VERSIONS_DIR

    def current_version(self) -> str | None:
        try:
            text = (self.root / CURRENT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def current_path(self) -> Path:
        version = self.current_version()
        if version is None:
            raise RegistryError(f"model registry {self.root} has no serving version (CURRENT is missing)")
        return self.path(version)

    def versions(self) -> list[VersionInfo]:
        """All complete versions, oldest first."""
        folder = self.root / VERSIONS_DIR
        if not folder.is_dir():
            return []
        current = self.current_version()
        out = []
        for entry in sorted(folder.iterdir()):
            meta_file = entry / META_FILE
            if entry.name.startswith(".") or not meta_file.is_file():
                continue  # temp dirs of interrupted writes are never listed
            try:
                meta = read_meta(entry)
                validate_checkpoint(entry)
                problem = None
            except CheckpointError as err:
                problem = str(err)
                try:
                    meta = read_meta(entry)
                except CheckpointError:
                    mtime = datetime.fromtimestamp(meta_file.stat().st_mtime, UTC).isoformat(timespec="seconds")
                    meta = CheckpointMeta(version=entry.name, parent=None, backbone="?", topics=(), sentiments=(),
                                          data_fingerprint="?", created_at=mtime)
            out.append(VersionInfo(meta, entry, entry.name == current, problem))
        return sorted(out, key=lambda v: v.meta.created_at)

    def origin(self, version: str) -> str:
        """The oldest ancestor of ``version`` still in the registry (``version`` itself if it has none).

        Follows ``meta.json`` ``parent`` links while the parent is a version here: a chain of
        learner promotions leads back to the model that entered the registry.
        """
        seen = {version}
        while True:
            try:
                parent = read_meta(self.path(version)).parent
            except CheckpointError:
                return version
            if parent is None or parent in seen or not (self.path(parent) / META_FILE).is_file():
                return version
            seen.add(parent)
            version = parent

    def record(self, event: str, version: str, **details: Any) -> None:
        """Append one event to ``history.jsonl`` (promotions, rejections with reasons, failures)."""
        line = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "event": event, "version": version}
        line.update(details)
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / HISTORY_FILE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")

    def history(self) -> list[Mapping[str, Any]]:
        try:
            lines = (self.root / HISTORY_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def set_current(self, version: str, event: str = "promoted", **details: Any) -> None:
        """Point ``CURRENT`` at ``version`` (which must exist) atomically, and record why."""
        if not (self.path(version) / META_FILE).is_file():
            known = ", ".join(v.meta.version for v in self.versions()) or "none"
            raise RegistryError(f"no model version {version!r} in {self.root} (known: {known})")
        try:
            validate_checkpoint(self.path(version))
        except CheckpointError as err:
            raise RegistryError(f"model version {version!r} cannot serve, CURRENT is unchanged: {err}") from None
        previous = self.current_version()
        fd, tmp = tempfile.mkstemp(prefix=".CURRENT.", dir=self.root)
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600: instances running as another user must read it
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.root / CURRENT_FILE)
        self.record(event, version, previous=previous, **details)
