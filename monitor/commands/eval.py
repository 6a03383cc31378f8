"""``monitor eval``: score a checkpoint on labelled files (report tables or ``--json``).

Per head (only heads with labels in the data): accuracy, precision/recall/F1/support per class,
micro/macro/weighted averages and the confusion matrix (rows = true, columns = predicted).
Each example is scored as an item of its source (the file's ``source`` column, else the file's name): a
source with logit offsets in the model (a source the learner adapted to) gets them, as it does when served.
``--source NAME`` scores every example as an item of NAME instead. Which sources had offsets is printed.
Exit codes: 0 ok, 2 unreadable data or model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import replace
from typing import Any

import torch

from monitor.datasets import FORMATS, DataError, parse_data_arg, read_labelled
from monitor.learn.evaluate import EvalReport, HeadReport, evaluate
from monitor.model.checkpoint import CheckpointError, load_checkpoint
from monitor.model.predictor import Predictor, resolve_device
from monitor.records import Example

__all__ = ["add_parser", "format_report"]


def add_parser(subparsers: Any) -> None:
    """Register ``monitor eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model checkpoint on labelled data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory")
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="FILE[:FORMAT]",
        help=f"labelled file, repeatable; FORMAT is one of {', '.join(FORMATS)} (default: from the name)",
    )
    parser.add_argument("--source", metavar="NAME",
                        help="score every example as an item of this source (default: each example's own)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--batch-size", type=int, default=64, help="inference batch size (default: %(default)s)")
    parser.add_argument(
        "--max-length", type=int, default=None, help="truncation length (default: the checkpoint's, as served)"
    )
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads of torch (default: torch's choice)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise DataError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        loaded = load_checkpoint(args.model, device=str(resolve_device(args.device)))
        examples: list[Example] = []
        for value in args.data:
            path, fmt = parse_data_arg(value)
            examples.extend(read_labelled(path, fmt, topics=loaded.meta.topics))
    except (CheckpointError, DataError, OSError) as exc:
        print(f"monitor eval: {exc}", file=sys.stderr)
        return 2
    if args.source is not None:
        examples = [replace(e, source=args.source) for e in examples]
    learnt = sorted(loaded.model.source_offsets)
    by_source = Counter(e.source for e in examples)
    offsets = {k: n for k, n in by_source.items() if k in learnt}
    max_length = args.max_length or loaded.meta.max_length
    predictor = Predictor(
        loaded.model, loaded.tokenizer, loaded.meta.version, max_length=max_length, batch_size=args.batch_size
    )
    report = evaluate(predictor, examples)
    shared = {k: n for k, n in sorted(by_source.items()) if k not in learnt}
    if learnt and shared:  # so that an evaluation that lost its source column is not taken for the adapted answer
        named = ", ".join(f"{k} ({n} examples)" for k, n in shared.items())
        print(f"monitor eval: note: scored with the shared heads, no source offsets for: {named}; the model has "
              f"offsets for {', '.join(learnt)} (to score a file as items of one of them: --source NAME)",
              file=sys.stderr)
    if args.json:
        body = {"model": loaded.meta.version, "data": list(args.data), "source_offsets": learnt,
                "source_offsets_applied": offsets, **report.to_dict()}
        print(json.dumps(body, indent=2))
    else:
        print(f"model {loaded.meta.version} on {report.examples} labelled examples ({report.seconds:.1f} s)")
        if learnt:
            applied = ", ".join(f"{k} ({n} examples)" for k, n in sorted(offsets.items())) or "none"
            print(f"source offsets of the model: {', '.join(learnt)}; applied: {applied}")
        print(format_report(report))
    return 0


def format_report(report: EvalReport) -> str:
    """Human-readable tables for every head in ``report``."""
    if not report.heads:
        return "no labelled examples"
    return "\n\n".join(_format_head(head) for head in report.heads.values())


def _format_head(head: HeadReport) -> str:
    width = max(12, *(len(label) for label in head.labels))
    lines = [
        f"[{head.head}] accuracy {head.accuracy:.4f}  macro-F1 {head.macro_f1:.4f}  support {head.support}",
        f"{'':>{width}}  precision  recall      f1  support",
    ]
    rows = [(label, head.per_class[label]) for label in head.labels]
    rows += [(f"{name} avg", head.averages[name]) for name in ("micro", "macro", "weighted")]
    for i, (label, s) in enumerate(rows):
        if i == len(head.labels):
            lines.append("")
        lines.append(f"{label:>{width}}  {s.precision:9.4f}  {s.recall:6.4f}  {s.f1:6.4f}  {s.support:7d}")
    # Confusion matrix: columns are numbered to keep the table narrow; the row names the label.
    cell = max(4, len(str(max(max(row) for row in head.confusion))) + 1)
    lines += ["", "confusion matrix (rows = true, columns = predicted):"]
    lines.append(" " * (width + 5) + "".join(f"{j:>{cell}}" for j in range(len(head.labels))))
    for j, (label, row) in enumerate(zip(head.labels, head.confusion, strict=True)):
        lines.append(f"{label:>{width}} {j:>3} " + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)
