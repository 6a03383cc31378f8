"""The ``monitor`` command line: one subcommand per module in ``monitor.commands``.

Each command module defines ``add_parser(subparsers)`` which registers its parser and
sets ``func`` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main"]

#: Subcommand modules under ``monitor.commands``, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("broker", "run", "feed", "train", "eval", "model", "replay")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitor",
        description="Streaming financial-sentiment monitor: Kafka in, BERT topic + sentiment out.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"monitor.commands.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
