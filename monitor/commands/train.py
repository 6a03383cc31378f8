"""``monitor train``: fine-tune the topic + sentiment classifier and write a checkpoint.

From a backbone (default all-MiniLM-L6-v2; ``--backbone DIR``, which must hold every encoder
weight: a monitor checkpoint or a partial directory is refused) with fresh heads, or with
``--from CHECKPOINT`` from an existing model: the offline twin of one update of the live learner,
with the same options and defaults (``--method``, ``--replay-ratio``, ``--distill-weight``, frozen
layers...), replaying the checkpoint's replay seed (or ``--replay-from FILE``), with the
checkpoint's label sets and truncation length.

Reads every ``--data`` file (partial labels are fine: PhraseBank has only sentiment, the Twitter
topic set only topics), holds out a stratified ``--val-fraction`` for early stopping (or uses
``--val-data``), trains with ``monitor.learn.fit`` and writes the checkpoint directory ``--out``
atomically, with ``replay_seed.jsonl``: ``--replay-per-class`` x the classes examples of each head of
its training data (in its class mix), which seed the learner's replay buffer when the model enters a registry, and
``--holdout-per-head`` validation examples of each head, which seed its forgetting holdout. Exit
codes: 0 ok, 1 training diverged, 2 unreadable input or bad options.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from monitor.commands.eval import format_report
from monitor.datasets import FORMATS, DataError, fingerprint, parse_data_arg, read_labelled, sample, split_examples
from monitor.labels import DEFAULT_TOPICS, SENTIMENTS
from monitor.learn.buffer import draw_per_head
from monitor.learn.evaluate import evaluate
from monitor.learn.settings import METHODS, TrainSettings
from monitor.learn.trainer import TrainConfig, TrainingDiverged, fit
from monitor.learn.warmstart import DEFAULT_HOLDOUT_PER_HEAD, DEFAULT_PER_CLASS, read_seed, seed_registry, write_seed
from monitor.model.backbone import default_backbone, load_encoder
from monitor.model.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    LoadedModel,
    load_checkpoint,
    new_version_id,
    save_checkpoint,
)
from monitor.model.network import MultiTaskClassifier
from monitor.records import Example
from monitor.registry import is_registry

__all__ = ["add_parser", "read_topics"]

_DEFAULTS = TrainConfig()
_LEARNER = TrainSettings()
#: Options of a training run: (name, type, help); default None = TrainConfig's, or the learner's with --from.
_RUN_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("epochs", int, "passes over the data"),
    ("batch_size", int, "examples per step"),
    ("lr_encoder", float, "peak encoder learning rate"),
    ("lr_head", float, "peak head learning rate"),
    ("freeze_layers", int, "freeze the lowest N encoder layers"),
    ("patience", int, "epochs without improvement before stopping"),
)
#: Options of --from only (the update's protection against forgetting), defaults from the learner.
_UPDATE_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("replay_ratio", float, "replay examples per new example"),
    ("min_replay", int, "fewest replay examples drawn, however few the new examples"),
    ("distill_weight", float, "weight of the distillation from the --from model"),
    ("distill_temperature", float, "distillation temperature"),
    ("distill_on", str, "examples the distillation covers: replay, congruent or all"),
    ("source_offset_lr", float, "learning rate of the per-source logit offsets (0: none)"),
    ("source_offset_min", int, "new examples of a source the model's replay pool lacks before it gets offsets"),
)


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
    p.add_argument("--from", dest="from_checkpoint", type=Path, metavar="CHECKPOINT",
                   help="fine-tune this checkpoint (an offline learner update) instead of a fresh model")
    p.add_argument("--topics", type=Path, metavar="FILE", help="topic names, one a line (default: the 20 built in)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help=f"held out for early stopping (default: 0.1; with --from: {_LEARNER.val_fraction})")
    p.add_argument("--max-examples", type=int, help="train on a seeded sample of at most N examples")
    p.add_argument("--version", help="version id to record (default: a new timestamped id)")
    p.add_argument("--parent", help="version this model was trained from (default: the --from version)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads of torch (default: torch's choice)")
    p.add_argument("--max-length", type=int, default=None,
                   help=f"truncation length in tokens, recorded in meta.json and used by serving (default: "
                        f"{_DEFAULTS.max_length}; with --from: the checkpoint's, which cannot change)")
    for name, kind, help_text in _RUN_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                       help=f"{help_text} (default: {getattr(_DEFAULTS, name)}; "
                            f"with --from: {getattr(_LEARNER, name)})")
    for name, kind, help_text in (("seed", int, "seed of split, order, dropout and heads"),
                                  ("max_seconds", float, "wall-clock budget in seconds"),
                                  ("device", str, "cpu, cuda, cuda:N or auto")):
        default = getattr(_DEFAULTS, name)
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default,
                       help=f"{help_text} (default: {default})")
    p.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help=f"freeze the embedding layer (default: {_DEFAULTS.freeze_embeddings})")
    p.add_argument("--method", choices=METHODS, default=None,
                   help=f"with --from: what the update trains on and how it keeps old knowledge (default: "
                        f"{_LEARNER.method}; see docs/continual-learning.md)")
    for name, kind, help_text in _UPDATE_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                       help=f"with --from: {help_text} (default: {getattr(_LEARNER, name)})")
    p.add_argument("--replay-from", metavar="FILE[:FORMAT]",
                   help="with --from: replay these labelled examples (default: the checkpoint's replay_seed.jsonl)")
    p.add_argument("--replay-per-class", type=int, default=DEFAULT_PER_CLASS, metavar="N",
                   help="replay seed written with the checkpoint: N x the classes examples of each head, in the "
                        "data's class mix (default: %(default)s)")
    p.add_argument("--holdout-per-head", type=int, default=DEFAULT_HOLDOUT_PER_HEAD, metavar="N",
                   help="examples per head in the seed's forgetting holdout, a random sample of the validation "
                        "examples (default: %(default)s; 0: none)")
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


def _option(args: argparse.Namespace, name: str, base: Any) -> Any:
    value = getattr(args, name)
    return getattr(base, name) if value is None else value


def _settings(args: argparse.Namespace, parent: LoadedModel | None) -> tuple[TrainConfig, TrainSettings | None]:
    """The training config (and, with --from, the update's settings) from the options; ValueError if bad."""
    update_only = [f"--{n.replace('_', '-')}" for n, _, _ in _UPDATE_OPTIONS if getattr(args, n) is not None]
    update_only += ["--method"] * (args.method is not None) + ["--replay-from"] * (args.replay_from is not None)
    if parent is None:
        if update_only:
            raise ValueError(f"{', '.join(update_only)}: only with --from CHECKPOINT")
        max_length = args.max_length or _DEFAULTS.max_length
        values = {n: _option(args, n, _DEFAULTS) for n, _, _ in _RUN_OPTIONS}
        freeze_embeddings = _option(args, "freeze_embeddings", _DEFAULTS)
        ts = None
    else:
        if args.backbone or args.topics:
            raise ValueError("--backbone and --topics: not with --from (the checkpoint has its encoder and labels)")
        max_length = parent.meta.max_length
        if args.max_length is not None and args.max_length != max_length:
            raise ValueError(f"--max-length {args.max_length}: the checkpoint's truncation length is {max_length}; "
                             "one model has one length (serving uses it too)")
        fields = {n: getattr(args, n) for n in (*(o[0] for o in _RUN_OPTIONS + _UPDATE_OPTIONS), "method",
                                                "freeze_embeddings", "val_fraction") if getattr(args, n) is not None}
        ts = TrainSettings(**fields)  # a pydantic ValidationError is a ValueError
        values = {n: getattr(ts, n) for n, _, _ in _RUN_OPTIONS}
        freeze_embeddings = ts.freeze_embeddings
    cfg = TrainConfig(**values, max_length=max_length, freeze_embeddings=freeze_embeddings, seed=args.seed,
                      max_seconds=args.max_seconds, device=args.device,
                      distill_weight=ts.distill_weight if ts else _DEFAULTS.distill_weight,
                      distill_temperature=ts.distill_temperature if ts else _DEFAULTS.distill_temperature,
                      distill_congruent=ts.congruent if ts else False)
    return cfg, ts


def run(args: argparse.Namespace) -> int:
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        parent = load_checkpoint(args.from_checkpoint) if args.from_checkpoint else None
        cfg, ts = _settings(args, parent)
        val_fraction = args.val_fraction if args.val_fraction is not None else (ts.val_fraction if ts else 0.1)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
        if args.replay_per_class < 1:
            raise ValueError(f"--replay-per-class must be >= 1, got {args.replay_per_class}")
        if args.holdout_per_head < 0:
            raise ValueError(f"--holdout-per-head must be >= 0, got {args.holdout_per_head}")
        if args.out.exists() and not args.overwrite:
            raise ValueError(f"{args.out} exists; pass --overwrite to replace it")
        if parent is not None:
            topics = parent.meta.topics
        else:
            topics = read_topics(args.topics) if args.topics else DEFAULT_TOPICS
        examples = _read_all(args.data, topics)
        pool: list[Example] = []
        if parent is not None:
            pool = (_read_all([args.replay_from], topics) if args.replay_from
                    else read_seed(args.from_checkpoint, "replay")[1])
        backbone = (args.backbone or default_backbone()) if parent is None else Path(parent.meta.backbone)
        tokenizer: Any
        if parent is None:
            model = MultiTaskClassifier(load_encoder(backbone), topics, SENTIMENTS)
            tokenizer = AutoTokenizer.from_pretrained(str(backbone), local_files_only=True)
        else:
            model, tokenizer = parent.model, parent.tokenizer
    except (ValueError, OSError, CheckpointError) as exc:  # DataError and BackboneError are ValueErrors
        print(f"monitor train: {exc}", file=sys.stderr)
        return 2
    if args.max_examples:
        examples = sample(examples, args.max_examples, seed=cfg.seed)
    teacher, replay = None, []
    if parent is not None and ts is not None:
        if ts.method in ("replay", "replay_distill"):  # drawn as the learner draws from its buffer
            replay = draw_per_head(pool, ts.replay_size(len(examples)), random.Random(cfg.seed))
        if ts.method == "replay_distill":
            teacher = copy.deepcopy(model)
        cfg = replace(cfg, offset_sources=ts.offset_sources(examples, {e.source for e in pool}, model.source_offsets),
                      lr_offsets=ts.source_offset_lr)
        print(f"fine-tuning {parent.meta.version} ({ts.method}): {len(examples)} new + {len(replay)} replay "
              f"examples (of {len(pool)}); source offsets trained: {', '.join(cfg.offset_sources) or 'none'}",
              file=sys.stderr)
    data = examples + replay
    if args.val_data:
        train, val = data, _read_all(args.val_data, topics)
    else:
        train, val = split_examples(data, val_fraction, seed=cfg.seed)
    print(f"training on {len(train)} examples, validating on {len(val)}; backbone {backbone}", file=sys.stderr)
    try:
        rows = ts.distill_rows(train, replay) if ts is not None else None
        result = fit(model, tokenizer, train, val, cfg, teacher=teacher, distill_rows=rows,
                     progress=not args.no_progress)
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
    if ts is not None:
        metrics.update(method=ts.method, new_examples=len(examples), replay_examples=len(replay))
    report = evaluate(model, val, tokenizer, max_length=cfg.max_length) if val else None
    if report is not None and report.heads:
        metrics["val_macro_f1"] = report.macro_f1
        for name, head in report.heads.items():
            metrics[f"val_{name}_accuracy"] = head.accuracy
            metrics[f"val_{name}_macro_f1"] = head.macro_f1
    meta = CheckpointMeta(
        version=args.version or new_version_id(),
        parent=args.parent or (parent.meta.version if parent else None),
        backbone=str(backbone),
        topics=model.topics,
        sentiments=model.sentiments,
        data_fingerprint=fingerprint(train),
        metrics=metrics,
        train_config={**cfg.to_dict(), **(ts.model_dump() if ts else {})},
        dropout=parent.meta.dropout if parent else 0.1,
        max_length=cfg.max_length,
    )
    save_checkpoint(model, tokenizer, meta, args.out, overwrite=args.overwrite)
    # The seed samples what the model knows: its training data, and with --from the old domain's seed too.
    seed = write_seed(args.out, (examples + pool) if parent else train, args.replay_per_class, seed=cfg.seed,
                      source="monitor train", data_fingerprint=meta.data_fingerprint,
                      holdout_per_head=args.holdout_per_head, holdout_from=val)
    if report is not None:
        print(format_report(report))
    print(f"wrote {meta.version} to {args.out} ({result.epochs_run} epochs, {result.seconds:.0f} s, "
          f"{result.stop_reason}); replay seed {seed}")
    if args.out.parent.name == "versions" and is_registry(args.out.parent.parent):
        added, buffer = seed_registry(args.out.parent.parent, meta.version)
        print(f"seeded the registry's replay buffer {buffer} with {added} examples")
    return 0
