"""The ``monitor`` command line: one subcommand per module in ``monitor.commands``.

Each command module defines ``add_parser(subparsers)`` which registers its parser(s) and
sets ``func`` (a callable taking the parsed namespace and returning an exit code). Only the
module of the command being run is imported, so ``monitor --help`` and light commands do not
pay for torch; the top-level help lists every command from :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["COMMANDS", "build_parser", "main"]

#: Subcommand -> (module under ``monitor.commands``, one-line help), in the order ``--help`` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "broker": ("broker", "run the local Apache Kafka broker (KRaft, single node)"),
    "run": ("run", "consume news/comments from Kafka, classify, publish results, metrics and alerts"),
    "serve": ("roles", "scale-out: a stateless serving replica (classify and publish; run N of them)"),
    "analytics": ("roles", "scale-out: the single owner of sentiment indexes and surge alerts"),
    "learn": ("roles", "scale-out: the single continual learner (labels, training, gate, model versions)"),
    "feed": ("feed", "send a JSONL feed to the input topics (labels to the labels topic)"),
    "tail": ("feed", "print messages of a topic (e.g. predictions, alerts, dead-letter)"),
    "train": ("train", "fine-tune the topic + sentiment classifier and write a checkpoint"),
    "eval": ("eval", "classification report and confusion matrix of a checkpoint on labelled data"),
    "model": ("model", "list, add, promote or roll back model versions in a registry"),
    "replay": ("replay", "backtest historical feeds through the same pipeline, with a report"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``command`` given) one where only that command's module is imported."""
    parser = argparse.ArgumentParser(
        prog="monitor",
        description="Streaming financial-sentiment monitor: Kafka in, BERT topic + sentiment out.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = {m for name, (m, _) in COMMANDS.items() if command is None or name == command}
    for module_name in dict.fromkeys(m for m, _ in COMMANDS.values()):
        if module_name in wanted:
            importlib.import_module(f"monitor.commands.{module_name}").add_parser(subparsers)
    for name, (module_name, summary) in COMMANDS.items():
        if module_name not in wanted:  # listed in --help, parsed only when it is the command
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
