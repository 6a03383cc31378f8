"""Where promoted model versions are stored so that every serving replica can read them.

A version is a checkpoint directory (``monitor.model.save_checkpoint``). The learner
``publish``-es it into the store, which returns an ``Artifact``: the version, a location that
means something to the store, and the sha256 of every file. A replica ``fetch``-es the artifact
announced on the ``model-versions`` topic (``monitor.stream.versions``); the store hands back a
local directory only once every file matches its checksum, so a half-copied or corrupted
version is never loaded.

``DirectoryStore`` is a directory on a filesystem that all replicas mount (NFS, EFS, a shared
volume); an object store (S3, GCS) would implement the same two methods, downloading into a
local cache in ``fetch``.

    >>> import tempfile
    >>> src = Path(tempfile.mkdtemp()); (src / "meta.json").write_text("{}")
    2
    >>> store = DirectoryStore(tempfile.mkdtemp())
    >>> art = store.publish("v1", src)
    >>> sorted(art.checksums), store.fetch(art).name
    (['meta.json'], 'v1')
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["Artifact", "ArtifactError", "ArtifactStore", "DirectoryStore", "checksums"]


class ArtifactError(RuntimeError):
    """A version that cannot be published or fetched intact (missing file, checksum mismatch)."""


@dataclass(frozen=True)
class Artifact:
    version: str
    location: str
    """Where the store keeps it (for ``DirectoryStore``: the directory path)."""
    checksums: dict[str, str] = field(default_factory=dict)
    """sha256 hex digest of every file, by path relative to the version directory."""


class ArtifactStore(Protocol):
    def publish(self, version: str, directory: Path) -> Artifact: ...

    def fetch(self, artifact: Artifact) -> Path: ...


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksums(directory: Path) -> dict[str, str]:
    """sha256 of every regular file below ``directory`` (hidden files and folders excluded)."""
    out = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            out[relative.as_posix()] = _sha256(path)
    return out


class DirectoryStore:
    """Versions as ``<root>/<version>/``, written by copy-then-rename, verified on fetch."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def publish(self, version: str, directory: Path) -> Artifact:
        directory = Path(directory)
        if not directory.is_dir():
            raise ArtifactError(f"cannot publish {version}: {directory} is not a directory")
        dest = self.root / version
        if directory.resolve() != dest.resolve() and not dest.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{version}.publishing"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(directory, tmp)
            tmp.rename(dest)
        return Artifact(version, str(dest), checksums(dest))

    def fetch(self, artifact: Artifact) -> Path:
        path = Path(artifact.location)
        if not path.is_dir():
            raise ArtifactError(f"version {artifact.version}: {path} does not exist (not visible here yet?)")
        if not artifact.checksums:
            raise ArtifactError(f"version {artifact.version}: the announcement carries no checksums")
        for name, want in artifact.checksums.items():
            file = path / name
            if not file.is_file():
                raise ArtifactError(f"version {artifact.version}: {name} is missing in {path}")
            got = _sha256(file)
            if got != want:
                raise ArtifactError(f"version {artifact.version}: {name} has sha256 {got[:12]}…, "
                                    f"the announcement says {want[:12]}…")
        return path
