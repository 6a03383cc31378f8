"""When to retrain: a pure decision from the learner's counters and the clock.

A run starts only if all of these hold, checked in this order (the first that fails is the
reason reported):

1. no run is in progress (at most one at a time);
2. the cool-down since the end of the last run has passed;
3. at least ``min_new_labels`` new labelled examples arrived since the last run started;
4. the gate could decide: the run's recent labels (gate set and the holdout's share of the window)
   hold at least ``min_gate_examples`` answers (a run the gate must refuse for want of evidence is
   not started: its training would be wasted, and its labels wait for the next run);
5. a harmful drift was detected since the last run started; or a head of the serving model is
   below the accuracy floor (``below_floor``: its accuracy over its last ``floor_labels`` labels
   is under ``accuracy_floor``; this catches a model that is wrong from the start, whose error
   never *changes*, so no drift detector fires); or the last run was refused (``retry``: what
   started it was not answered; a refusal for want of evidence says "not yet", and the window
   has grown by ``min_new_labels`` since, so this is a new run on more labels, never the same
   window re-split); or ``retrain_every_labels`` > 0 and that many new labels arrived (a
   schedule, whatever the model's accuracy).

    >>> s = PolicySettings(min_new_labels=50, cooldown_s=600)
    >>> decide(s, now=1000.0, drift="sentiment_error", new_labels=80, running=False, last_end=None)
    Decision(start=True, reason='drift on sentiment_error')
    >>> decide(s, now=1000.0, drift="sentiment_error", new_labels=80, running=False, last_end=700.0).reason
    'cool-down: 300 s left'
    >>> decide(s, now=1000.0, drift=None, new_labels=80, running=False, last_end=None).reason
    'no drift, accuracy above the floor, 80/1000 labels to the schedule'
    >>> decide(s, now=1000.0, drift=None, new_labels=80, running=False, last_end=None,
    ...        below_floor="sentiment accuracy 0.520 < floor 0.800 over 100 labels").reason
    'accuracy floor: sentiment accuracy 0.520 < floor 0.800 over 100 labels'
    >>> decide(s, now=1000.0, drift=None, new_labels=80, running=False, last_end=None, retry="periodic").reason
    'retry: periodic'
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.learn.settings import PolicySettings

__all__ = ["RETRY", "Decision", "decide"]

#: The reason of a run started because the last one was refused: this prefix, then that run's trigger.
RETRY = "retry: "


@dataclass(frozen=True)
class Decision:
    start: bool
    reason: str
    """Why a run starts ("drift on <signal>", "accuracy floor: ...", "periodic") or what it waits for."""


def decide(
    settings: PolicySettings,
    *,
    now: float,
    drift: str | None,
    new_labels: int,
    running: bool,
    last_end: float | None,
    below_floor: str | None = None,
    gate_answers: int | None = None,
    min_gate_answers: int = 0,
    retry: str | None = None,
) -> Decision:
    """Whether to start a training run now.

    ``drift``: the signal of the first harmful drift since the last run started (None if none);
    ``new_labels``: labelled examples added since then; ``last_end``: clock time the last run
    ended (None if there was none); ``now`` on the same clock; ``below_floor``: why the serving
    model is under the accuracy floor (None if it is not, or the floor is off); ``gate_answers``:
    the answers the gate would decide on now (None: not checked), at least ``min_gate_answers``;
    ``retry``: the trigger of the last run if it was refused (None: it was not, or it was a drift).
    """
    if running:
        return Decision(False, "a run is in progress")
    if last_end is not None and now - last_end < settings.cooldown_s:
        return Decision(False, f"cool-down: {settings.cooldown_s - (now - last_end):.0f} s left")
    if new_labels < settings.min_new_labels:
        return Decision(False, f"waiting for labels: {new_labels}/{settings.min_new_labels}")
    if gate_answers is not None and gate_answers < min_gate_answers:
        return Decision(False, f"waiting for gate labels: {gate_answers}/{min_gate_answers} answers")
    if drift is not None:
        return Decision(True, f"drift on {drift}")
    if below_floor is not None:
        return Decision(True, f"accuracy floor: {below_floor}")
    if retry is not None:
        return Decision(True, f"{RETRY}{retry}")
    if settings.retrain_every_labels and new_labels >= settings.retrain_every_labels:
        return Decision(True, "periodic")
    schedule = f"{new_labels}/{settings.retrain_every_labels}" if settings.retrain_every_labels else "no"
    return Decision(False, f"no drift, accuracy above the floor, {schedule} labels to the schedule")
