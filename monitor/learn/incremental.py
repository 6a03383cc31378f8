"""One retrain run: fresh copy of the serving model -> fit -> gate -> promote, reject or fail.

``retrain`` is what the learner's worker thread runs, beside serving. It never touches the
serving model object: it loads the serving checkpoint from the registry again and trains that
copy. Steps:

1. load ``versions/<serving>``; keep an untouched copy of it: the serving model, used as the LwF
   teacher (method ``replay_distill``) and as the gate's reference;
2. split the new labelled window by a hash of each text (``evidence.in_gate``): ``gate_fraction`` of it is
   the gate set, the rest is the new training data (the same example always falls on the same
   side, so the gate set of a window is fixed, grows as labels come, and a rejected window is
   never re-split and retried); examples a promotion was already decided on (``job.spent``) are
   no longer evidence and all train (see ``evidence.fresh``); add the replay sample (methods ``replay*``);
   ``val_fraction`` of that (0 by default: every label trains) is the early-stopping validation set;
3. ``fit`` with the lower layers frozen, the distillation teacher (method ``replay_distill``), the
   time budget and the learner's stop flag;
4. predict the gate set and the replay holdout with both models at the serving checkpoint's
   truncation length (``meta.max_length``, the one serving uses); ``gate.judge`` on the paired
   answers: "better" on the recent labels (the gate set, plus the holdout's examples from the
   window's time span: the same stream's share set aside, never trained on either), "not
   forgetting" on the holdout and each of its strata, against the serving model and, after
   promotions, against the model its lineage started from (``ModelRegistry.origin``), which also answers the
   recent labels (``better_than_origin``);
   With ``gate.cross_fit`` every fresh label is evidence instead: ``cross_fit_folds`` fold models,
   each trained from the serving model without one fold of the window (``evidence.fold_of``), answer for
   that fold (and for that fold of the holdout's recent share); the challenger trains on the whole window; a run
   the fold models show no better is refused before the challenger trains;
   passed (without cross-fitting, with ``gate.refit``, off by default): the gate share is spent now, so a
   second model trains from the serving model on the whole window, gate share included; it is promoted if
   it passes the forgetting test too (the "better" evidence is the judged challenger's), else the judged
   challenger is;
   ``train_challenger`` ends here with a ``Trial``; ``conclude`` gives the verdict, on the trial's
   evidence plus its **shadow labels** (``gate.shadow_labels``: labels that arrived after the run
   started, which neither model trained on, answered by both; the learner collects them and calls
   ``conclude`` once they are in; ``retrain`` concludes at once, without any);
5. passed: save the checkpoint into the registry (parent = serving version, gate numbers in its
   metrics, a replay seed of its training data); ``publish`` then points ``CURRENT`` at it, unless
   ``CURRENT`` moved meanwhile (e.g. a rollback); every daemon watching the registry then
   hot-swaps between batches. The live learner publishes at once, a backtest when the run's
   duration has passed in event time.

Refused: nothing is saved (with ``keep_rejected``, the challenger's checkpoint goes to
``<registry>/rejected/<version>``, where nothing can make it serve, for inspecting the decision).
Any exception (``TrainingDiverged`` on a NaN loss included) ends the run as ``failed``: nothing is
saved and the serving model stays. Every outcome is recorded in the registry history.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.learn.buffer import stratum
from monitor.learn.evidence import fold_of, fresh, in_gate, recent_holdout, split
from monitor.learn.gate import Answer, Paired, Verdict, judge, paired
from monitor.learn.settings import LearnerSettings
from monitor.learn.trainer import FitResult, TrainConfig, fit
from monitor.learn.warmstart import trained_sources, write_seed
from monitor.model.checkpoint import CheckpointMeta, load_checkpoint, new_version_id, save_checkpoint
from monitor.model.network import MultiTaskClassifier
from monitor.model.onnx_export import ensure_export
from monitor.model.predictor import Predictor
from monitor.records import Example
from monitor.registry import ModelRegistry

__all__ = ["RunInput", "RunResult", "Trial", "conclude", "publish", "retrain", "train_challenger"]

log = logging.getLogger(__name__)

FitFn = Callable[..., FitResult]


@dataclass(frozen=True)
class RunInput:
    """What one run trains and judges on; snapshots, so the learner can go on meanwhile."""

    serving_version: str
    new: tuple[Example, ...]
    """The new labelled window (never holdout examples)."""
    replay: tuple[Example, ...]
    """Replay sample from the buffer, disjoint from ``new``."""
    holdout: tuple[Example, ...]
    """The buffer's holdout, for the forgetting check."""
    trigger: str
    """Why the run started (the policy's reason)."""
    spent: frozenset[tuple[str, str, str]] = frozenset()
    """Keys (``example_key``) of the window's examples the last promotion was decided on: they train, they are
    no longer gate evidence (see ``fresh``)."""
    seed: int = 0
    version: str = ""
    """The challenger's version id; empty: a fresh ``new_version_id()`` (replays pass stable names)."""
    protect: bool = False
    """An earlier run was refused for forgetting: train with ``TrainSettings.protected()`` (every example distilled)."""


@dataclass(frozen=True)
class RunResult:
    outcome: str
    """promoted, rejected, failed or cancelled."""
    version: str
    """The challenger's version id (a directory in the registry only when promoted)."""
    parent: str
    reason: str
    seconds: float
    numbers: dict[str, Any] = field(default_factory=dict)
    """The gate's numbers (improvement, forgetting, accuracies, counts)."""
    fit: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    """parent, trigger, method, seconds: what the registry history records besides the gate numbers."""


def _fingerprint(examples: Sequence[Example]) -> str:
    digest = hashlib.sha256()
    for e in sorted(examples, key=lambda e: (e.text, e.topic or "", e.sentiment or "")):
        digest.update(f"{e.text}\t{e.topic}\t{e.sentiment}\n".encode())
    return digest.hexdigest()[:16]


def _predicted(model: MultiTaskClassifier, tokenizer: Any, examples: Sequence[Example], max_length: int) -> list:
    if not examples:
        return []
    device = next(model.parameters()).device
    predictor = Predictor(model, tokenizer, "gate", device=device, max_length=max_length, batch_size=64)
    return [Answer(s.topic, s.sentiment, s.topic_probs, s.sentiment_probs)
            for s in predictor.predict([e.text for e in examples], [e.source for e in examples])]


@dataclass(frozen=True)
class _Held:
    """The paired answers of the serving model and one challenger on the holdout."""

    strata: dict[str, Paired]
    origin: dict[str, Paired] | None
    """The same against the lineage's first model (None: the serving model is that model)."""
    recent: Paired
    """Those of the holdout examples that are recent evidence (``recent_holdout``)."""
    recent_origin: Paired | None
    """The same recent ones against the lineage's first model (None: the serving model is that model)."""


def _holdout_answers(holdout: Sequence[Example], serving: Sequence[tuple[str, str]],
                     challenger: Sequence[tuple[str, str]], by_origin: Sequence[tuple[str, str]] | None,
                     is_recent: Sequence[bool], period_s: float) -> _Held:
    strata: dict[str, Paired] = {}
    origin: dict[str, Paired] = {}
    recent = recent_origin = Paired()
    for i, (e, s, c) in enumerate(zip(holdout, serving, challenger, strict=True)):
        answers = paired([e], [s], [c])
        name = stratum(e, period_s)
        strata[name] = strata.get(name, Paired()) + answers
        if is_recent[i]:
            recent = recent + answers
        if by_origin is not None:
            against_origin = paired([e], [by_origin[i]], [c])
            origin[name] = origin.get(name, Paired()) + against_origin
            if is_recent[i]:
                recent_origin = recent_origin + against_origin
    return _Held(strata, origin or None, recent, recent_origin if by_origin is not None else None)


@dataclass
class Trial:
    """A challenger that trained and was scored on its run's evidence, waiting for the verdict (``conclude``)."""

    job: RunInput
    version: str
    settings: LearnerSettings
    model: MultiTaskClassifier
    serving: MultiTaskClassifier
    tokenizer: Any
    meta: CheckpointMeta
    """The serving checkpoint's (backbone, dropout, truncation length)."""
    cfg: TrainConfig
    rng: random.Random
    """The run's random draws, continued by the refit (as before the run was split in two)."""
    train: list[Example]
    replay: list[Example]
    recent: Paired
    """The "better" evidence so far: the gate set and the holdout's recent share (or the cross-fitted answers)."""
    recent_origin: Paired | None
    """The same answers, the gate set's and the holdout's, paired with the lineage's first model's (None: the
    serving model is that model, or the gate is cross-fitted)."""
    held: _Held
    holdout_serving: list[tuple[str, str]]
    by_origin: list[tuple[str, str]] | None
    origin_version: str
    fit_numbers: dict[str, Any]
    train_on: Callable[[MultiTaskClassifier, list[Example], list[Example]], FitResult]
    seconds: float
    """Compute time so far (training and scoring; a wait for shadow labels is not counted)."""
    refused: Verdict | None = None
    """Cross-fitted and refused before the challenger trained (it trained only to be kept: ``keep_rejected``)."""


def _ended(registry: ModelRegistry, job: RunInput, version: str, method: str, outcome: str, reason: str,
           seconds: float, **extra: Any) -> RunResult:
    """The run's result, recorded in the registry history unless it is a promotion (``publish`` records those)."""
    details = {"parent": job.serving_version, "trigger": job.trigger, "method": method,
               "seconds": round(seconds, 3)}
    if outcome != "promoted":
        registry.record(outcome, version, reason=reason, **details, gate=extra.get("numbers"))
    return RunResult(outcome, version, job.serving_version, reason, seconds, details=details, **extra)


def retrain(
    registry: ModelRegistry,
    job: RunInput,
    settings: LearnerSettings,
    *,
    device: str = "auto",
    should_stop: Callable[[], bool] | None = None,
    fit_fn: FitFn = fit,
    publish_now: bool = True,
) -> RunResult:
    """Run one retrain and decide at once, without shadow labels (module docstring); never raises.

    ``publish_now=False``: a challenger that passed the gate is saved but not yet serving; its
    result says ``promoted`` and ``publish(registry, result)`` makes it serve.
    """
    trial = train_challenger(registry, job, settings, device=device, should_stop=should_stop, fit_fn=fit_fn)
    if isinstance(trial, RunResult):
        return trial
    return conclude(registry, trial, (), should_stop=should_stop, publish_now=publish_now)


def train_challenger(
    registry: ModelRegistry,
    job: RunInput,
    settings: LearnerSettings,
    *,
    device: str = "auto",
    should_stop: Callable[[], bool] | None = None,
    fit_fn: FitFn = fit,
) -> Trial | RunResult:
    """Steps 1-4 of a run up to the verdict: the scored ``Trial``, or the run's end (failed, cancelled, refused
    by the cross-fitted gate before training). Never raises."""
    started = time.perf_counter()
    version = job.version or new_version_id()
    parent = job.serving_version
    ts, gs = settings.train.protected() if job.protect else settings.train, settings.gate

    def result(outcome: str, reason: str, **extra: Any) -> RunResult:
        return _ended(registry, job, version, ts.method, outcome, reason, time.perf_counter() - started, **extra)

    try:
        loaded = load_checkpoint(registry.path(parent))
        model, tokenizer = loaded.model, loaded.tokenizer
        max_length = loaded.meta.max_length
        serving = copy.deepcopy(model)
        rng = random.Random(job.seed)
        evidence = fresh(job.new, job.spent)
        replay = list(job.replay) if ts.method in ("replay", "replay_distill") else []
        if gs.cross_fit:  # every fresh label is gate evidence, answered by a model that did not train on it
            gate_set = evidence
            new_train = list(job.new)
        else:
            gate_set = [e for e in evidence if in_gate(e, gs.gate_fraction)]
            gated = {id(e) for e in gate_set}
            new_train = [e for e in job.new if id(e) not in gated]
        train, val = split(new_train + replay, ts.val_fraction, rng)
        if not train:
            return result("failed", f"no training examples ({len(job.new)} new, {len(job.replay)} replay)")
        trained = trained_sources(registry.path(parent), replay)  # a source of new_train not among them gets offsets
        cfg = TrainConfig(
            epochs=ts.epochs, batch_size=ts.batch_size, lr_encoder=ts.lr_encoder, lr_head=ts.lr_head,
            max_length=max_length, patience=ts.patience, freeze_embeddings=ts.freeze_embeddings,
            freeze_layers=ts.freeze_layers, seed=job.seed, distill_weight=ts.distill_weight,
            distill_temperature=ts.distill_temperature, distill_congruent=ts.congruent, device=device,
            max_seconds=settings.policy.max_training_s,
            offset_sources=ts.offset_sources(new_train, trained, model.source_offsets), lr_offsets=ts.source_offset_lr,
        )
        teacher = serving if ts.method == "replay_distill" else None
        origin_version = registry.origin(parent)
        anchoring = teacher is not None and ts.distill_anchor
        first = None  # the lineage's first model, when the serving model descends from it
        if origin_version != parent:
            first = load_checkpoint(registry.path(origin_version)).model
        anchor = first if anchoring else None

        def train_on(m: MultiTaskClassifier, train: list[Example], val: list[Example]) -> FitResult:
            return fit_fn(m, tokenizer, train, val, cfg, teacher=teacher, distill_rows=ts.distill_rows(train, replay),
                          anchor=anchor, progress=False, should_stop=should_stop)

        is_recent = recent_holdout(evidence, job.holdout)
        crossed: Paired | None = None  # the cross-fitted "better" evidence (gate.cross_fit)
        refused: tuple[Verdict, float] | None = None  # refused on it, decided at (perf_counter)
        fold_fits: list[dict[str, Any]] = []
        if gs.cross_fit:
            recent_held = [e for e, r in zip(job.holdout, is_recent, strict=True) if r]
            crossed, folds = Paired(), gs.cross_fit_folds
            for k in range(folds):
                held_out = [e for e in gate_set if fold_of(e, folds) == k]  # the holdout never trains anyway
                left_out = {id(e) for e in held_out}
                fold_new = [e for e in new_train if id(e) not in left_out]
                fold_train, fold_val = split(fold_new + replay[:ts.replay_size(len(fold_new))], ts.val_fraction, rng)
                fold_model = copy.deepcopy(serving)
                fold_fit = train_on(fold_model, fold_train, fold_val)
                fold_fits.append({"held_out": len(held_out), "train_examples": len(fold_train),
                                  "epochs": fold_fit.epochs_run, "seconds": round(fold_fit.seconds, 3)})
                if _stopped(fold_fit, should_stop):
                    return result("cancelled", "stopped at shutdown", fit={"folds": fold_fits})
                answered = held_out + [e for e in recent_held if fold_of(e, folds) == k]
                crossed = crossed + paired(answered, _predicted(serving, tokenizer, answered, max_length),
                                           _predicted(fold_model, tokenizer, answered, max_length))
                del fold_model
            early = judge(gs, recent=crossed, holdout={})
            if not early.promote:  # not better: the whole-window model need not train
                if not gs.keep_rejected:
                    return result("rejected", early.reason, numbers=early.numbers, fit={"folds": fold_fits})
                refused = (early, time.perf_counter())  # trained only to be kept; its time is not the run's
        fitted = train_on(model, train, val)
        fit_numbers = {"epochs": fitted.epochs_run, "best_score": fitted.best_score, "stop": fitted.stop_reason,
                       "train_examples": len(train), "new_train_examples": len(new_train),
                       "val_examples": len(val), "gate_examples": len(gate_set), "spent_examples": len(job.spent),
                       "holdout_examples": len(job.holdout), "seconds": round(fitted.seconds, 3),
                       "distill_on": ts.distill_on, "distill_weight": ts.distill_weight}
        if fold_fits:
            fit_numbers["folds"] = fold_fits
        if _stopped(fitted, should_stop):
            return result("cancelled", "stopped at shutdown", fit=fit_numbers)

        serving.to(next(model.parameters()).device)
        scored = {}
        for name, m in (("serving", serving), ("challenger", model)):
            scored[name] = (_predicted(m, tokenizer, gate_set if crossed is None else [], max_length),
                            _predicted(m, tokenizer, job.holdout, max_length))
        by_origin = gate_origin = None
        if first is not None:  # forgetting (and "better", on the gate set) is also measured against the lineage's start
            first.to(next(model.parameters()).device)
            by_origin = _predicted(first, loaded.tokenizer, job.holdout, max_length) if job.holdout else None
            gate_origin = _predicted(first, loaded.tokenizer, gate_set, max_length) if crossed is None else None
        del first
        # The holdout's share of the same labels (as recent as the window, never trained on either)
        # is recent evidence too: with a few hundred labels the gate set alone cannot tell a gain
        # of a few points from noise. Cross-fitted, the fold models answered all of it.
        recent = crossed if crossed is not None else paired(gate_set, scored["serving"][0], scored["challenger"][0])
        held = _holdout_answers(job.holdout, scored["serving"][1], scored["challenger"][1], by_origin, is_recent,
                                settings.buffer.period_s)
        recent_origin = None
        if crossed is None:
            recent = recent + held.recent
            if gate_origin is not None:
                recent_origin = paired(gate_set, gate_origin, scored["challenger"][0])
                recent_origin = recent_origin + (held.recent_origin or Paired())
        seconds = (refused[1] if refused else time.perf_counter()) - started
        return Trial(job, version, settings, model, serving, tokenizer, loaded.meta, cfg, rng, train, replay, recent,
                     recent_origin, held, scored["serving"][1], by_origin, origin_version, fit_numbers, train_on,
                     seconds, refused[0] if refused else None)
    except Exception as err:  # a failed run must leave serving alone; the error is recorded
        log.exception("training run %s (parent %s) failed", version, parent)
        return result("failed", f"{type(err).__name__}: {err}")


def _stopped(fitted: FitResult, should_stop: Callable[[], bool] | None) -> bool:
    return fitted.stop_reason == "should_stop" or (should_stop is not None and should_stop())


def conclude(
    registry: ModelRegistry,
    trial: Trial,
    shadow: Sequence[Example],
    *,
    should_stop: Callable[[], bool] | None = None,
    publish_now: bool = True,
) -> RunResult:
    """Step 5 of a run: the verdict, on the trial's evidence plus ``shadow`` (labels that came after it trained,
    answered by both models), then save and publish, or refuse. Never raises."""
    started = time.perf_counter()
    job, version, settings, model = trial.job, trial.version, trial.settings, trial.model
    gs, method, max_length = settings.gate, settings.train.method, trial.meta.max_length

    def result(outcome: str, reason: str, **extra: Any) -> RunResult:
        seconds = trial.seconds + (0.0 if trial.refused else time.perf_counter() - started)
        return _ended(registry, job, version, method, outcome, reason, seconds, **extra)

    try:
        recent = trial.recent
        if shadow:  # never trained on by either model: as fair as the gate set, and usually far more of it
            recent = recent + paired(shadow, _predicted(trial.serving, trial.tokenizer, shadow, max_length),
                                     _predicted(model, trial.tokenizer, shadow, max_length))
        held = trial.held
        verdict = trial.refused or judge(gs, recent=recent, holdout=held.strata, origin=held.origin,
                                         recent_origin=trial.recent_origin)
        verdict.numbers.update(shadow_labels=len(shadow), shadow_answers=recent.n - trial.recent.n)
        fit_numbers, train = trial.fit_numbers, trial.train
        if verdict.promote and gs.refit and not gs.cross_fit and fit_numbers["gate_examples"]:
            # The gate share was evidence and is now spent (``fresh``): a model trained on the whole window,
            # the same recipe from the same start, is promoted instead when it too passes the forgetting test.
            refit_model = copy.deepcopy(trial.serving)
            refit_train, refit_val = split(list(job.new) + trial.replay, settings.train.val_fraction, trial.rng)
            refitted = trial.train_on(refit_model, refit_train, refit_val)
            if _stopped(refitted, should_stop):
                return result("cancelled", "stopped at shutdown", fit=fit_numbers)
            again = _holdout_answers(job.holdout, trial.holdout_serving,
                                     _predicted(refit_model, trial.tokenizer, job.holdout, max_length),
                                     trial.by_origin, recent_holdout(fresh(job.new, job.spent), job.holdout),
                                     settings.buffer.period_s)
            second = judge(gs, recent=recent, holdout=again.strata, origin=again.origin,
                           recent_origin=trial.recent_origin)
            second.numbers.update(shadow_labels=len(shadow), shadow_answers=verdict.numbers["shadow_answers"])
            refit: dict[str, Any] = {"train_examples": len(refit_train), "epochs": refitted.epochs_run,
                                     "seconds": round(refitted.seconds, 3), "promoted": second.promote}
            if second.promote:
                model, train = refit_model, refit_train
                verdict = Verdict(True, f"{second.reason}; refit on the whole window ({len(job.new)} new labels)",
                                  second.numbers)
            else:
                refit["refused"] = second.reason
            fit_numbers["refit"] = refit
        if trial.by_origin is not None:
            verdict.numbers["origin"] = trial.origin_version
        loaded = trial.meta
        meta = CheckpointMeta(
            version=version, parent=job.serving_version, backbone=loaded.backbone, topics=model.topics,
            sentiments=model.sentiments, data_fingerprint=_fingerprint(train),
            metrics={"gate": verdict.numbers, "fit": fit_numbers, "method": method, "trigger": job.trigger},
            train_config=trial.cfg.to_dict(), dropout=loaded.dropout, max_length=max_length,
        )
        if not verdict.promote:
            if gs.keep_rejected:
                save_checkpoint(model, trial.tokenizer, meta, registry.rejected_path(version))
            return result("rejected", verdict.reason, numbers=verdict.numbers, fit=fit_numbers)
        save_checkpoint(model, trial.tokenizer, meta, registry.path(version))
        ensure_export(registry.path(version), model, trial.tokenizer, max_length)  # never raises (torch serves)
        write_seed(registry.path(version), train, seed=job.seed, source=f"retrain of {job.serving_version}",
                   data_fingerprint=meta.data_fingerprint, holdout_per_head=0)  # its data is in the buffer
        passed = result("promoted", verdict.reason, numbers=verdict.numbers, fit=fit_numbers)
    except Exception as err:  # a failed run must leave serving alone; the error is recorded
        log.exception("training run %s (parent %s) failed", version, job.serving_version)
        return result("failed", f"{type(err).__name__}: {err}")
    return publish(registry, passed) if publish_now else passed


def publish(registry: ModelRegistry, passed: RunResult) -> RunResult:
    """Make the challenger of a ``promoted`` (gate passed) result serve, unless ``CURRENT`` moved meanwhile.

    Returns the result as it ended: promoted, or rejected (a rollback or another promotion won).
    """
    if passed.outcome != "promoted":
        return passed
    details = {**passed.details, "seconds": round(passed.seconds, 3)}
    current = registry.current_version()
    if current != passed.parent:
        reason = f"serving version changed during training (now {current})"
        shutil.rmtree(registry.path(passed.version), ignore_errors=True)  # rejected challengers are not kept
        registry.record("rejected", passed.version, reason=reason, **details, gate=passed.numbers)
        return RunResult("rejected", passed.version, passed.parent, reason, passed.seconds, passed.numbers,
                         passed.fit, passed.details)
    registry.set_current(passed.version, event="promoted", reason=passed.reason, **details, gate=passed.numbers)
    return passed
