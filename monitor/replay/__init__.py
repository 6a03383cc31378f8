"""Backtests: historical feeds through the daemon's own pipeline (and learner), with a report.

``feeds`` reads JSONL/CSV/Parquet into event-time ordered item and label events; ``schedule``
cuts them into the daemon's micro-batches; ``engine`` runs them directly, ``via_kafka`` through
the broker and ``monitor.app.Monitor``; ``outputs`` and ``report`` write the tables and the HTML
report; ``runner.replay`` does all of it. See docs/replay.md.
"""

__all__: list[str] = []
