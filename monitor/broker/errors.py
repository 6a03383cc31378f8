"""The broker package's exception and the helpers that build its messages."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

__all__ = ["LOG_TAIL_LINES", "BrokerError"]

LOG_TAIL_LINES = 30


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or reached; the message says why (with its log tail)."""


# --- jars -----------------------------------------------------------------------------------------


def _tail(lines: Iterable[str], n: int = LOG_TAIL_LINES) -> str:
    return "\n".join(list(lines)[-n:])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
