"""The analytics role (``monitor analytics``): sentiment index and surge alerts over the whole stream.

Serving replicas each see a share of the input partitions, so none of them can tell a surge
in a topic: the analytics owner reads every partition of ``predictions`` (``OwnedSource``) and
is the one owner of every alert key. Only the instance holding the ``analytics`` lease runs;
a second one waits and takes over when the first leaves.

Its window state survives a restart without a store of its own: the source rewinds each
partition by ``analytics.rebuild_seconds`` of Kafka time before the last committed message, and
what was committed before is fed to the windows again with its alerts suppressed (they were
published before the restart), so a surge raises one alert, once — the alert id is derived
from the key and the event time it was raised at, so the rebuilt state names the same alert.

Results are at-least-once: an item re-read after a lost commit or a kill is published twice,
possibly by two replicas. Counted twice, such duplicates bias a topic's share (a burst of early
items counted again raised a false surge in the scale-out test), so each id counts once: the owner
remembers the last ``RECENT_IDS`` ids it counted and skips the others
(``monitor_duplicates_skipped_total``).

Order of one batch (at-least-once): poll -> decode each prediction (an undecodable record is
dead-lettered) -> skip an id already counted -> advance the watermark, windows and surge checks
item by item -> send the alerts -> flush -> commit.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from monitor.alerts import SurgeDetector, SurgeTracker, describe
from monitor.config import MonitorConfig
from monitor.metrics import Metrics
from monitor.records import Alert
from monitor.roles import OwnerLoop
from monitor.stream.source import RawMessage
from monitor.trends import SentimentTrends

__all__ = ["AnalyticsOwner", "PredictionError", "decode_prediction"]

log = logging.getLogger(__name__)


class PredictionError(ValueError):
    """A record on the predictions topic that is not a prediction."""


def decode_prediction(raw: bytes | None) -> tuple[str, float, str, tuple[str, ...], str, str]:
    """``(id, event time, topic, tickers, sentiment, model_version)`` of one result message."""
    try:
        body = json.loads((raw or b"").decode("utf-8"))
        if not isinstance(body, dict):
            raise PredictionError("not a JSON object")
        at = datetime.fromisoformat(str(body["published_at"])).timestamp()
        tickers = tuple(str(t) for t in body.get("tickers") or ())
        return (str(body["id"]), at, str(body["topic"]), tickers, str(body["sentiment"]),
                str(body.get("model_version", "")))
    except PredictionError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as err:
        raise PredictionError(f"{type(err).__name__}: {err}") from err


RECENT_IDS = 200_000
"""Ids remembered for de-duplication: hours of a busy feed, far more than one rebalance re-reads."""


class RecentIds:
    """The last ``size`` ids seen, for telling a first result from a re-published one."""

    def __init__(self, size: int = RECENT_IDS) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()  # oldest first

    def first_time(self, item_id: str) -> bool:
        """True the first time ``item_id`` is offered (among the last ``size`` ids), False after."""
        if item_id in self._seen:
            return False
        self._seen[item_id] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


class AnalyticsOwner(OwnerLoop):
    """Alerts and the sentiment index of the whole prediction stream; ``run()`` until ``stop()``."""

    role = "analytics owner"

    def __init__(self, config: MonitorConfig, *, metrics: Metrics, source: Any, sink: Any, lease: Any = None) -> None:
        super().__init__(config, metrics, source, sink, lease)
        self.tracker = SurgeTracker(SurgeDetector(config.alerts), config.metrics.watch_tickers,
                                    SentimentTrends(config.metrics.windows_seconds))
        self.rebuilt = 0
        self.recent = RecentIds()

    def handle(self, messages: Sequence[RawMessage]) -> list[Alert]:
        """One batch, in the order of the module docstring; returns the alerts sent."""
        sent: list[Alert] = []
        for msg in messages:
            try:
                item_id, at, topic, tickers, sentiment, version = decode_prediction(msg.value)
            except PredictionError as err:
                self.sink.dead_letter(msg, "invalid_json", f"not a prediction: {err}")
                self.metrics.dead_lettered.labels(reason="invalid_json").inc()
                continue
            if not self.recent.first_time(item_id):
                self.metrics.duplicates_skipped.inc()
                continue
            alerts = self.tracker.add(at, topic, tickers, sentiment, item_id, version)
            if self.source.replayed(msg):
                self.rebuilt += 1
                continue
            for alert in alerts:
                self.sink.alert(alert)
                sent.append(alert)
        self.deliver(messages)
        self._record(sent)
        return sent

    def _record(self, alerts: Sequence[Alert]) -> None:
        m = self.metrics
        m.record_windows(self.tracker.snapshot(), alerts)
        for a in alerts:
            (log.warning if a.state == "raised" else log.info)(describe(a))
        m.last_consumed.set(time.time())

    def close(self) -> None:
        try:
            self.sink.flush()
        finally:
            self.sink.close()
            self.source.close()
