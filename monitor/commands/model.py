"""``monitor model``: list, add, promote and roll back versions in a model registry.

``add``, ``promote`` and ``rollback`` load the version (weights, encoder, tokenizer, label sets)
before it may become ``CURRENT`` and say why not (exit 2); ``list`` marks a broken version with
``!`` and its problem.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from monitor.registry import ModelRegistry, RegistryError

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("model", help="list, add, promote or roll back model versions in a registry")
    p.add_argument("--registry", default="var/models", help="model registry directory (default: var/models)")
    sub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="every version with lineage, metrics and which one serves")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=list_versions)
    add = sub.add_parser("add", help="copy a checkpoint into the registry (and --promote it)")
    add.add_argument("checkpoint", type=Path)
    add.add_argument("--promote", action="store_true", help="make it the serving version")
    add.add_argument("--replay-from", metavar="FILE[:FORMAT]",
                     help="labelled training data of a model trained elsewhere: seeds the replay buffer")
    add.add_argument("--replay-per-class", type=int, default=100, metavar="N",
                     help="with --replay-from: N x the classes examples of each head taken (default: %(default)s)")
    add.set_defaults(func=add_version)
    pr = sub.add_parser("promote", help="make VERSION the serving version (running daemons swap to it)")
    pr.add_argument("version")
    pr.set_defaults(func=promote)
    rb = sub.add_parser("rollback", help="serve an earlier VERSION again (running daemons swap to it)")
    rb.add_argument("version")
    rb.set_defaults(func=rollback)
    for sp in (pr, rb):
        sp.add_argument("--announce", metavar="HOST:PORT",
                        help="also announce it on kafka.versions_topic of this broker now (serving replicas "
                             "follow that topic; a running `monitor learn` announces it too, within a batch)")
    hist = sub.add_parser("history", help="promotions, rejections (with reasons), failures, rollbacks")
    hist.set_defaults(func=history)


def list_versions(args: argparse.Namespace) -> int:
    versions = ModelRegistry(args.registry).versions()
    if args.json:
        print(json.dumps([{**v.meta.to_dict(), "serving": v.serving, "path": str(v.path), "problem": v.problem}
                          for v in versions], indent=2))
        return 0
    if not versions:
        print(f"no model versions in {args.registry}")
        return 0
    print(f"{'':3}{'version':<28}{'parent':<28}{'created':<27}metrics")
    for v in versions:
        metrics = ", ".join(f"{k}={val:.3f}" for k, val in v.meta.metrics.items() if isinstance(val, int | float))
        mark = ("*" if v.serving else " ") + ("!" if v.problem else " ")
        print(f"{mark:3}{v.path.name:<28}{(v.meta.parent or '-'):<28}{v.meta.created_at:<27}"
              f"{f'BROKEN: {v.problem}' if v.problem else metrics}")
    if any(v.problem for v in versions):
        print("(* serving, ! broken: cannot be promoted or rolled back to)")
    return 0


def _export(directory: Path, loaded: Any) -> None:
    """The ONNX export of a version entering the registry or serving (kept when current); says how it went.

    ``loaded``: the checkpoint already loaded from ``directory`` (or from an identical copy of it).
    """
    from monitor.config import ModelConfig
    from monitor.model.onnx_export import ensure_export

    max_length = int(loaded.meta.max_length or ModelConfig().max_length)  # the length serving will use
    record = ensure_export(directory, loaded.model, loaded.tokenizer, max_length)
    print(f"ONNX export {record.reason}" + ("" if record.accepted else " (torch serves it)"))


def _loads(path: Path) -> tuple[Any, str | None]:
    """``(the checkpoint at path fully loaded on the CPU, None)``, or ``(None, why it does not load)``."""
    from monitor.model.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(path), None
    except CheckpointError as err:
        return None, str(err)


def add_version(args: argparse.Namespace) -> int:
    from monitor.learn.warmstart import read_replay_file, seed_registry
    from monitor.model.checkpoint import read_meta

    loaded, problem = _loads(args.checkpoint)  # loaded before it enters the registry
    if problem is not None:
        print(f"monitor model add: {args.checkpoint} is not a loadable checkpoint: {problem}", file=sys.stderr)
        return 2
    meta = read_meta(args.checkpoint)
    try:
        replay = read_replay_file(args.replay_from, meta.topics) if args.replay_from else None
    except (ValueError, OSError) as err:
        print(f"monitor model add: {err}", file=sys.stderr)
        return 2
    registry = ModelRegistry(args.registry).init()
    dest = registry.path(meta.version)
    if not dest.exists():
        tmp = registry.staging / f".{meta.version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(args.checkpoint, tmp)
        _export(tmp, loaded)
        tmp.rename(dest)
        registry.record("added", meta.version, source=str(args.checkpoint))
    added, buffer = seed_registry(registry.root, meta.version, replay_from=replay, per_class=args.replay_per_class)
    print(f"replay buffer {buffer}: {added} examples of {meta.version}'s training data added")
    if args.promote:
        registry.set_current(meta.version, "promoted", reason="manual (monitor model add --promote)")
    print(f"{meta.version} {'serving' if args.promote else 'added'} in {args.registry}")
    return 0


def _serve(args: argparse.Namespace, event: str) -> int:
    registry = ModelRegistry(args.registry)
    loaded, problem = _loads(registry.path(args.version)) if registry.path(args.version).is_dir() else (None, None)
    if problem is not None:
        print(f"monitor model {event}: version {args.version!r} does not load, CURRENT is unchanged "
              f"({registry.current_version()}): {problem}", file=sys.stderr)
        return 2
    if loaded is not None:  # before CURRENT moves: daemons swapping to it find it exported
        _export(registry.path(args.version), loaded)
    try:
        registry.set_current(args.version, "promoted" if event == "promote" else event, reason=f"manual ({event})")
    except RegistryError as err:
        print(f"monitor model {event}: {err}", file=sys.stderr)
        return 2
    print(f"{args.version} is now serving in {args.registry}")
    if args.announce:
        from monitor.config import load_config
        from monitor.stream.versions import VersionAnnouncer, announcement, ensure_versions_topic

        kafka = load_config(None, env={**os.environ, "MONITOR__KAFKA__BOOTSTRAP_SERVERS": args.announce}).kafka
        ensure_versions_topic(kafka)
        announcer = VersionAnnouncer(kafka)
        try:
            announcer.announce(announcement(registry, args.version))
        finally:
            announcer.close()
        print(f"{args.version} announced on {kafka.versions_topic} at {args.announce}")
    return 0


def promote(args: argparse.Namespace) -> int:
    return _serve(args, "promote")


def rollback(args: argparse.Namespace) -> int:
    return _serve(args, "rollback")


def history(args: argparse.Namespace) -> int:
    for event in ModelRegistry(args.registry).history():
        print(json.dumps(event, ensure_ascii=False))
    return 0
