"""Structured logs: one JSON object per line, with the summary's fields as keys."""

from __future__ import annotations

import json
import logging

import pytest

from monitor.logs import JsonFormatter, setup_logging


def test_json_lines_carry_the_summary_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", json_lines=True)
    logging.getLogger("monitor.app").info("summary: %d msg", 5, extra={"fields": {"rate": 2.5, "lag": 7}})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    body = json.loads(line)
    assert body["message"] == "summary: 5 msg"
    assert (body["level"], body["logger"], body["rate"], body["lag"]) == ("INFO", "monitor.app", 2.5, 7)
    assert body["time"].endswith("+00:00")
    setup_logging("INFO", json_lines=False)


def test_exceptions_are_kept_in_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, exc_info=True)
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]
