"""Plots of the continual-learning benchmark, drawn from its JSON results (so they can be redrawn).

- ``continual_matrices.png``: the accuracy matrix of every method in every scenario (row = after
  training on phase i, column = test set of phase j; above the diagonal is not evaluated);
- ``continual_summary.png``: per scenario, final average accuracy, forgetting, prequential
  accuracy and training time relative to joint retraining;
- ``continual_curves.png``: per scenario, average accuracy and forgetting after each phase (does
  forgetting build up over successive updates?).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["COLORS", "STYLES", "plot_all", "plot_curves", "plot_matrices", "plot_summary"]

COLORS = {"static": "#7f7f7f", "naive": "#d62728", "replay": "#ff7f0e", "replay_distill": "#2ca02c",
          "joint": "#1f77b4"}
#: Line styles tell apart methods whose curves coincide.
STYLES = {"static": ":", "naive": "-", "replay": "--", "replay_distill": "-", "joint": "-"}
Results = Mapping[str, Any]


def _methods(scenario: Results) -> list[str]:
    return list(scenario["methods"])


def plot_matrices(scenarios: Mapping[str, Results], path: Path) -> Path:
    """One accuracy-matrix heat map per (scenario, method)."""
    keys = list(scenarios)
    n_cols = max(len(_methods(s)) for s in scenarios.values())
    fig, axes = plt.subplots(len(keys), n_cols, figsize=(2.6 * n_cols, 2.7 * len(keys)), squeeze=False)
    for r, key in enumerate(keys):
        scenario = scenarios[key]
        for c in range(n_cols):
            ax = axes[r][c]
            methods = _methods(scenario)
            if c >= len(methods):
                ax.axis("off")
                continue
            matrix = scenario["methods"][methods[c]]["accuracy"]
            k = len(matrix)
            values = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
            ax.imshow(np.ma.masked_invalid(values), vmin=0.0, vmax=1.0, cmap="viridis")
            font = 8 if k <= 4 else 6
            for i in range(k):
                for j in range(k):
                    if not np.isnan(values[i, j]):
                        ax.text(j, i, f"{100 * values[i, j]:.0f}", ha="center", va="center", fontsize=font,
                                color="white" if values[i, j] < 0.6 else "black")
            ax.set_xticks(range(k), [str(j + 1) for j in range(k)], fontsize=7)
            ax.set_yticks(range(k), [str(i + 1) for i in range(k)], fontsize=7)
            ax.set_title(methods[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(f"({key}) after phase", fontsize=8)
            if r == len(keys) - 1:
                ax.set_xlabel("test set of phase", fontsize=8)
    fig.suptitle("Accuracy matrices (%): rows = after training on phase i, columns = test set of phase j",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_summary(scenarios: Mapping[str, Results], path: Path) -> Path:
    """Bars per scenario: final average accuracy, forgetting, prequential accuracy, time vs joint."""
    panels = [("average_accuracy", "average accuracy after the last phase"),
              ("forgetting", "forgetting (Chaudhry et al.)"),
              ("prequential_mean", "prequential accuracy (before training)"),
              ("time_vs_joint", "training time / joint retraining")]
    keys = list(scenarios)
    fig, axes = plt.subplots(len(panels), len(keys), figsize=(4.6 * len(keys), 2.6 * len(panels)), squeeze=False)
    for c, key in enumerate(keys):
        methods = _methods(scenarios[key])
        for r, (field, label) in enumerate(panels):
            ax = axes[r][c]
            values = [scenarios[key]["methods"][m].get(field) for m in methods]
            heights = [np.nan if v is None else float(v) for v in values]
            bars = ax.bar(range(len(methods)), heights, color=[COLORS.get(m, "#333333") for m in methods])
            for bar, v in zip(bars, values, strict=True):
                if v is not None:
                    ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                                va="bottom", fontsize=7)
            if field == "time_vs_joint":
                ax.axhline(0.25, color="black", linestyle="--", linewidth=0.8)
            ax.axhline(0.0, color="black", linewidth=0.5)
            ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_ylabel(label, fontsize=7)
            if r == 0:
                ax.set_title(f"({key}) {scenarios[key]['title']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(scenarios: Mapping[str, Results], path: Path) -> Path:
    """Average accuracy and forgetting after each phase, one line per method."""
    keys = list(scenarios)
    fig, axes = plt.subplots(2, len(keys), figsize=(4.6 * len(keys), 6.0), squeeze=False)
    for c, key in enumerate(keys):
        for r, (field, label) in enumerate((("average_accuracy_curve", "average accuracy over phases seen"),
                                            ("forgetting_curve", "forgetting after phase"))):
            ax = axes[r][c]
            for method in _methods(scenarios[key]):
                curve = scenarios[key]["methods"][method][field]
                ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=method,
                        color=COLORS.get(method, "#333333"), linestyle=STYLES.get(method, "-"))
            ax.set_xticks(range(1, len(curve) + 1))
            ax.set_xlabel("after phase", fontsize=8)
            ax.set_ylabel(label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(f"({key}) {scenarios[key]['title']}", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(scenarios: Mapping[str, Results], directory: Path, prefix: str = "continual") -> list[Path]:
    """Write the three PNGs into ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    return [plot_matrices(scenarios, directory / f"{prefix}_matrices.png"),
            plot_summary(scenarios, directory / f"{prefix}_summary.png"),
            plot_curves(scenarios, directory / f"{prefix}_curves.png")]
