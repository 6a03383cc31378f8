"""One scenario, every method: the base model, the stream replays, joint retraining, the scores.

- **base**: ``fit`` from the backbone on phase 1's stream (a seeded, stratified 15 % of it for
  early stopping). It is the serving model when the stream starts; ``static`` never changes it.
- **learner methods** (``naive``, ``replay``, ``replay_distill``): phases 2..K become
  one feed (``monitor replay`` format) and run through ``monitor.replay.runner.replay`` with
  learning on: every item is classified by the daemon's ``Pipeline`` with the model serving at
  that moment, its label reaches the daemon's ``OnlineLearner`` after a seeded random delay
  (``continual_stream``: feed, pre-filled buffer, recorded fits), and
  the learner's retrain job (``monitor.learn.incremental.retrain``: replay sample from the
  class-balanced buffer, distillation, frozen layers, gate, registry promotion) runs on the
  real code path. The replay buffer starts filled with phase 1's stream, as a daemon that served
  phase 1 would have it. Controlled phase boundaries come from the learner's own periodic
  policy: it retrains every ``update_size`` labels (``min_new_labels`` = ``retrain_every_labels``),
  and each phase is one event-time day, its labels all visible before the next day starts, so
  run ``r`` trains exactly on phase ``r + 1``. The gate is opened (``gate_enabled`` false)
  so that every method's model is promoted and measured; the gate's
  numbers are still recorded.
- **static**: the same feed replayed without learning.
- **joint**: at each phase boundary, ``fit`` from the backbone on every stream seen so far (the
  upper bound; not a learner method, so it is trained directly).

Accuracy matrices are filled for the phases seen (``j <= i``); ``None`` above the diagonal.
Prequential accuracy of a phase = accuracy of the serving model's predictions on the phase's
stream items, each made before its label was known (read from the replay's predictions table;
for joint, the previous joint model scored on the phase's stream before retraining).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from continual_scenarios import Scenario
from continual_stream import (
    FitRecorder,
    feed_rows,
    learner_factory,
    monitor_config,
    phase_one_examples,
    prequential,
    replay_feed,
    replay_figures,
)
from transformers import AutoTokenizer

from monitor.config import MonitorConfig
from monitor.datasets import fingerprint, split_examples
from monitor.learn import FitResult, TrainConfig, evaluate, fit
from monitor.model import CheckpointMeta, MultiTaskClassifier, load_checkpoint, resolve_device, save_checkpoint
from monitor.records import Example
from monitor.registry import ModelRegistry

__all__ = [
    "LEARNER_METHODS",
    "METHODS",
    "Base",
    "MethodRun",
    "RunSettings",
    "Update",
    "run_scenario",
    "train_from_backbone",
]

METHODS: tuple[str, ...] = ("static", "naive", "replay", "replay_distill", "joint")
LEARNER_METHODS: tuple[str, ...] = ("naive", "replay", "replay_distill")
VAL_FRACTION = 0.15
Tick = Callable[[str], None]


@dataclass(frozen=True)
class RunSettings:
    base: TrainConfig
    """Training of the base model (phase 1) and of every joint retraining."""
    learner: Mapping[str, Any]
    """``learning.settings`` shared by the learner methods (the phase-boundary policy is added per scenario)."""
    methods: Mapping[str, Mapping[str, Any]]
    """Learner method -> its own settings (at least ``method``)."""
    max_length: int = 48
    device: str = "auto"
    seed: int = 0
    eval_batch_size: int = 64
    keep: bool = False
    """Keep the replays' model registries (every promoted version is a full checkpoint)."""


@dataclass(frozen=True)
class Update:
    """One training run at a phase boundary."""

    phase: int
    """1-based phase trained on."""
    outcome: str
    """promoted / rejected / failed (learner), trained (joint)."""
    fit_seconds: float | None
    """The training loop (``fit``) only."""
    job_seconds: float | None
    """The whole retrain job (learner methods): load, fit, gate scoring, checkpoint save."""
    examples_trained: int
    """Forward + backward passes of training examples (``FitResult.examples_seen``)."""
    teacher_forwards: int
    """Extra forward passes of the distillation teacher."""
    train_examples: int
    epochs_run: int
    stop_reason: str
    gate: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodRun:
    method: str
    accuracy: list[list[float | None]]
    macro_f1: list[list[float | None]]
    prequential: list[float | None]
    """Per phase (phase 1 None: the base model trained on it)."""
    updates: list[Update]
    replay: Mapping[str, Any] = field(default_factory=dict)
    """The replay's own figures (items, labels, batches, drift detections, training runs, wall seconds)."""


@dataclass
class Base:
    """The phase-1 model of a scenario, its registry and its scores on every test set."""

    model: MultiTaskClassifier
    tokenizer: Any
    registry: Path
    fit: FitResult
    scores: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    """(scenario key, test phase index) -> (accuracy, macro-F1)."""


def train_from_backbone(
    backbone: Path, examples: Sequence[Example], cfg: TrainConfig, seed: int
) -> tuple[MultiTaskClassifier, Any, FitResult, int]:
    """A fresh model (seeded heads) ``fit`` on ``examples``, 15 % of them (stratified) for early
    stopping; returns the model, its tokenizer, the fit result and the training-set size."""
    train, val = split_examples(examples, VAL_FRACTION, seed=seed)
    torch.manual_seed(seed)
    model = MultiTaskClassifier.from_backbone(backbone)
    tokenizer = AutoTokenizer.from_pretrained(str(backbone))
    return model, tokenizer, fit(model, tokenizer, train, val, cfg, progress=False), len(train)


def _scores(model: MultiTaskClassifier, tokenizer: Any, examples: Sequence[Example], head: str,
            rs: RunSettings) -> tuple[float, float]:
    """(accuracy, macro-F1) of ``head`` on ``examples``."""
    report = evaluate(model, examples, tokenizer, batch_size=rs.eval_batch_size, max_length=rs.max_length)
    scores = report.heads[head]
    return scores.accuracy, scores.macro_f1


def _matrices(rows: Sequence[Sequence[tuple[float, float]]], k: int) -> tuple[list[list[float | None]], ...]:
    """Rows of (accuracy, macro-F1) for the phases seen -> two K x K matrices, None above the diagonal."""
    acc: list[list[float | None]] = [[None] * k for _ in range(k)]
    f1: list[list[float | None]] = [[None] * k for _ in range(k)]
    for i, row in enumerate(rows):
        for j, (a, f) in enumerate(row):
            acc[i][j], f1[i][j] = round(a, 4), round(f, 4)
    return acc, f1


# --- the methods -----------------------------------------------------------------------------------------
def _base_row(base: Base, key: str, i: int) -> list[tuple[float, float]]:
    return [base.scores[key, j] for j in range(i + 1)]


def _config(model_path: Path, rs: RunSettings, settings: Mapping[str, Any] | None) -> MonitorConfig:
    return monitor_config(model_path, settings, device=rs.device, max_length=rs.max_length,
                          batch_size=rs.eval_batch_size)


def _run_static(scenario: Scenario, base: Base, feed: Path, work: Path, rs: RunSettings) -> MethodRun:
    k = len(scenario.phases)
    summary, predictions = replay_feed(feed, work / "static", _config(base.registry, rs, None), rs.seed, None)
    acc, f1 = _matrices([_base_row(base, scenario.key, i) for i in range(k)], k)
    return MethodRun("static", acc, f1, prequential(predictions, scenario.head, k), [], replay_figures(summary))


def _run_learner(method: str, scenario: Scenario, base: Base, feed: Path, work: Path, rs: RunSettings) -> MethodRun:
    k, n = len(scenario.phases), scenario.update_size
    settings = {**rs.learner, **rs.methods[method], "min_new_labels": n, "retrain_every_labels": n,
                "window_size": n, "cooldown_s": 0.0, "seed": rs.seed}
    recorder = FitRecorder()
    out = work / method
    summary, predictions = replay_feed(feed, out, _config(base.registry, rs, settings), rs.seed,
                                       learner_factory(phase_one_examples(scenario), recorder))
    registry = ModelRegistry(out / "registry")
    runs = [event for event in registry.history() if "trigger" in event]
    if len(runs) != k - 1:
        raise RuntimeError(f"{method} on scenario {scenario.key}: expected {k - 1} training runs at the phase "
                           f"boundaries, the learner ran {len(runs)}: {[r.get('reason') for r in runs]}")
    if len(recorder.calls) != len(runs):
        raise RuntimeError(f"{method} on scenario {scenario.key}: {len(runs)} runs but {len(recorder.calls)} fits "
                           f"(a run failed before training: {[r.get('reason') for r in runs]})")
    device = str(resolve_device(rs.device))
    rows, updates, model = [_base_row(base, scenario.key, 0)], [], base.model
    for i, (run, (result, teacher, n_train)) in enumerate(zip(runs, recorder.calls, strict=True), start=1):
        if run["event"] == "promoted":  # else the serving model stays
            model = load_checkpoint(registry.path(str(run["version"])), device=device).model
        rows.append([_scores(model, base.tokenizer, scenario.phases[j].test, scenario.head, rs)
                     for j in range(i + 1)])
        gate = run.get("gate") or {}
        updates.append(Update(
            phase=i + 1, outcome=str(run["event"]), fit_seconds=round(result.seconds, 2),
            job_seconds=round(float(run["seconds"]), 2), examples_trained=result.examples_seen,
            teacher_forwards=n_train if teacher else 0, train_examples=n_train,  # fit computes them once
            epochs_run=result.epochs_run, stop_reason=result.stop_reason,
            gate={key: gate.get(key) for key in ("improvement", "recent_serving", "recent_challenger")},
        ))
    if not rs.keep:
        shutil.rmtree(out / "registry" / "versions", ignore_errors=True)
    acc, f1 = _matrices(rows, k)
    return MethodRun(method, acc, f1, prequential(predictions, scenario.head, k), updates, replay_figures(summary))


def _run_joint(scenario: Scenario, base: Base, static: MethodRun, backbone: Path, rs: RunSettings,
               tick: Tick) -> MethodRun:
    k, head = len(scenario.phases), scenario.head
    rows, updates = [_base_row(base, scenario.key, 0)], []
    prequential: list[float | None] = [None, static.prequential[1]] + [None] * (k - 2)
    previous: tuple[MultiTaskClassifier, Any] = (base.model, base.tokenizer)
    for i in range(1, k):
        if i >= 2:  # the joint model of the last boundary on this phase's stream, before retraining
            prequential[i] = round(_scores(*previous, scenario.phases[i].stream, head, rs)[0], 4)
        seen = [e for p in scenario.phases[: i + 1] for e in p.stream]
        model, tokenizer, result, n_train = train_from_backbone(backbone, seen, rs.base, rs.seed)
        rows.append([_scores(model, tokenizer, scenario.phases[j].test, head, rs) for j in range(i + 1)])
        updates.append(Update(phase=i + 1, outcome="trained", fit_seconds=round(result.seconds, 2), job_seconds=None,
                              examples_trained=result.examples_seen, teacher_forwards=0,
                              train_examples=n_train, epochs_run=result.epochs_run,
                              stop_reason=result.stop_reason))
        previous = (model, tokenizer)
        tick(f"{scenario.key}: joint, phase {i + 1}")
    acc, f1 = _matrices(rows, k)
    return MethodRun("joint", acc, f1, prequential, updates)


# --- the scenario ----------------------------------------------------------------------------------------
def _base(scenario: Scenario, backbone: Path, rs: RunSettings, bases: dict[str, Base], work: Path,
          tick: Tick) -> Base:
    """The phase-1 model: trained once per distinct phase-1 stream (a and c share theirs), saved as a registry."""
    key = fingerprint(scenario.phases[0].stream)
    base = bases.get(key)
    if base is None:
        model, tokenizer, result, _ = train_from_backbone(backbone, scenario.phases[0].stream, rs.base, rs.seed)
        root = work / "bases" / key.split(":")[-1][:12]
        if root.exists():
            shutil.rmtree(root)
        registry = ModelRegistry(root).init()
        version = f"base-{scenario.key}"
        meta = CheckpointMeta(version=version, parent=None, backbone=str(backbone), topics=model.topics,
                              sentiments=model.sentiments, data_fingerprint=key, train_config=rs.base.to_dict(),
                              max_length=rs.max_length)
        save_checkpoint(model, tokenizer, meta, registry.path(version))
        registry.set_current(version, reason="continual benchmark: base model trained on phase 1")
        base = bases[key] = Base(model, tokenizer, root, result)
        tick(f"{scenario.key}: base model")
    for j, phase in enumerate(scenario.phases):
        base.scores[scenario.key, j] = _scores(base.model, base.tokenizer, phase.test, scenario.head, rs)
    return base


def run_scenario(
    scenario: Scenario,
    methods: Sequence[str],
    backbone: Path,
    rs: RunSettings,
    work: Path,
    *,
    bases: dict[str, Base] | None = None,
    tick: Tick = lambda _: None,
) -> tuple[Base, dict[str, MethodRun]]:
    """Every method of ``methods`` on ``scenario`` (module docstring); ``tick`` after each step."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown} (known: {', '.join(METHODS)})")
    bases = {} if bases is None else bases
    base = _base(scenario, backbone, rs, bases, work, tick)
    work = work / scenario.key
    work.mkdir(parents=True, exist_ok=True)
    feed = work / "feed.jsonl"
    feed.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in feed_rows(scenario, rs.seed)),
                    encoding="utf-8")
    runs: dict[str, MethodRun] = {}
    # static first: joint reuses its prequential accuracy on phase 2 (the same base model).
    runs["static"] = _run_static(scenario, base, feed, work, rs)
    tick(f"{scenario.key}: static")
    for method in methods:
        if method in LEARNER_METHODS:
            runs[method] = _run_learner(method, scenario, base, feed, work, rs)
            tick(f"{scenario.key}: {method}")
        elif method == "joint":
            runs[method] = _run_joint(scenario, base, runs["static"], backbone, rs, tick)
    return base, {m: runs[m] for m in methods if m in runs}
