"""Checkpoints: one directory per model version, written atomically, loaded without unpickling.

Layout of a checkpoint directory::

    model.safetensors   all weights (encoder + heads), safetensors only
    config.json         the encoder config: loading needs it, not the backbone's weights
    tokenizer files     whatever ``tokenizer.save_pretrained`` writes
    meta.json           CheckpointMeta; written last, so it doubles as the "complete" marker

``save_checkpoint`` fills a temporary sibling directory and renames it into place, so a crash at
any point leaves either the previous state or the complete new one, never a half-written model.
``load_checkpoint`` refuses directories without ``meta.json`` and pickle-based weight files
(``torch.load`` on an untrusted file can run arbitrary code).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from monitor.model.network import MultiTaskClassifier

__all__ = [
    "CheckpointError",
    "CheckpointMeta",
    "LoadedModel",
    "load_checkpoint",
    "new_version_id",
    "save_checkpoint",
]

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
FORMAT_VERSION = 1
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot (or must not) be loaded."""


def new_version_id(now: datetime | None = None) -> str:
    """A sortable, unique version id: UTC timestamp plus 6 random hex digits.

    >>> new_version_id(datetime(2024, 5, 1, 12, 0, tzinfo=UTC))[:17]
    'v20240501T120000Z'
    """
    now = now or datetime.now(UTC)
    return f"v{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint is: identity, lineage, label sets, training data and results."""

    version: str
    parent: str | None
    backbone: str
    topics: tuple[str, ...]
    sentiments: tuple[str, ...]
    data_fingerprint: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    train_config: Mapping[str, Any] = field(default_factory=dict)
    dropout: float = 0.1
    format: int = FORMAT_VERSION
    max_length: int = 128
    """Token truncation length of the model: training, the promotion gate and serving all use it
    (checkpoints written before it existed were served at 128)."""

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["topics"], body["sentiments"] = list(self.topics), list(self.sentiments)
        body["metrics"], body["train_config"] = dict(self.metrics), dict(self.train_config)
        return body

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> CheckpointMeta:
        known = {k: v for k, v in body.items() if k in cls.__dataclass_fields__}
        known["topics"] = tuple(known["topics"])
        known["sentiments"] = tuple(known["sentiments"])
        return cls(**known)

    @property
    def created_timestamp(self) -> float:
        """``created_at`` as POSIX seconds (for the model-created gauge)."""
        return datetime.fromisoformat(self.created_at).timestamp()


@dataclass(frozen=True)
class LoadedModel:
    model: MultiTaskClassifier
    tokenizer: PreTrainedTokenizerBase
    meta: CheckpointMeta


def save_checkpoint(
    model: MultiTaskClassifier,
    tokenizer: PreTrainedTokenizerBase,
    meta: CheckpointMeta,
    dest: Path | str,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``model``, ``tokenizer`` and ``meta`` to the directory ``dest`` atomically.

    Raises ``FileExistsError`` if ``dest`` exists, unless ``overwrite``; then the old directory
    is swapped out only after the new one is complete.
    """
    dest = Path(dest)
    if (tuple(meta.topics), tuple(meta.sentiments)) != (model.topics, model.sentiments):
        raise ValueError("meta topics/sentiments differ from the model's label sets")
    if dest.exists() and not overwrite:
        raise FileExistsError(f"checkpoint {dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        # A copy: safetensors refuses tensors sharing storage, and it detaches us from ongoing training.
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        model.encoder.config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        _write_meta(tmp / META_FILE, meta)
        # mkdtemp makes the directory private (0700); a checkpoint is meant to be read by other processes.
        for item in tmp.iterdir():
            item.chmod(0o644)
        tmp.chmod(0o755)
        _fsync_dir(tmp)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def load_checkpoint(path: Path | str, device: str = "cpu") -> LoadedModel:
    """Load a complete checkpoint written by :func:`save_checkpoint` (safetensors only)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory")
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        if pickled:
            raise CheckpointError(
                f"refusing to load pickle-based weights {', '.join(pickled)} in {path}: unpickling can run "
                "arbitrary code; convert to safetensors (model.safetensors)"
            )
        raise CheckpointError(f"{path} has no {WEIGHTS_FILE}")
    if not (path / META_FILE).is_file():
        raise CheckpointError(f"{path} has no {META_FILE}: incomplete checkpoint (interrupted write?)")
    try:
        meta = CheckpointMeta.from_dict(json.loads((path / META_FILE).read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / META_FILE} is not valid checkpoint metadata: {exc}") from exc
    if meta.format > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {meta.format}; this code reads <= {FORMAT_VERSION}")

    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    encoder = AutoModel.from_config(config)
    model = MultiTaskClassifier(encoder, meta.topics, meta.sentiments, dropout=meta.dropout)
    model.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return LoadedModel(model.to(device).eval(), tokenizer, meta)


def _write_meta(path: Path, meta: CheckpointMeta) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(meta.to_dict(), handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename or a directory's new entries durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
