"""The stream side of the benchmark: the replay feed, the daemon's learner with a pre-filled buffer.

Phase ``p`` (0-based) is the event-time day ``START + p days``: its items arrive evenly between
06:00 and 12:00, each label ``LABEL_DELAY_S`` later. ``monitor.replay.runner.replay`` plays the
feed (phases 2..K) through the daemon's ``Pipeline``; with learning on, the learner is the
daemon's (``monitor.learn.online.build_learner``), its replay buffer saved beforehand with phase
1's stream, and its ``fit`` wrapped to record every training run.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from continual_scenarios import Scenario

from monitor.config import MonitorConfig, load_config
from monitor.learn import FitResult, TrainConfig, fit
from monitor.learn.buffer import ReplayBuffer
from monitor.learn.settings import parse_settings
from monitor.model import MultiTaskClassifier
from monitor.records import Example
from monitor.registry import ModelRegistry

__all__ = [
    "LABEL_DELAY_S",
    "START",
    "FitRecorder",
    "arrival",
    "example_id",
    "feed_rows",
    "learner_factory",
    "monitor_config",
    "phase_one_examples",
    "prequential",
    "replay_feed",
    "replay_figures",
]

START = datetime(2026, 1, 5, tzinfo=UTC)
DAY_S = 86_400.0
ITEMS_FROM_S, ITEMS_SPAN_S = 6 * 3600.0, 6 * 3600.0
"""Each phase's items arrive between 06:00 and 12:00 of its own day."""
LABEL_DELAY_S = (6 * 3600.0, 11.5 * 3600.0)
"""Label delays are uniform in this range (an annotation shift later): every label of a phase becomes
visible after the phase's last item and before the next day, so the whole phase is scored before
any of its labels is known, and the daemon's micro-batches stay full."""


def example_id(phase: int, i: int) -> str:
    """Stream id of example ``i`` of phase index ``phase`` (0-based): ``p<phase + 1>-<i>``."""
    return f"p{phase + 1}-{i:05d}"


def arrival(phase: int, i: int, n: int) -> datetime:
    """Event time of example ``i`` of ``n`` in phase index ``phase``: spread over 06:00-12:00 of its day."""
    return START + timedelta(seconds=phase * DAY_S + ITEMS_FROM_S + ITEMS_SPAN_S * i / n)


def feed_rows(scenario: Scenario, seed: int) -> list[dict[str, Any]]:
    """The replay feed of phases 2..K: one row per stream example, its label delayed (seeded).

    >>> from continual_scenarios import Phase
    >>> p = Phase("p", (Example("up", sentiment="positive"),), (Example("x", sentiment="neutral"),))
    >>> rows = feed_rows(Scenario("t", "test", "sentiment", (p, p)), seed=0)
    >>> [(r["id"], r["published_at"], r["sentiment"]) for r in rows]
    [('p2-00000', '2026-01-06T06:00:00+00:00', 'positive')]
    """
    rng = random.Random(seed)
    rows = []
    for phase, part in enumerate(scenario.phases[1:], start=1):
        for i, e in enumerate(part.stream):
            rows.append({"id": example_id(phase, i), "text": e.text, "source": e.source,
                         "published_at": arrival(phase, i, len(part.stream)).isoformat(),
                         scenario.head: getattr(e, scenario.head),
                         "label_delay_s": round(rng.uniform(*LABEL_DELAY_S), 1), "label_source": "benchmark"})
    return rows


def phase_one_examples(scenario: Scenario) -> list[Example]:
    """Phase 1's stream as the learner would have stored it (ids, times on day 0): the buffer's start."""
    stream = scenario.phases[0].stream
    return [replace(e, id=example_id(0, i), time=arrival(0, i, len(stream))) for i, e in enumerate(stream)]


def monitor_config(model_path: Path, settings: Mapping[str, Any] | None, *, device: str, max_length: int,
                   batch_size: int) -> MonitorConfig:
    """The default config serving ``model_path``, with learning on under ``settings`` (None: off)."""
    base = load_config(None, env={})
    model = replace(base.model, path=str(model_path), device=device, max_length=max_length,
                    inference_batch_size=batch_size)
    learning = replace(base.learning, enabled=settings is not None, settings=dict(settings or {}))
    return replace(base, model=model, learning=learning)


@dataclass
class FitRecorder:
    """A ``fit`` for the learner that records every result (and whether a teacher was used)."""

    calls: list[tuple[FitResult, bool, int]] = field(default_factory=list)
    """(result, whether a teacher was used, training examples) per call."""

    def __call__(self, model: MultiTaskClassifier, tokenizer: Any, train: Sequence[Example], val: Sequence[Example],
                 cfg: TrainConfig, **kwargs: Any) -> FitResult:
        result = fit(model, tokenizer, train, val, cfg, **{**kwargs, "progress": False})
        self.calls.append((result, kwargs.get("teacher") is not None, len(train)))
        return result


def learner_factory(prefill: Sequence[Example], recorder: FitRecorder) -> Callable[..., Any]:
    """The replay's learner: the daemon's, its buffer starting with ``prefill``, fits recorded."""

    def factory(config: MonitorConfig, clock: Any, metrics: Any) -> Any:
        from monitor.learn.online import BUFFER_FILE, build_learner

        settings = parse_settings(config.learning.settings)
        b = settings.buffer
        state_dir = Path(b.state_dir) if b.state_dir else Path(config.model.path) / "learner"
        buffer = ReplayBuffer(b.buffer_size, b.holdout_fraction, b.period_s, b.seed)
        for e in prefill:
            buffer.add(e)
        buffer.save(state_dir / BUFFER_FILE)
        initial = ModelRegistry(config.model.path).current_version()
        return build_learner(config, metrics, clock=clock, fit_fn=recorder,
                             version_name=lambda run: f"{initial}-r{run}")

    return factory


def replay_feed(feed: Path, out: Path, config: MonitorConfig, seed: int,
                factory: Callable[..., Any] | None) -> tuple[dict[str, Any], Any]:
    """Run ``monitor.replay`` on ``feed``; return its summary and the predictions table."""
    import pandas as pd

    from monitor.replay.runner import ReplayOptions, replay

    if out.exists():
        shutil.rmtree(out)
    options = ReplayOptions(feeds=(feed,), out=out, fmt="parquet", learn=factory is not None, progress=False,
                            seed=seed, learner_factory=factory)
    summary = replay(config, options)
    return summary, pd.read_parquet(out / summary["files"]["predictions"])


def prequential(predictions: Any, head: str, k: int) -> list[float | None]:
    """Per phase: the share of its stream items the serving model got right (phase 1: None)."""
    phase = predictions["id"].str.extract(r"^p(\d+)-", expand=False).astype(int) - 1
    correct = predictions[f"{head}_correct"]
    out: list[float | None] = [None] * k
    for p in range(1, k):
        values = correct[(phase == p) & correct.notna()]
        out[p] = round(float(values.astype(bool).mean()), 4) if len(values) else None
    return out


def replay_figures(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The replay's own figures kept in the results."""
    return {"items": summary["items"], "labels": summary["labels"], "batches": summary["batches"],
            "wall_seconds": summary["timing"]["wall_seconds"], "learning": summary["learning"]}
