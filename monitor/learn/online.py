"""The online learner: labels in, drift watched, replay-buffer retraining in a worker thread.

It implements ``monitor.app.Learner`` and is the one place where drift reports meet the label
requests and the retrain policy (``learn`` modules do not import ``drift`` otherwise).

Per batch the run loop calls, in this order (see ``monitor.app`` for the commit order):

- ``observe(items, predictions)``: remember each prediction with its text (join cache); update
  the label-free watches (a harmful change queues the least confident recent items as label
  requests); items that carry labels inline are labelled examples right away;
- ``on_label(label)``: join a late label to its prediction by id; the prediction was made before
  the label was known, so "was it wrong" feeds the head's error watch (prequential);
- ``persist()``: write the replay buffer and the new-label window atomically, pick up a finished
  run, and start a run if the policy says so (``monitor.learn.policy``);
- ``drain_label_requests()``: the queued ``(id, JSON)`` label requests;
- ``close()``: stop a run in progress (it is recorded as cancelled), persist.

Error watches follow the serving version: when predictions start carrying a new version (a
promotion or a rollback) the watches start afresh, and labels for predictions of other versions
still become training examples but say nothing about the serving model.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from monitor.config import ConfigError, MonitorConfig
from monitor.drift import DriftTracker
from monitor.learn.buffer import ReplayBuffer, example_key, in_holdout, load_examples, save_examples
from monitor.learn.evidence import recent_answers
from monitor.learn.incremental import (
    FitFn,
    RunInput,
    RunResult,
    conclude,
    publish,
    train_challenger,
)
from monitor.learn.joins import JOINS_FILE, JoinCache, Seen, label_request
from monitor.learn.memory import release_freed_memory
from monitor.learn.policy import RETRY, decide
from monitor.learn.settings import LearnerSettings, parse_settings
from monitor.learn.trainer import fit
from monitor.learn.warmstart import seed_buffer
from monitor.metrics import Metrics
from monitor.model.checkpoint import META_FILE, CheckpointMeta
from monitor.records import Example, Label, NewsItem, Prediction
from monitor.registry import ModelRegistry, is_registry

__all__ = ["OnlineLearner", "build_learner"]

log = logging.getLogger(__name__)

BUFFER_FILE = "buffer.jsonl"
WINDOW_FILE = "window.jsonl"


class OnlineLearner:
    """Continual learning beside serving (module docstring). Build it with ``build_learner``."""

    def __init__(
        self,
        settings: LearnerSettings,
        registry: ModelRegistry,
        metrics: Metrics,
        *,
        state_dir: Path,
        topics: Sequence[str],
        sentiments: Sequence[str],
        device: str = "auto",
        clock: Callable[[], float] = time.monotonic,
        fit_fn: FitFn = fit,
        version_name: Callable[[int], str] | None = None,
        save_state: bool = True,
        event_time: bool = False,
        joins: JoinCache | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.state_dir = Path(state_dir)
        self.device = device
        self._topics, self._sentiments = frozenset(topics), frozenset(sentiments)
        self._clock = clock
        self._fit = fit_fn
        self._version_name = version_name  # run number -> version id (replays); None: timestamped ids
        self._save_state = save_state  # False: buffer and window live in memory only (replays)
        self._event_time = event_time  # True (replays): a passed run serves once its duration passed on the clock
        b = settings.buffer
        self.buffer = ReplayBuffer.load(self.state_dir / BUFFER_FILE, b.buffer_size, b.holdout_fraction, b.period_s,
                                        b.seed, b.holdout_size)
        serving = registry.current_version()
        seeded = seed_buffer(self.buffer, registry.path(serving)) if serving else 0
        if seeded:
            log.info("replay buffer seeded with %d examples of the training data of %s (%d replay, %d holdout)",
                     seeded, serving, len(self.buffer), len(self.buffer.holdout))
        header, window = load_examples(self.state_dir / WINDOW_FILE)
        self._window: OrderedDict[tuple[str, str, str], Example] = OrderedDict((example_key(e), e) for e in window)
        # The oldest examples of the window the last promotion was decided on (a prefix: the window is in
        # arrival order): they train, they are no longer gate evidence (evidence.fresh).
        self._spent = set(list(self._window)[:int(header.get("spent", 0))])
        self._spent_for: str = header.get("spent_for", "")  # the version they promoted; another serving: fair again
        self._run_keys: list[tuple[str, str, str]] = []  # the window of the run in flight
        self._new_labels = int(header.get("new_labels", 0))
        self._drift: str | None = header.get("drift")
        self._retry: str | None = header.get("retry")  # the trigger of a refused run: the next one needs no other
        # A run was refused for forgetting: every later run distils the new examples too (TrainSettings.protected).
        self._protect = bool(header.get("protect", False))
        self._runs = int(header.get("runs", 0))
        self.cache = joins if joins is not None else JoinCache(settings.drift.join_cache_size)
        self._requests: deque[tuple[str, bytes]] = deque(maxlen=max(1, 10 * settings.drift.label_requests))
        d = settings.drift
        self.drift = DriftTracker(d.detector, d.detector_params, d.label_free_detector, d.label_free_detector_params,
                                  d.label_free_signals, window=d.accuracy_window,
                                  version=registry.current_version() or "", floor_window=settings.policy.floor_labels)
        self._rng = random.Random(b.seed)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._finished: RunResult | None = None
        self._held: RunResult | None = None  # event time: passed the gate, serves once its duration has passed
        # Shadow labels (gate.shadow_labels): the labels that came after the run in flight started. Once its
        # challenger trained, the worker waits (``_awaiting``) until the main thread has collected enough of them
        # or shadow_wait_s has passed since the run started; ``_release`` ends the wait (once).
        self._shadow: list[Example] = []
        self._collecting = False  # whether new labels join _shadow
        self._awaiting = False
        self._shadow_ready = threading.Event()
        self._run_started: float = 0.0  # clock time the run in flight started
        self._last_result: RunResult | None = None
        self._last_started: float | None = None
        self._last_end: float | None = None
        # drift signal, new labels and retry (the refused trigger it answers) of the run in flight
        self._run_trigger: tuple[str | None, int, str | None] = (None, 0, None)
        self._dirty = bool(seeded)
        # Export zero series (Metrics does so for its own label sets), so increase() sees the first event.
        metrics.labels_joined.labels(outcome="invalid")
        for signal in self.drift.signals:
            metrics.drift_detections.labels(signal=signal)
        metrics.replay_buffer_size.set(len(self.buffer))
        metrics.training_active.set(0)
        metrics.shadow_labels.set(0)

    # --- read-only state --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a training run is training or being judged (not while its challenger waits for shadow labels)."""
        return self._worker is not None and self._worker.is_alive() and not self._awaiting

    @property
    def awaiting_shadow(self) -> bool:
        """Whether a trained challenger waits for its shadow labels (``gate.shadow_labels``)."""
        return self._awaiting

    @property
    def last_result(self) -> RunResult | None:
        """The outcome of the last finished run (picked up by ``persist``)."""
        return self._last_result

    @property
    def last_run_started(self) -> float | None:
        """Clock time (event time in a replay) the last finished run started; None before any."""
        return self._last_started

    @property
    def pending_drift(self) -> str | None:
        """The signal of a harmful drift not yet answered by a run (it persists across restarts)."""
        return self._drift

    @property
    def new_labels(self) -> int:
        """New labelled examples since the last run started (the policy's ``min_new_labels`` count)."""
        return self._new_labels

    @property
    def window(self) -> tuple[Example, ...]:
        """New labelled examples the next run trains on."""
        return tuple(self._window.values())

    # --- the Learner protocol -------------------------------------------------------------------------
    def observe(self, items: Sequence[NewsItem], predictions: Sequence[Prediction]) -> None:
        for item, prediction in zip(items, predictions, strict=True):
            if prediction.model_version != self.drift.version:
                log.info("predictions now come from model %s (was %s): drift watches start afresh",
                         prediction.model_version, self.drift.version)
            seen = Seen.of(item, prediction)
            self.cache.put(seen)
            for signal in self.drift.update_prediction(prediction.model_version, prediction.confidence,
                                                       prediction.sentiment):
                self._on_drift(signal)
                self._request_labels(f"{signal}_drift")
            if item.topic is not None or item.sentiment is not None:
                self.metrics.labels_joined.labels(outcome="inline").inc()
                self._learn(seen, item.topic, item.sentiment)

    def on_label(self, label: Label) -> None:
        seen = self.cache.get(label.id)
        if seen is None:
            outcome = "late" if self.cache.was_evicted(label.id) else "unknown"
            self.metrics.labels_joined.labels(outcome=outcome).inc()
            return
        if (label.topic is not None and label.topic not in self._topics) or (
            label.sentiment is not None and label.sentiment not in self._sentiments
        ):
            log.debug("label for %s names a class the model does not have: %s", label.id, label)
            self.metrics.labels_joined.labels(outcome="invalid").inc()
            return
        self.metrics.labels_joined.labels(outcome="joined").inc()
        self._learn(seen, label.topic, label.sentiment)

    def persist(self) -> None:
        self._collect()
        if self._dirty and self._save_state:
            self.buffer.save(self.state_dir / BUFFER_FILE)
            # A run in flight counts as not started: after a crash its trigger is still pending.
            drift, labels, retry = self._run_trigger
            spent = next((i for i, key in enumerate(self._window) if key not in self._spent), len(self._window))
            header = {"kind": "window", "new_labels": self._new_labels + labels, "drift": self._drift or drift,
                      "retry": self._retry or retry, "protect": self._protect,
                      "runs": self._runs, "spent": spent, "spent_for": self._spent_for}
            save_examples(self.state_dir / WINDOW_FILE, self._window.values(), header)
            self._dirty = False
        self._maybe_start()

    def drain_label_requests(self) -> list[tuple[str, bytes]]:
        out = list(self._requests)
        self._requests.clear()
        return out

    def close(self) -> None:
        self._stop.set()
        self._release()  # a challenger waiting for shadow labels is judged on those it has
        if self._worker is not None:
            self._worker.join(timeout=60.0)
        self._collect(final=True)
        self._dirty = True
        self.persist()

    # --- internals ----------------------------------------------------------------------------------
    def _on_drift(self, signal: str) -> None:
        self.metrics.drift_detections.labels(signal=signal).inc()
        watch = self.drift.watches[signal]
        log.warning("drift detected on %s after %d values (rolling mean %.3f), model %s",
                    signal, watch.count, watch.mean or 0.0, self.drift.version)

    def _request_labels(self, reason: str) -> None:
        d = self.settings.drift
        now = datetime.now(UTC)
        for seen in self.cache.most_uncertain(d.label_requests, d.label_request_pool):
            self._requests.append((seen.id, label_request(seen, reason, now)))

    def _learn(self, seen: Seen, topic: str | None, sentiment: str | None) -> None:
        for signal in self.drift.update_label(seen.model_version, seen.topic, seen.sentiment, topic=topic,
                                              sentiment=sentiment):
            self._on_drift(signal)
            self._drift = self._drift or signal
        for head, label in (("topic", topic), ("sentiment", sentiment)):
            accuracy = self.drift.accuracy(head)
            if label is not None and accuracy is not None and seen.model_version == self.drift.version:
                self.metrics.prequential_accuracy.labels(head=head).set(accuracy)
        example = seen.example(topic, sentiment)
        if not self.buffer.add(example):
            return  # a duplicate (re-read after a restart) or no label at all
        self._dirty = True
        self.metrics.replay_buffer_size.set(len(self.buffer))
        if self._collecting:
            with self._lock:
                self._shadow.append(example)
            self.metrics.shadow_labels.set(len(self._shadow))
            if len(self._shadow) >= self.settings.gate.shadow_labels:
                self._release()
        if not in_holdout(example, self.settings.buffer.holdout_fraction):
            self._window[example_key(example)] = example
            while len(self._window) > self.settings.buffer.window_size:
                self._spent.discard(self._window.popitem(last=False)[0])
            self._new_labels += 1

    def _maybe_start(self) -> None:
        if self._stop.is_set():
            return
        p, gs = self.settings.policy, self.settings.gate
        if self._awaiting and self._clock() >= self._run_started + gs.shadow_wait_s:
            self._release()  # the clock is event time in a replay: the wall-clock wait of the worker never ends
        floor = self.drift.below_floor(p.accuracy_floor) if p.accuracy_floor > 0 else None
        with self._lock:  # a run is over for the policy once its result is collected (its refusal, its retry)
            uncollected = self._finished is not None
        running = self.running or self._awaiting or self._held is not None or uncollected
        new = tuple(self._window.values())
        if self._spent and (self.registry.current_version() or self.drift.version) != self._spent_for:
            self._spent, self._dirty = set(), True  # a rollback: the model serving was not chosen on those labels
        answers = None  # counted only when it could matter (hashing the window on every batch is waste)
        if gs.gate_enabled and not running and self._new_labels >= p.min_new_labels:
            answers = recent_answers(new, self.buffer.holdout, gs.gate_fraction, frozenset(self._spent),
                                     gs.cross_fit) + gs.shadow_labels  # each shadow label is at least one answer
        decision = decide(p, now=self._clock(), drift=self._drift, new_labels=self._new_labels, running=running,
                          last_end=self._last_end, below_floor=floor, gate_answers=answers,
                          min_gate_answers=gs.min_gate_examples, retry=self._retry)
        if not decision.start:
            return
        n_replay = self.settings.train.replay_size(len(new))
        job = RunInput(
            serving_version=self.registry.current_version() or self.drift.version,
            new=new,
            replay=tuple(self.buffer.sample(n_replay, self._rng, exclude=set(self._window))),
            holdout=self.buffer.holdout,
            trigger=decision.reason,
            spent=frozenset(self._spent),
            seed=self.settings.buffer.seed + self._runs,
            version=self._version_name(self._runs + 1) if self._version_name is not None else "",
            protect=self._protect,
        )
        self._run_trigger = (self._drift, self._new_labels, self._retry)
        self._run_keys = list(self._window)
        self._run_started = self._clock()
        self._shadow, self._collecting = [], gs.shadow_labels > 0
        self._shadow_ready.clear()
        self._drift, self._retry, self._new_labels, self._runs, self._dirty = None, None, 0, self._runs + 1, True
        log.info("training run %d starts (%s): %d new + %d replay examples, %d holdout, method %s%s", self._runs,
                 decision.reason, len(job.new), len(job.replay), len(job.holdout), self.settings.train.method,
                 ", every example distilled (a run was refused for forgetting)" if job.protect else "")
        self.metrics.training_active.set(1)
        self._worker = threading.Thread(target=self._run, args=(job,), name="monitor-learner", daemon=True)
        self._worker.start()

    def _run(self, job: RunInput) -> None:
        """The worker thread: train and score a challenger; its verdict now, or once its shadow labels came."""
        def work() -> RunResult | None:
            trial = train_challenger(self.registry, job, self.settings, device=self.device,
                                     should_stop=self._stop.is_set, fit_fn=self._fit)
            if isinstance(trial, RunResult):
                return trial
            shadow: list[Example] = []
            if self.settings.gate.shadow_labels and not self._stop.is_set():
                shadow = self._wait_for_shadow(trial.version)
            return conclude(self.registry, trial, shadow, should_stop=self._stop.is_set,
                            publish_now=not self._event_time)
        self._work(work, job.serving_version)

    def _wait_for_shadow(self, version: str) -> list[Example]:
        """The worker thread, its challenger trained: wait for the shadow labels, return those collected."""
        gs = self.settings.gate
        with self._lock:
            self._awaiting = not self._shadow_ready.is_set()
        self.metrics.training_active.set(0)
        log.info("training run %s trained; its verdict waits for %d shadow labels (%d so far, at most %.0f s after "
                 "the run started)", version, gs.shadow_labels, len(self._shadow), gs.shadow_wait_s)
        # Live: a wall-clock timeout. A replay runs on event time: the main thread releases the wait (persist).
        timeout = None if self._event_time else max(0.0, self._run_started + gs.shadow_wait_s - self._clock())
        self._shadow_ready.wait(timeout)
        self._release()
        self.metrics.training_active.set(1)
        log.info("training run %s: judged on %d shadow labels besides its gate set", version, len(self._shadow))
        return list(self._shadow)

    def _release(self) -> None:
        """End the wait for shadow labels: collection stops, the worker goes on (the one transition, under the lock)."""
        with self._lock:
            self._collecting = False
            self._awaiting = False
            self._shadow_ready.set()

    def _work(self, step: Callable[[], RunResult | None], parent: str) -> None:
        """Run one step of a run; metrics are updated here (live), state changes in ``_collect``."""
        try:
            result = step()
        except Exception as err:  # a run records its own failures; this is the registry itself failing
            log.exception("training run could not record its outcome")
            result = RunResult("failed", "", parent, f"{type(err).__name__}: {err}", 0.0)
        try:
            if result is not None and not self._event_time:
                self._report(result)
        finally:
            release_freed_memory()  # the run's tensors are free now; without this the process grows each run
            if result is not None:
                with self._lock:
                    self._finished = result
            self.metrics.training_active.set(0)

    def _report(self, result: RunResult) -> None:
        """Metrics and the log line of a run as it ended."""
        m = self.metrics
        if result.outcome != "cancelled":
            m.training_runs.labels(outcome=result.outcome).inc()
            m.training_duration.observe(result.seconds)
        if result.outcome == "promoted":
            m.forgetting.set(result.numbers.get("forgetting") or 0.0)
            m.last_promotion.set(time.time())
        level = logging.INFO if result.outcome in ("promoted", "cancelled") else logging.WARNING
        log.log(level, "training run %s: %s (%s) in %.1f s; gate %s", result.version, result.outcome,
                result.reason, result.seconds, json.dumps(result.numbers, default=str))

    def _collect(self, final: bool = False) -> None:
        with self._lock:
            finished, self._finished = self._finished, None
        if finished is not None and self._event_time:
            self._held = finished
        result = finished
        if self._event_time:
            result = None
            held = self._held
            delay = self.settings.policy.backtest_training_s or (held.seconds if held is not None else 0.0)
            if held is not None and (final or self._clock() >= self._run_started + delay):
                self._held, result = None, publish(self.registry, held)
                self._report(result)
        if result is None:
            return
        self._last_result = result
        self._last_started = self._run_started
        self._last_end = self._clock()
        # A promotion does not empty the window: the next run trains on its labels again (from the new
        # serving model, which learnt them), gate share included, since the promoted model was chosen on
        # that share (evidence.fresh): the next gate judges on the labels that came after. Labels leave
        # the window by age (window_size). A refusal spends nothing: the serving model was not chosen on them.
        shadow = [example_key(e) for e in self._shadow]  # evidence of this verdict too
        self._shadow, self._collecting = [], False
        self.metrics.shadow_labels.set(0)
        if result.outcome == "promoted":
            self._spent = {key for key in self._run_keys + shadow if key in self._window}
            self._spent_for = result.version
        else:  # what started it is not resolved: a drift stays pending, any other trigger is retried
            # A challenger that forgot: this stream's labels conflict with the old domain's; from now on every
            # run distils the new examples too (sticky: the conflicting labels stay in the window).
            self._protect = self._protect or bool(result.numbers.get("forgets"))
            self._drift = self._drift or self._run_trigger[0]
            if self._run_trigger[0] is None:
                self._retry = self._retry or str(result.details.get("trigger") or "a failed run").removeprefix(RETRY)
        self._run_trigger, self._dirty = (None, 0, None), True


def build_learner(
    config: MonitorConfig,
    metrics: Metrics,
    *,
    clock: Callable[[], float] = time.monotonic,
    fit_fn: FitFn = fit,
    version_name: Callable[[int], str] | None = None,
    save_state: bool = True,
    event_time: bool = False,
) -> OnlineLearner:
    """The learner for ``config`` (``learning.enabled``); ``model.path`` must be a model registry.

    ``clock`` times the cool-down (a replay passes its event-time clock); ``fit_fn`` replaces the
    training loop (tests inject failures with it); ``version_name`` names the challenger of run N
    (a replay passes stable names, so that two replays agree; default: timestamped random ids);
    ``save_state=False`` keeps the replay buffer and window in memory only (a replay's state is thrown
    away, and saving it after every micro-batch would dominate the replay's time); ``event_time=True``
    (replays): a challenger that passed the gate serves only once ``clock`` has advanced by the run's
    duration (``backtest_training_s``, or its measured wall time) past the run's start, as it would live.
    """
    settings = parse_settings(config.learning.settings)
    path = Path(config.model.path)
    if not is_registry(path):
        raise ConfigError(
            f"model.path: continual learning (learning.enabled) needs a model registry (a directory with versions/ "
            f"and CURRENT) to save and promote retrained models; {path} is not one. Create it with "
            f"`monitor train --out {path}/versions/<name>` and `monitor model promote`"
        )
    registry = ModelRegistry(path)
    version = registry.current_version()
    if version is None:
        raise ConfigError(f"model.path: model registry {path} has no serving version (no CURRENT file)")
    meta = CheckpointMeta.from_dict(json.loads((registry.path(version) / META_FILE).read_text(encoding="utf-8")))
    encoder = json.loads((registry.path(version) / "config.json").read_text(encoding="utf-8"))
    layers = int(encoder.get("num_hidden_layers", 0))
    if settings.train.freeze_layers > layers:
        raise ConfigError(f"learning.settings.freeze_layers: {settings.train.freeze_layers} is more than the "
                          f"{layers} encoder layers of the serving model {version}")
    state_dir = Path(settings.buffer.state_dir) if settings.buffer.state_dir else path / "learner"
    store = config.learning  # durable label joins (monitor.learn.joins); a replay keeps them in memory
    size = settings.drift.join_cache_size if "join_cache_size" in store.settings else store.label_store_max_items
    joins = JoinCache(size, store.label_store_path or state_dir / JOINS_FILE,
                      retention_s=store.label_retention_s) if save_state else None
    return OnlineLearner(settings, registry, metrics, state_dir=state_dir, topics=meta.topics,
                         sentiments=meta.sentiments, device=config.model.device, clock=clock, fit_fn=fit_fn,
                         version_name=version_name, save_state=save_state, event_time=event_time, joins=joins)
