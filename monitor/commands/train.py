"""``monitor train``: fine-tune the topic + sentiment classifier and write a checkpoint.

Reads every ``--data`` file (partial labels are fine: PhraseBank has only sentiment, the Twitter
topic set only topics), holds out a stratified ``--val-fraction`` for early stopping (or uses
``--val-data``), trains with ``monitor.learn.fit`` and writes the checkpoint directory ``--out``
atomically. Exit codes: 0 ok, 1 training diverged, 2 unreadable input or bad options.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from monitor.commands.eval import format_report
from monitor.datasets import FORMATS, DataError, fingerprint, parse_data_arg, read_labelled, sample, split_examples
from monitor.labels import DEFAULT_TOPICS, SENTIMENTS
from monitor.learn.evaluate import evaluate
from monitor.learn.trainer import TrainConfig, TrainingDiverged, fit
from monitor.model.backbone import default_backbone
from monitor.model.checkpoint import CheckpointMeta, new_version_id, save_checkpoint
from monitor.model.network import MultiTaskClassifier
from monitor.records import Example

__all__ = ["add_parser", "read_topics"]

_DEFAULTS = TrainConfig()


def add_parser(subparsers: Any) -> None:
    """Register ``monitor train``."""
    p = subparsers.add_parser(
        "train",
        help="fine-tune the classifier on labelled files and write a checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    formats = ", ".join(FORMATS)
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="FILE[:FORMAT]",
        help=f"labelled file, repeatable; FORMAT: {formats} (default: from the name)",
    )
    p.add_argument(
        "--val-data",
        action="append",
        default=[],
        metavar="FILE[:FORMAT]",
        help="validation file(s) instead of a split of --data",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--backbone", type=Path, metavar="DIR", help="local BERT dir (default: all-MiniLM-L6-v2)")
    p.add_argument("--topics", type=Path, metavar="FILE", help="topic names, one a line (default: the 20 built in)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held out for early stopping (default: 0.1)")
    p.add_argument("--max-examples", type=int, help="train on a seeded sample of at most N examples")
    p.add_argument("--version", help="version id to record (default: a new timestamped id)")
    p.add_argument("--parent", help="version this model was trained from (recorded in meta.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for name, kind, help_text in (
        ("epochs", int, "passes over the data"),
        ("batch_size", int, "examples per step"),
        ("lr_encoder", float, "peak encoder learning rate"),
        ("lr_head", float, "peak head learning rate"),
        ("max_length", int, "truncation length in tokens"),
        ("freeze_layers", int, "freeze the lowest N encoder layers"),
        ("patience", int, "epochs without improvement before stopping"),
        ("seed", int, "seed of split, order, dropout and heads"),
        ("max_seconds", float, "wall-clock budget in seconds"),
        ("device", str, "cpu, cuda, cuda:N or auto"),
    ):
        default = getattr(_DEFAULTS, name)
        p.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=default, help=f"{help_text} (default: {default})"
        )
    p.add_argument(
        "--freeze-embeddings",
        action=argparse.BooleanOptionalAction,
        default=_DEFAULTS.freeze_embeddings,
        help=f"freeze the embedding layer (default: {_DEFAULTS.freeze_embeddings})",
    )
    p.set_defaults(func=run)


def read_topics(path: Path) -> tuple[str, ...]:
    """Topic names from a file, one a line; blank lines and ``#`` comments are skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    topics = tuple(s.strip() for s in lines if s.strip() and not s.strip().startswith("#"))
    if len(topics) < 2 or len(set(topics)) != len(topics):
        raise DataError(f"{path}: need at least two distinct topic names, one a line")
    return topics


def _read_all(values: list[str], topics: tuple[str, ...]) -> list[Example]:
    examples: list[Example] = []
    for value in values:
        path, fmt = parse_data_arg(value)
        examples.extend(read_labelled(path, fmt, topics=topics))
    return examples


def run(args: argparse.Namespace) -> int:
    cfg_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in cfg_fields})
        if not 0.0 <= args.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
        if args.out.exists() and not args.overwrite:
            raise ValueError(f"{args.out} exists; pass --overwrite to replace it")
        topics = read_topics(args.topics) if args.topics else DEFAULT_TOPICS
        examples = _read_all(args.data, topics)
        backbone = args.backbone or default_backbone()
    except (ValueError, OSError) as exc:  # DataError is a ValueError
        print(f"monitor train: {exc}", file=sys.stderr)
        return 2
    if args.max_examples:
        examples = sample(examples, args.max_examples, seed=cfg.seed)
    if args.val_data:
        train, val = examples, _read_all(args.val_data, topics)
    else:
        train, val = split_examples(examples, args.val_fraction, seed=cfg.seed)
    print(f"training on {len(train)} examples, validating on {len(val)}; backbone {backbone}", file=sys.stderr)

    model = MultiTaskClassifier.from_backbone(backbone, topics, SENTIMENTS)
    tokenizer = AutoTokenizer.from_pretrained(str(backbone), local_files_only=True)
    try:
        result = fit(model, tokenizer, train, val, cfg, progress=not args.no_progress)
    except TrainingDiverged as exc:
        print(f"monitor train: training diverged: {exc}", file=sys.stderr)
        return 1
    metrics: dict[str, Any] = {
        "train_examples": len(train),
        "train_seconds": round(result.seconds, 1),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "val_examples": len(val),
    }
    report = evaluate(model, val, tokenizer, max_length=cfg.max_length) if val else None
    if report is not None and report.heads:
        metrics["val_macro_f1"] = report.macro_f1
        for name, head in report.heads.items():
            metrics[f"val_{name}_accuracy"] = head.accuracy
            metrics[f"val_{name}_macro_f1"] = head.macro_f1
    meta = CheckpointMeta(
        version=args.version or new_version_id(),
        parent=args.parent,
        backbone=str(backbone),
        topics=model.topics,
        sentiments=model.sentiments,
        data_fingerprint=fingerprint(train),
        metrics=metrics,
        train_config=cfg.to_dict(),
    )
    save_checkpoint(model, tokenizer, meta, args.out, overwrite=args.overwrite)
    if report is not None:
        print(format_report(report))
    print(
        f"wrote {meta.version} to {args.out} ({result.epochs_run} epochs, {result.seconds:.0f} s, {result.stop_reason})"
    )
    return 0
