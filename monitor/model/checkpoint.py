"""Checkpoints: one directory per model version, written atomically, loaded without unpickling.

Layout of a checkpoint directory::

    model.safetensors   all weights (encoder + heads), safetensors only
    config.json         the encoder config: loading needs it, not the backbone's weights
    tokenizer files     whatever ``tokenizer.save_pretrained`` writes
    meta.json           CheckpointMeta; written last, so it doubles as the "complete" marker

``save_checkpoint`` fills a temporary sibling directory and renames it into place, so a crash at
any point leaves either the previous state or the complete new one, never a half-written model.
``load_checkpoint`` refuses directories without ``meta.json`` and pickle-based weight files
(``torch.load`` on an untrusted file can run arbitrary code). ``validate_checkpoint`` checks a
directory without building the model (what ``monitor model add``/``rollback`` and the registry
do before a version may serve): ``meta.json`` is JSON with the schema below, the weights file
is safetensors (its header parses and its tensors fit the file), the heads' output sizes match
the label sets, and ``config.json`` and a tokenizer are present. Every problem, in either
function, is a ``CheckpointError`` that says what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from monitor.model.network import MultiTaskClassifier

__all__ = [
    "CheckpointError",
    "CheckpointMeta",
    "LoadedModel",
    "load_checkpoint",
    "new_version_id",
    "offsets_to_meta",
    "read_meta",
    "save_checkpoint",
    "validate_checkpoint",
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
    source_offsets: Mapping[str, Mapping[str, list[float]]] = field(default_factory=dict)
    """Per-source logit offsets, ``{source: {"topic": [...], "sentiment": [...]}}`` in the label orders
    (``MultiTaskClassifier.source_offsets``; written from the model by :func:`save_checkpoint`)."""

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["topics"], body["sentiments"] = list(self.topics), list(self.sentiments)
        body["metrics"], body["train_config"] = dict(self.metrics), dict(self.train_config)
        body["source_offsets"] = {k: {h: list(v) for h, v in heads.items()} for k, heads in self.source_offsets.items()}
        return body

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> CheckpointMeta:
        """Build from ``meta.json``'s object; ``CheckpointError`` naming the field on any schema problem."""
        if not isinstance(body, Mapping):
            raise CheckpointError(f"expected a JSON object, got {type(body).__name__}")
        known = {k: v for k, v in body.items() if k in cls.__dataclass_fields__}
        for key in ("version", "backbone", "data_fingerprint", "topics", "sentiments"):
            if key not in known:
                raise CheckpointError(f"'{key}' is missing")
        for key in ("version", "backbone", "data_fingerprint", "created_at"):
            if key in known and not isinstance(known[key], str):
                raise CheckpointError(f"'{key}' must be a string")
        if not known["version"].strip():
            raise CheckpointError("'version' is empty")
        if known.get("parent") is not None and not isinstance(known["parent"], str):
            raise CheckpointError("'parent' must be a string or null")
        for key in ("topics", "sentiments"):
            labels = known[key]
            if not isinstance(labels, list | tuple) or not labels or not all(isinstance(x, str) for x in labels):
                raise CheckpointError(f"'{key}' must be a non-empty list of strings")
            if len(set(labels)) != len(labels):
                raise CheckpointError(f"'{key}' has duplicates")
            known[key] = tuple(labels)
        for key in ("metrics", "train_config"):
            if key in known and not isinstance(known[key], Mapping):
                raise CheckpointError(f"'{key}' must be an object")
        if "source_offsets" in known:
            _check_offsets(known["source_offsets"], {"topic": len(known["topics"]),
                                                     "sentiment": len(known["sentiments"])})
        if "dropout" in known and (not isinstance(known["dropout"], int | float) or not 0 <= known["dropout"] < 1):
            raise CheckpointError("'dropout' must be a number in [0, 1)")
        if "format" in known and (not isinstance(known["format"], int) or isinstance(known["format"], bool)):
            raise CheckpointError("'format' must be an integer")
        if "created_at" in known:
            try:
                datetime.fromisoformat(known["created_at"])
            except ValueError:
                raise CheckpointError(f"'created_at' {known['created_at']!r} is not ISO 8601") from None
        return cls(**known)

    @property
    def created_timestamp(self) -> float:
        """``created_at`` as POSIX seconds (for the model-created gauge)."""
        return datetime.fromisoformat(self.created_at).timestamp()


def _check_offsets(offsets: Any, sizes: Mapping[str, int]) -> None:
    if not isinstance(offsets, Mapping):
        raise CheckpointError("'source_offsets' must be an object")
    for source, heads in offsets.items():
        if not isinstance(heads, Mapping) or set(heads) != set(sizes):
            raise CheckpointError(f"'source_offsets' of {source!r} must have exactly the keys topic and sentiment")
        for head, size in sizes.items():
            values = heads[head]
            if (not isinstance(values, list) or len(values) != size
                    or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                               for v in values)):
                raise CheckpointError(f"'source_offsets' of {source!r}: {head} must be {size} finite numbers")


def offsets_to_meta(model: MultiTaskClassifier) -> dict[str, dict[str, list[float]]]:
    """``model.source_offsets`` as ``meta.json`` keeps them."""
    return {source: {"topic": [round(float(v), 6) for v in t], "sentiment": [round(float(v), 6) for v in s]}
            for source, (t, s) in sorted(model.source_offsets.items())}


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
    meta = replace(meta, source_offsets=offsets_to_meta(model))  # the model's offsets are the truth
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


def read_meta(path: Path | str) -> CheckpointMeta:
    """The ``meta.json`` of the checkpoint directory ``path``; ``CheckpointError`` if absent or invalid."""
    meta_file = Path(path) / META_FILE
    if not meta_file.is_file():
        raise CheckpointError(f"{path} has no {META_FILE}: incomplete checkpoint (interrupted write?)")
    try:
        body = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{meta_file} is not readable JSON: {exc}") from None
    try:
        meta = CheckpointMeta.from_dict(body)
    except CheckpointError as exc:
        raise CheckpointError(f"{meta_file} is not valid checkpoint metadata: {exc}") from None
    if meta.format > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {meta.format}; this code reads <= {FORMAT_VERSION}")
    return meta


def _safetensors_header(weights: Path) -> dict[str, Any]:
    """The tensor table of a safetensors file, checked against the file's size (no tensor is read)."""
    size = weights.stat().st_size
    with weights.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{weights} is not a safetensors file (only {size} bytes)")
        (length,) = struct.unpack("<Q", head)
        if length < 2 or 8 + length > size or length > 100_000_000:
            raise CheckpointError(f"{weights} is not a safetensors file (a pickle or a truncated file?)")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{weights} has a corrupt safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{weights} has a corrupt safetensors header")
    data = size - 8 - length
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, entry in tensors.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not isinstance(shape, list)
                or not all(isinstance(o, int) for o in offsets) or not 0 <= offsets[0] <= offsets[1] <= data):
            raise CheckpointError(f"{weights}: tensor {name!r} lies outside the file (truncated or corrupt)")
    return tensors


def validate_checkpoint(path: Path | str) -> CheckpointMeta:
    """Check that ``path`` is a checkpoint that loads (without loading it); return its metadata."""
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
    meta = read_meta(path)
    tensors = _safetensors_header(weights)
    for head, labels in (("topic_head", meta.topics), ("sentiment_head", meta.sentiments)):
        entry = tensors.get(f"{head}.weight")
        if entry is None:
            raise CheckpointError(f"{weights} has no {head} weights: not a monitor checkpoint")
        if not entry["shape"] or entry["shape"][0] != len(labels):
            raise CheckpointError(f"{weights}: {head} has {entry['shape'][:1]} outputs but {META_FILE} lists "
                                  f"{len(labels)} labels")
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}/config.json (the encoder config) is missing or not JSON: {exc}") from None
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise CheckpointError(f"{path} has no tokenizer files")
    return meta


def load_checkpoint(path: Path | str, device: str = "cpu") -> LoadedModel:
    """Load a complete checkpoint written by :func:`save_checkpoint` (safetensors only)."""
    meta = validate_checkpoint(path)
    path = Path(path)
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        encoder = AutoModel.from_config(config)
        model = MultiTaskClassifier(encoder, meta.topics, meta.sentiments, dropout=meta.dropout)
        model.load_state_dict(load_file(str(path / WEIGHTS_FILE), device="cpu"), strict=True)
        model.source_offsets = {source: (torch.tensor(heads["topic"]), torch.tensor(heads["sentiment"]))
                                for source, heads in meta.source_offsets.items()}
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # safetensors, transformers and torch each raise their own kinds
        raise CheckpointError(f"{path} does not load: {type(exc).__name__}: {str(exc)[:500]}") from exc
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
