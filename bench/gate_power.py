"""How often the gate's "better" test passes a challenger, by gate size (simulated; no data needed).

A challenger that wins (right where the serving model is wrong) a share ``won`` of the gate's
answers and loses a share ``lost`` is simulated on ``n`` answers, ``--trials`` times; the gate
passes it when McNemar's one-sided mid-p (``monitor.learn.gate.mcnemar_midp``) is at most
``1 - confidence``. Only the discordant answers count, so at the same net gain a challenger that
flips more answers both ways needs more labels.

    .venv/bin/python bench/gate_power.py --rates 0.082:0.040 0.070:0.018 --sizes 50 75 106 150 300

The default rates are those seen through ``monitor replay --learn`` (bench/README.md, "Fourth
round", 6 seeds of each recipe): the fourth-round recipe's challengers won 8.2 % and lost 4.0 % of
their gate answers when promoted (5.9 % and 4.0 % over all its runs), the third round's 7.0 % and
1.8 % (4.4 % and 2.4 %).
"""

from __future__ import annotations

import argparse
import random

from monitor.learn.gate import mcnemar_midp
from monitor.learn.settings import GateSettings


def pass_rate(won: float, lost: float, n: int, confidence: float, trials: int, rng: random.Random) -> float:
    """Share of ``trials`` simulated gate sets of ``n`` answers on which the challenger passes."""
    passed = 0
    for _ in range(trials):
        wins = losses = 0
        for _ in range(n):
            u = rng.random()
            wins += u < won
            losses += won <= u < won + lost
        passed += mcnemar_midp(losses, wins) <= 1 - confidence
    return passed / trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", nargs="+", metavar="WON:LOST",
                        default=["0.082:0.040", "0.059:0.040", "0.070:0.018", "0.044:0.024"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 75, 106, 150, 300])
    parser.add_argument("--confidence", type=float, default=GateSettings().confidence,
                        help=f"the gate's confidence (default: the learner's, {GateSettings().confidence})")
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    print("| won / lost | " + " | ".join(f"{n} answers" for n in args.sizes) + " |")
    print("|---|" + "---:|" * len(args.sizes))
    for rates in args.rates:
        won, lost = (float(x) for x in rates.split(":"))
        cells = [f"{pass_rate(won, lost, n, args.confidence, args.trials, rng):.2f}" for n in args.sizes]
        print(f"| {won:.1%} / {lost:.1%} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
