"""Class-incremental (scenario b): what each update recipe buys against what it costs.

Reads result JSONs of ``bench/continual.py`` that ran scenario b with ``replay_distill`` and
``joint``; one point a file: the last update's training loop against joint retraining's at the same
phase (x) and replay + distillation's final average accuracy below joint's (y). Each point is
labelled by the learner settings that differ from the learner's defaults. The issue's target is the
box: at most 0.25 of joint's time and at most 3 points below joint. A table of the same figures is
printed.

    .venv/bin/python bench/continual_frontier.py bench/results/round23/b_seed0.json \\
        bench/results/round23/b_epochs*_seed0.json bench/results/round24/*.json \\
        --plot bench/results/continual_frontier.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.learn.settings import TrainSettings  # noqa: E402

#: Learner settings a label names when they differ from their defaults.
KEYS = ("epochs", "freeze_layers", "lr_head", "lr_encoder", "replay_ratio")
TIME_TARGET, ACCURACY_TARGET = 0.25, 0.03


def label(settings: dict[str, Any]) -> str:
    """The recipe's settings that differ from the learner's defaults, e.g. ``epochs 4, freeze_layers 5``.

    >>> label({"epochs": 8, "freeze_layers": 3}), label({"epochs": 2, "lr_head": 0.01})
    ('defaults', 'epochs 2, lr_head 0.01')
    """
    defaults = TrainSettings()
    changed = [f"{k} {settings[k]:g}" for k in KEYS if k in settings and settings[k] != getattr(defaults, k)]
    return ", ".join(changed) or "defaults"


def point(path: Path) -> dict[str, Any]:
    """One result file's figures: recipe label, seed, accuracies, forgetting, time ratio."""
    data = json.loads(path.read_text())
    scenario = data["scenarios"]["b"]
    final = {m: sum(run["accuracy"][-1]) / len(run["accuracy"][-1]) for m, run in scenario["methods"].items()}
    targets = {t["target"]: t["value"] for t in scenario["targets"]}
    time_ratio = next(v for k, v in targets.items() if "training time" in k)
    forgetting = next(v for k, v in targets.items() if k.endswith("forgetting"))
    return {"file": str(path), "recipe": label(data["learner_settings"]["replay_distill"]), "seed": data["seed"],
            "replay_distill": round(final["replay_distill"], 3), "joint": round(final["joint"], 3),
            "below_joint_pt": round(100 * (final["joint"] - final["replay_distill"]), 1),
            "forgetting_pt": round(100 * forgetting, 1), "time_vs_joint": time_ratio}


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.add_patch(plt.Rectangle((0, -100), TIME_TARGET, 100 * ACCURACY_TARGET + 100, color="#2ca02c", alpha=0.15,
                               label="target: <= 0.25x joint's time, <= 3 pt below joint"))
    recipes: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        recipes.setdefault(p["recipe"], []).append(p)
    for recipe, runs in recipes.items():  # one label a recipe, at its rightmost run
        ax.scatter([r["time_vs_joint"] for r in runs], [r["below_joint_pt"] for r in runs], color="#1f77b4")
        last = max(runs, key=lambda r: r["time_vs_joint"])
        seeds = ", ".join(str(r["seed"]) for r in runs)
        ax.annotate(f"{recipe} (seed{'s' if len(runs) > 1 else ''} {seeds})",
                    (last["time_vs_joint"], last["below_joint_pt"]), textcoords="offset points", xytext=(6, -3),
                    fontsize=8)
    ax.axhline(0, color="#7f7f7f", lw=0.8)
    ax.set_xlim(0, max(p["time_vs_joint"] for p in points) * 1.45)
    ax.set_ylim(min(-2.0, *(p["below_joint_pt"] for p in points)) - 1, max(p["below_joint_pt"] for p in points) + 3)
    ax.set_xlabel("last update's training loop / joint retraining's (4th phase)")
    ax.set_ylabel("replay + distillation below joint (accuracy points)")
    ax.set_title("Class-incremental topics: update recipes, cost against accuracy")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="bench/continual.py result JSONs (scenario b)")
    parser.add_argument("--plot", type=Path, help="write the plot here (PNG)")
    args = parser.parse_args()
    points = [point(p) for p in args.results]
    print(f"{'recipe':<45} {'seed':>4} {'r+d':>6} {'joint':>6} {'below':>6} {'forget':>6} {'time':>6}")
    for p in points:
        print(f"{p['recipe']:<45} {p['seed']:>4} {p['replay_distill']:>6.3f} {p['joint']:>6.3f} "
              f"{p['below_joint_pt']:>6.1f} {p['forgetting_pt']:>6.1f} {p['time_vs_joint']:>6.2f}")
    if args.plot:
        plot(points, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
