"""The continual-learning benchmark's machinery (bench/continual*.py) on a hand-made matrix and a tiny model.

The metrics are checked against numbers worked out by hand; the runner runs every method end to
end (base model, replays through the daemon's learner, joint retraining, summary, plots) on a
tiny random BERT and a synthetic three-phase stream, in seconds.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.learn import TrainConfig
from monitor.records import Example

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import continual  # noqa: E402
from continual_metrics import (  # noqa: E402
    average_accuracy,
    average_accuracy_curve,
    backward_transfer,
    forgetting,
    forgetting_curve,
)
from continual_plots import plot_all  # noqa: E402
from continual_runs import METHODS, RunSettings, run_scenario  # noqa: E402
from continual_scenarios import Phase, Scenario, Sizes  # noqa: E402
from continual_stream import feed_rows  # noqa: E402

# Rows: after phase i; columns: test set of phase j; None = not evaluated (not seen yet).
R: list[list[float | None]] = [
    [0.6, None, None, None],
    [0.9, 0.7, None, None],
    [0.8, 0.9, 0.5, None],
    [0.4, 0.6, 0.6, 0.9],
]


def test_average_accuracy_is_the_mean_of_the_last_row_over_the_phases_seen() -> None:
    assert average_accuracy(R) == pytest.approx((0.4 + 0.6 + 0.6 + 0.9) / 4)
    assert average_accuracy(R, after=1) == pytest.approx((0.9 + 0.7) / 2)
    assert average_accuracy_curve(R) == pytest.approx([0.6, 0.8, (0.8 + 0.9 + 0.5) / 3, 0.625])


def test_forgetting_takes_the_best_earlier_accuracy_after_learning_each_phase() -> None:
    # phase 1: best 0.9 (after phase 2), now 0.4; phase 2: best 0.9 (after phase 3), now 0.6;
    # phase 3: best 0.5, now 0.6 (an improvement counts as -0.1).
    assert forgetting(R) == pytest.approx((0.5 + 0.3 - 0.1) / 3)
    assert forgetting_curve(R) == pytest.approx([0.0, (0.6 - 0.9), ((0.9 - 0.8) + (0.7 - 0.9)) / 2, 0.7 / 3])
    # Lopez-Paz & Ranzato's backward transfer compares with the accuracy right after learning instead.
    assert backward_transfer(R) == pytest.approx(((0.4 - 0.6) + (0.6 - 0.7) + (0.6 - 0.5)) / 3)


def test_metrics_refuse_a_matrix_with_a_seen_phase_missing() -> None:
    with pytest.raises(ValueError, match=r"\[1\]\[0\]"):
        forgetting([[0.9, None], [None, 0.8]])
    with pytest.raises(ValueError, match="square"):
        average_accuracy([[0.9, None]])


def test_targets_are_the_issue_s_accuracy_forgetting_and_last_update_time_limits() -> None:
    def method(acc: float, forget: float, last: float | None) -> dict[str, Any]:
        return {"average_accuracy": acc, "forgetting": forget, "last_update_vs_joint": last,
                "time_vs_joint": 1.0, "examples_vs_joint": 1.0}

    verdicts = {t["target"].split(" ")[1]: t["met"] for t in continual.targets(
        "b", {"replay_distill": method(0.775, 0.021, 0.2), "joint": method(0.80, 0.05, 1.0)}, phases=4)}
    assert verdicts == {"average": True, "forgetting": False, "last": True}
    verdicts = {t["target"].split(" ")[1]: t["met"] for t in continual.targets(
        "b", {"replay_distill": method(0.765, 0.0, 0.3), "joint": method(0.80, 0.05, 1.0)}, phases=4)}
    assert verdicts == {"average": False, "forgetting": True, "last": False}
    # Fewer than 4 phases: the time target does not apply.
    names = [t["target"] for t in continual.targets(
        "a", {"replay_distill": method(0.8, 0.0, 5.0), "joint": method(0.8, 0.0, 1.0)}, phases=2)]
    assert not any("time" in n for n in names)


def test_sizes_scale_every_count_but_the_number_of_chunks() -> None:
    half = Sizes().scaled(0.5)
    assert (half.news_stream, half.topic_test, half.chunks) == (125, 20, 8)


# --- end to end on a tiny model --------------------------------------------------------------------------
WORDS = {  # each phase reads sentiment from its own words: a model trained on phase 1 is wrong on the others
    1: {"positive": ("rises", "gains"), "negative": ("falls", "drops"), "neutral": ("holds", "steady")},
    2: {"positive": ("soars", "jumps"), "negative": ("plunges", "slides"), "neutral": ("today", "flat")},
    3: {"positive": ("bullish", "beats"), "negative": ("bearish", "misses"), "neutral": ("week", "month")},
}


def _examples(phase: int, n: int, seed: int) -> tuple[Example, ...]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sentiment = rng.choice(("positive", "negative", "neutral"))
        words = [rng.choice(("oil", "bank", "apple")), rng.choice(WORDS[phase][sentiment]), rng.choice(("the", "on"))]
        out.append(Example(" ".join(words), sentiment=sentiment, source=f"wire{phase}"))
    return tuple(out)


def test_every_method_runs_end_to_end_on_a_tiny_model(tiny_backbone: Path, tmp_path: Path) -> None:
    phases = tuple(Phase(f"p{p}", _examples(p, 40, p), _examples(p, 15, 100 + p)) for p in (1, 2, 3))
    scenario = Scenario("t", "tiny three-phase shift", "sentiment", phases)
    rows = feed_rows(scenario, seed=0)
    assert len(rows) == 80 and rows[0]["id"] == "p2-00000" and rows[-1]["id"] == "p3-00039"
    assert all(6 * 3600 <= r["label_delay_s"] <= 11.5 * 3600 for r in rows)

    fast = {"epochs": 2, "batch_size": 16, "lr_encoder": 1e-2, "lr_head": 3e-2, "freeze_layers": 0,
            "buffer_size": 100}
    rs = RunSettings(
        base=TrainConfig(epochs=4, batch_size=16, lr_encoder=3e-3, lr_head=1e-2, max_length=16, device="cpu"),
        learner={**continual.LEARNER, **fast},
        methods={**continual.METHOD_SETTINGS, "replay_distill": {"method": "replay_distill", "freeze_layers": 1}},
        max_length=16, device="cpu",
    )
    ticks: list[str] = []
    bases: dict[str, Any] = {}
    base, runs = run_scenario(scenario, METHODS, tiny_backbone, rs, tmp_path / "work", bases=bases,
                              tick=ticks.append)
    assert list(runs) == list(METHODS)
    assert len(ticks) == 1 + 1 + 3 + 2  # base, static, three learner methods, joint at two boundaries
    for name, run in runs.items():
        assert len(run.accuracy) == 3 and all(len(row) == 3 for row in run.accuracy)
        assert all(run.accuracy[i][j] is None for i in range(3) for j in range(3) if j > i), name
        assert all(run.accuracy[i][j] is not None for i in range(3) for j in range(3) if j <= i), name
        assert run.prequential[0] is None and None not in run.prequential[1:], name
        assert len(run.updates) == (0 if name == "static" else 2), name
    assert runs["static"].accuracy[2][0] == runs["static"].accuracy[0][0]  # never retrained
    for name in ("naive", "replay", "replay_distill"):
        assert [u.outcome for u in runs[name].updates] == ["promoted", "promoted"], name
        assert runs[name].replay["learning"]["training_runs"] == {"promoted": 2}
        assert all(u.examples_trained > 0 for u in runs[name].updates)
    assert all(u.teacher_forwards > 0 for u in runs["replay_distill"].updates)
    assert all(u.teacher_forwards == 0 for u in runs["replay"].updates)
    # replay trains on the new window plus as many replayed examples; naive on the new window only
    assert runs["replay"].updates[0].train_examples > 1.5 * runs["naive"].updates[0].train_examples
    # joint retrains on everything seen: phases 1-2, then 1-3
    assert runs["joint"].updates[1].train_examples > runs["joint"].updates[0].train_examples

    # A second scenario with the same phase 1 reuses the base model, but scores it on its own test sets.
    twice = (phases[0], Phase("p1 again", phases[1].stream, phases[0].test))
    again = Scenario("u", "phase 1 twice", "sentiment", twice)
    shared, static_only = run_scenario(again, ["static"], tiny_backbone, rs, tmp_path / "work", bases=bases)
    assert shared is base and len(ticks) == 7  # no second base model
    assert static_only["static"].accuracy[1] == [runs["static"].accuracy[0][0]] * 2

    block = continual.summarize(scenario, base, runs)
    assert set(block["methods"]) == set(METHODS)
    assert block["methods"]["joint"]["time_vs_joint"] == 1.0
    assert block["methods"]["static"]["examples_trained"] == 0
    assert block["methods"]["static"]["forgetting"] == 0.0
    for m in block["methods"].values():
        assert len(m["forgetting_curve"]) == 3 and m["forgetting_curve"][0] == 0.0
    paths = plot_all({"t": block}, tmp_path / "plots")
    assert [p.name for p in paths] == ["continual_matrices.png", "continual_summary.png", "continual_curves.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)


# --- the domain-adaptation harness (bench/continual_adapt.py) ----------------------------------------------
def test_paired_difference_and_its_standard_error_by_hand() -> None:
    from continual_adapt import paired

    before, after = [1, 1, 0, 0, 1], [1, 0, 1, 1, 1]  # differences 0, -1, +1, +1, 0: mean 0.2
    p = paired(before, after)
    assert (p["n"], p["before"], p["after"], p["diff"]) == (5, 0.6, 0.8, 0.2)
    # sample variance of (0, -1, 1, 1, 0) = (0.04 + 1.44 + 0.64 + 0.64 + 0.04) / 4 = 0.7; se = sqrt(0.7 / 5)
    assert p["se"] == round((0.7 / 5) ** 0.5, 4)


def test_warm_seed_is_per_class_x_classes_per_head_in_the_data_mix_or_balanced_and_seeded() -> None:
    from continual_adapt import warm_seed

    train = [Example(f"t{i}", topic=("A" if i % 3 else "B")) for i in range(30)]
    train += [Example(f"s{i}", sentiment=("positive" if i % 4 else "negative")) for i in range(20)]

    def counts(seed: list[Example]) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in seed:
            key = e.topic or e.sentiment or ""
            out[key] = out.get(key, 0) + 1
        return out

    assert counts(warm_seed(train, 4, seed=1, mix="balanced")) == {"A": 4, "B": 4, "positive": 4, "negative": 4}
    seed = warm_seed(train, 4, seed=1)  # the data's mix: 8 a head, in whatever proportions the draw gives
    mixed = counts(seed)
    assert mixed["A"] + mixed["B"] == 8 == mixed["positive"] + mixed.get("negative", 0)
    assert warm_seed(train, 4, seed=1) == seed and warm_seed(train, 4, seed=2) != seed
    skewed = [Example(f"a{i}", topic="A") for i in range(300)] + [Example(f"b{i}", topic="B") for i in range(30)]
    assert counts(warm_seed(skewed, 20, seed=0)).get("B", 0) < 12  # about 4 of 40, where balanced takes 20
    assert len(warm_seed(train, 100, seed=0)) == len(train)  # a class smaller than per_class gives all it has


def _run(event: str, reason: str, new: tuple[float, float], tweets: tuple[float, float] = (0.0, 0.005)) -> dict:
    return {"event": event, "reason": reason, "held_out": {
        "new_domain": {"diff": new[0], "se": new[1]},
        "tweets_sentiment": {"diff": tweets[0], "se": tweets[1]}, "tweets_topic": {"diff": 0.0, "se": 0.005}}}


def test_the_gate_verdicts_are_read_against_the_held_out_data() -> None:
    from adapt_replay import agreement, verdicts

    assert verdicts(_run("promoted", "better: ...", (0.05, 0.01))) == ("better", "better")
    assert verdicts(_run("rejected", "not better: ...", (0.01, 0.01))) == ("not better", "no clear change")
    assert verdicts(_run("rejected", "not better: ...", (-0.03, 0.01))) == ("not better", "worse")
    # 3 points lost on tweets, 0.5 of standard error: the loss's 90 % lower bound (2.4) is above 2 points
    assert verdicts(_run("promoted", "better: ...", (0.05, 0.01), tweets=(-0.03, 0.005))) == ("better", "forgets")
    assert verdicts(_run("rejected", "forgetting: ...", (0.05, 0.01), tweets=(-0.01, 0.005))) == ("forgets", "better")
    assert verdicts({"event": "rejected", "reason": "not better", "held_out": None}) is None
    rows = [{"runs": [_run("promoted", "better", (0.05, 0.01)), _run("promoted", "better", (0.04, 0.01)),
                      _run("rejected", "not better", (0.0, 0.01)), {"event": "rejected", "held_out": None}]}]
    table = agreement(rows).splitlines()
    assert table[2] == "| better | 2 | 0 | 0 | 0 |" and table[3] == "| not better | 0 | 1 | 0 | 0 |"
    assert table[-1].startswith("(1 runs without held-out scores")


def test_the_forgetting_test_is_set_beside_the_fresh_tweets() -> None:
    from adapt_replay import forgetting_check

    def scored(event: str, gate_loss: float, tweets: float, stratum: str = "twitter_sentiment@?") -> dict:
        return {**_run(event, "", (0.04, 0.01), tweets=(tweets, 0.005)),
                "gate": {"forgetting": gate_loss, "forgetting_stratum": stratum, "holdout_answers": 1263}}

    rows = [{"runs": [scored("promoted", 0.002, -0.004), scored("promoted", 0.004, -0.010),
                      scored("rejected", 0.030, -0.020), scored("rejected", 0.050, -0.060, stratum="wire@1"),
                      {"event": "rejected", "held_out": None}]}]
    lines = forgetting_check(rows).splitlines()
    assert len(lines) == 5  # header, rule, all, promoted, rejected: another stratum's run and the unscored one left out
    assert lines[2] == "| ~1250 | all | 3 | +1.20 | +1.13 | -0.07 (0.48) | 0.95 |", lines[2]  # worked by hand
    assert lines[3] == "| ~1250 | promoted | 2 | +0.30 | +0.70 | +0.40 (0.20) | nan |", lines[3]  # 2: no correlation
    assert lines[4].startswith("| ~1250 | rejected | 1 | +3.00 | +2.00 | -1.00 (nan) | nan |"), lines[4]


def test_the_replay_table_summarises_each_variant_and_the_gate_s_discordance() -> None:
    from adapt_replay import table

    def row(seed: int, gap: float, tweets: float, events: list[str], variant: str = "a") -> dict:
        gate = {"challenger_only": 6, "serving_only": 2, "recent_answers": 50}
        runs = [{**_run(event, "", (0.04, 0.01)), "gate": gate} for event in events]
        for run_ in runs:
            run_["held_out"]["new_domain"].update(won=90, lost=30, n=1000)
        return {"variant": variant, "split": "tune", "seed": seed, "gap_recovered": gap, "runs": runs,
                "forgetting": {"tweets_sentiment": {"diff": tweets}}}

    lines = table([row(1, 0.6, -0.012, ["rejected", "promoted"]), row(0, 0.2, 0.004, ["promoted"]),
                   row(0, 0.0, 0.0, [], variant="b")]).splitlines()
    assert lines[2] == ("| a | tune | 0 1 | 0.200 0.600 | 0.40 (0.20) | +0.4 -1.2 | -0.4 | -1.2 | 1 of 2 | 2 of 3 |")
    assert lines[3].startswith("| b | tune | 0 | 0.000 | 0.00 (nan) |")
    assert lines[-2] == "gate sets of 3 runs: 18 won, 6 lost of 150 answers (12.0% / 4.0%); won 75% of the discordant"
    assert lines[-1].startswith("held-out new domain of 3 runs: 270 won, 90 lost of 3000 answers")


def test_the_replay_plot_draws_one_dot_a_stream(tmp_path: Path) -> None:
    import matplotlib.image
    from adapt_replay import plot

    rows = [{"variant": v, "domain": "semeval", "settings": "{}", "gap_recovered": g,
             "forgetting": {"tweets_sentiment": {"diff": t}}} for v, g, t in (("a", 0.8, -0.004), ("b", None, 0.01))]
    plot(rows, tmp_path / "p.png")
    assert matplotlib.image.imread(str(tmp_path / "p.png")).shape[:2] == (540, 1140)  # 9.5 x 4.5 in at 120 dpi


def test_the_frontier_reads_a_recipe_its_accuracy_below_joint_and_its_time(tmp_path: Path) -> None:
    import json

    from continual_frontier import label, plot, point

    assert label({"epochs": 8, "freeze_layers": 3, "method": "replay_distill"}) == "defaults"
    result = {"seed": 2, "learner_settings": {"replay_distill": {"epochs": 2, "freeze_layers": 3, "lr_head": 0.003}},
              "scenarios": {"b": {
                  "methods": {"replay_distill": {"accuracy": [[0.9, None], [0.7, 0.8]]},
                              "joint": {"accuracy": [[0.9, None], [0.8, 0.8]]}},
                  "targets": [{"target": "replay_distill forgetting", "value": 0.02},
                              {"target": "replay_distill last update's training time / joint's at that phase",
                               "value": 0.4}]}}}
    (tmp_path / "r.json").write_text(json.dumps(result))
    got = point(tmp_path / "r.json")
    assert (got["recipe"], got["seed"], got["below_joint_pt"], got["forgetting_pt"], got["time_vs_joint"]) == (
        "epochs 2, lr_head 0.003", 2, 5.0, 2.0, 0.4)
    plot([got], tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


# --- the demo feed (sample_data/generate.py) -----------------------------------------------------------------
FLIPS = {"rate cut": "negative", "cuts rates": "negative", "restructuring": "positive", "to fund AI": "positive",
         "to double AI": "positive"}


def test_demo_regime_b_reverses_at_least_15_percent_of_what_regime_a_taught() -> None:
    from datetime import UTC, datetime

    sys.path.insert(0, str(BENCH.parent / "sample_data"))
    import generate

    rows = generate.generate(2400, 7, datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    labelled = {regime: [r for r in rows if r["regime"] == regime and "sentiment" in r] for regime in "AB"}

    def flipped(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rs if any(w in str(r["text"]) for w in FLIPS)]

    # In regime A a rate cut is good news and job cuts or a dividend cut bad news; regime B reads
    # them the other way round, so a model trained on A misses each of these items.
    def key(r: dict[str, Any]) -> str:
        return next(w for w in FLIPS if w in str(r["text"]))

    a_flips = flipped(labelled["A"])
    assert a_flips and all(r["sentiment"] != FLIPS[key(r)] for r in a_flips)
    b_flips = flipped(labelled["B"])
    assert len(b_flips) / len(labelled["B"]) >= 0.15
    assert all(r["sentiment"] == FLIPS[key(r)] for r in b_flips)


def test_gate_power_passes_clear_winners_and_few_equals() -> None:
    from gate_power import pass_rate

    rng = random.Random(0)
    assert pass_rate(0.2, 0.0, 50, 0.8, 300, rng) > 0.99  # about 10 wins, no loss: always through
    equal = pass_rate(0.05, 0.05, 100, 0.8, 1000, rng)
    assert 0.05 < equal < 0.25  # as good as serving: about 1 - confidence of the gate sets pass
    assert pass_rate(0.08, 0.04, 300, 0.8, 300, rng) > pass_rate(0.08, 0.04, 50, 0.8, 300, rng)
