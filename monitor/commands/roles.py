"""``monitor serve``, ``monitor analytics``, ``monitor learn``: the daemon split into roles for scale-out.

All three take the same options and configuration as ``monitor run`` (the all-in-one):

- ``serve``: a stateless serving replica (decode, classify, publish results and dead letters);
  run N of them in one consumer group, up to the input partition count. It follows the model
  versions announced on ``kafka.versions_topic``.
- ``analytics``: the single owner of the sentiment index and the surge alerts, over all of
  ``predictions`` (a second instance waits).
- ``learn``: the single learner: label join, drift, training, gate, registry, announcements
  (a second instance waits). Run it where the GPU is.
"""

from __future__ import annotations

import argparse
import functools
import logging

from monitor.commands import run as run_command

__all__ = ["ROLES", "add_parser"]

log = logging.getLogger(__name__)

ROLES: dict[str, str] = {
    "serve": "a stateless serving replica: classify news/comments, publish results (scale out: run N)",
    "analytics": "the single owner of sentiment indexes and surge alerts over all predictions",
    "learn": "the single continual learner: joins labels, trains, gates, announces model versions",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    for role, summary in ROLES.items():
        p = subparsers.add_parser(role, help=summary, description=f"monitor {role}: {summary}.",
                                  epilog=run_command.epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
        run_command.add_arguments(p)
        p.set_defaults(func=functools.partial(run_command.start, role))
