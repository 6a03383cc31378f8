"""The issue #10 experiment as a user runs it: ``monitor replay --learn`` with DEFAULT learner settings.

1. A registry with the served Twitter model (``var/bench/twitter_base``, see bench/README.md),
   entered by ``monitor model add``. Its warm-start seed is the one ``monitor train --val-data``
   writes (``write_seed``: 100 x the classes training tweets of each head to replay and up to 1,000
   validation tweets a head for the forgetting holdout, both in the data's class mix), added to a copy when the
   checkpoint has none (``--reseed``: always, with the seed this code writes).
2. ``N`` labelled Financial PhraseBank sentences (the *stream* part, a seeded sample), one every
   ``--spacing-s`` seconds of event time, each label known ``--label-delay-s`` later, streamed
   through ``monitor replay FEED --learn`` with a config that sets only ``model.path`` and
   ``learning.enabled``: every learner setting is its default (triggers, gate, recipe).
3. The served model and the replay's final ``CURRENT`` scored on data no choice saw: the PhraseBank
   *final* split (gain, and the share of the gap to an in-domain model recovered) and 1,000
   tweets a set the served model never saw (``twitter_fresh``: forgetting, paired, with its
   standard error). ``--split tune`` scores the PhraseBank *tune* split and the test tweets
   instead (for choosing). Every training run's gate verdict is printed beside what the
   held-out data says of its challenger, promoted or refused: the config also sets
   ``keep_rejected: true``, which keeps refused challengers in ``<registry>/rejected/`` and
   changes no decision.
   ``--domain semeval``: the third domain instead (SemEval-2017 headlines, ``continual_domain_data.py``),
   final split only: no setting was ever chosen on it, so it says what a user's new domain would see.
4. ``--agreement FILE``: no replay; the table of the gate's verdicts against the held-out data
   over every run recorded in FILE (see ``agreement``), then the forgetting test's loss against the
   fresh tweets' (see ``forgetting_check``). ``--table FILE``: no replay; each variant's
   gap recovered and tweet loss per label sample, and the gate sets' discordance against the
   held-out data's (see ``table``).

    MONITOR_SHARED_DATA=/work/shared/data nice -n 10 .venv/bin/python bench/adapt_replay.py --seeds 0 1 2

One JSON line per seed is appended to ``--out`` (default bench/results/adapt_replay.jsonl).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from continual_adapt import (
    BASE,
    DOMAIN,
    by_class,
    cached,
    eval_sets,
    gap_figures,
    load,
    paired,
    reference_scores,
    score,
)
from continual_domain_data import ROOT, build, build_semeval, data_dir, fresh

from monitor.datasets import read_labelled
from monitor.learn.warmstart import SEED_FILE, write_seed
from monitor.model.checkpoint import load_checkpoint
from monitor.records import Example
from monitor.registry import ModelRegistry

MONITOR = [str(Path(sys.executable).with_name("monitor"))]
#: New domains: the prefix of their parts in ``DOMAIN`` and the items' ``source``.
DOMAINS = {"phrasebank": "pb", "semeval": "se"}


def feed(path: Path, n: int, seed: int, spacing_s: float, delay_s: float, domain: str = "phrasebank") -> int:
    """Write ``n`` labelled sentences of the new domain's stream part as a replay feed; the number written."""
    prefix = DOMAINS[domain]
    stream = load(f"{prefix}_stream")
    random.Random(seed).shuffle(stream)
    start = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
    with path.open("w", encoding="utf-8") as handle:
        for i, e in enumerate(stream[:n]):
            at = start + timedelta(seconds=i * spacing_s)
            handle.write(json.dumps({"id": f"{prefix}-{seed}-{i:04d}", "text": e.text, "source": domain,
                                     "published_at": at.isoformat().replace("+00:00", "Z"), "kind": "news",
                                     "sentiment": e.sentiment, "label_delay_s": delay_s}) + "\n")
    return min(n, len(stream))


def held_out(split: str, domain: str = "phrasebank") -> dict[str, tuple[list[Example], str]]:
    """The sets scored: the new domain's split and, for final, tweets the served model never saw."""
    sets = eval_sets(split) if domain == "phrasebank" else {"new_domain": (load(f"{DOMAINS[domain]}_{split}"),
                                                                           "sentiment")}
    if split == "final":
        tweets = read_labelled(fresh(DOMAIN), "jsonl")
        sets["tweets_sentiment"] = ([e for e in tweets if e.sentiment is not None], "sentiment")
        sets["tweets_topic"] = ([e for e in tweets if e.topic is not None], "topic")
    return sets


def run(seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    registry_dir, out = work / f"registry-{seed}", work / f"replay-{seed}"
    served = BASE
    if args.reseed or not (BASE / SEED_FILE).is_file():  # the seed monitor train --val-data would write now
        served = work / "served"
        if not served.exists():
            shutil.copytree(BASE, served)
            write_seed(served, load("twitter_train"), holdout_from=load("twitter_val"),
                       data_fingerprint=load_checkpoint(BASE).meta.data_fingerprint, source="monitor train")
    subprocess.run([*MONITOR, "model", "--registry", str(registry_dir), "add", str(served), "--promote"], check=True)
    config = work / f"config-{seed}.yaml"
    # keep_rejected only keeps refused challengers' checkpoints, to score them below: no decision changes.
    chosen = {"keep_rejected": True, **json.loads(args.settings)}
    settings = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in chosen.items())
    config.write_text(f"model:\n  path: {registry_dir}\nlearning:\n  enabled: true\n"
                      + (f"  settings:\n{settings}" if settings else ""), encoding="utf-8")
    feed_path = work / f"feed-{seed}.jsonl"
    n = feed(feed_path, args.labels, seed, args.spacing_s, args.label_delay_s, args.domain)
    started = time.perf_counter()
    subprocess.run([*MONITOR, "replay", str(feed_path), "--config", str(config), "--out", str(out), "--learn",
                    "--seed", str(seed), "--no-progress", "--format", "csv"], check=True)
    wall = time.perf_counter() - started

    history = ModelRegistry(out / "registry").history()
    runs = [h for h in history if h.get("event") in ("promoted", "rejected", "failed") and h.get("parent")]
    final = ModelRegistry(out / "registry").current_version()
    base = load_checkpoint(BASE)
    max_length = base.meta.max_length or 64
    sets = held_out(args.split, args.domain)
    prefix = "" if args.domain == "phrasebank" else f"{DOMAINS[args.domain]}-"
    before = cached(f"base:{prefix}{args.split}-fresh@{max_length}",
                    lambda: score(base.model, base.tokenizer, sets, max_length))
    scores: dict[str, dict[str, list[int]]] = {base.meta.version: before}
    replayed = ModelRegistry(out / "registry")
    for h in runs:  # what the held-out data says of every challenger, promoted or refused
        where = {"promoted": replayed.path, "rejected": replayed.rejected_path}.get(h["event"])
        if where is not None and (where(h["version"]) / "meta.json").is_file():
            loaded = load_checkpoint(where(h["version"]))
            scores[h["version"]] = score(loaded.model, loaded.tokenizer, sets, max_length)
    after = scores.get(final or "", before)
    reference = reference_scores(args.split, max_length, DOMAINS[args.domain])["new_domain"]
    blind = None  # the new domain without its source's logit offsets (as an evaluation that drops the source)
    if final in scores and final != base.meta.version:
        final_model = load_checkpoint(replayed.path(final)).model
        if final_model.source_offsets:
            unsourced = score(final_model, base.tokenizer, {"new_domain": sets["new_domain"]}, max_length,
                              by_source=False)
            blind = gap_figures(before["new_domain"], unsourced["new_domain"], reference)
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "split": args.split, "domain": args.domain,
        "seed": seed,
        "commit": _commit(), "variant": args.variant,
        "settings": args.settings, "labels": n,
        "spacing_s": args.spacing_s, "label_delay_s": args.label_delay_s, "replay_wall_s": round(wall, 1),
        "final_version": final, **gap_figures(before["new_domain"], after["new_domain"], reference),
        "forgetting": {k: paired(before[k], after[k]) for k in ("tweets_sentiment", "tweets_topic")},
        **({"source_blind": blind} if blind else {}),
        "forgetting_by_class": by_class(before["tweets_sentiment"], after["tweets_sentiment"],
                                        [str(e.sentiment) for e in sets["tweets_sentiment"][0]]),
        "runs": [{"version": h["version"], "parent": h.get("parent"), "event": h["event"],
                  "trigger": h.get("trigger"), "reason": h.get("reason"), "seconds": h.get("seconds"),
                  "gate": {k: (h.get("gate") or {}).get(k) for k in (
                      "recent_answers", "improvement", "mcnemar_p", "holdout_answers", "forgetting",
                      "forgetting_upper", "forgetting_stratum", "serving_only", "challenger_only", "shadow_labels",
                      "shadow_answers")},
                  "held_out": None if h["version"] not in scores else {
                      "new_domain": paired(scores[h["parent"]]["new_domain"], scores[h["version"]]["new_domain"]),
                      **{k: paired(scores[h["parent"]][k], scores[h["version"]][k])
                         for k in ("tweets_sentiment", "tweets_topic")}}}
                 for h in runs],
    }


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()


def summary(r: dict[str, Any]) -> str:
    f = r["forgetting"]
    lines = [f"{r.get('domain', 'phrasebank')} {r['split']} seed {r['seed']} {r['settings']}: {r['labels']} labels, "
             f"{len(r['runs'])} runs, "
             f"serving {r['final_version']}; "
             f"new domain {r['new_domain']['before']:.3f} -> {r['new_domain']['after']:.3f} "
             f"(ref {r['reference_accuracy']:.3f}, gap recovered {r['gap_recovered']}); tweets sentiment "
             f"{100 * f['tweets_sentiment']['diff']:+.1f} pt (se {100 * f['tweets_sentiment']['se']:.1f}), topic "
             f"{100 * f['tweets_topic']['diff']:+.1f} pt (se {100 * f['tweets_topic']['se']:.1f})"
             + (f"; without its source's offsets {r['source_blind']['new_domain']['after']:.3f} (gap recovered "
                f"{r['source_blind']['gap_recovered']})" if r.get("source_blind") else "")]
    for run_ in r["runs"]:
        held = run_["held_out"]
        said = "" if held is None else (f"; held out: new {100 * held['new_domain']['diff']:+.1f} pt, tweets "
                                        f"{100 * held['tweets_sentiment']['diff']:+.1f} / "
                                        f"{100 * held['tweets_topic']['diff']:+.1f} pt")
        lines.append(f"  {run_['version']} {run_['event']} ({run_['trigger']}): {run_['reason']}{said}")
    return "\n".join(lines)


#: A held-out difference counts as real beyond this many standard errors (one-sided 90 %).
Z_90 = 1.2816


def verdicts(run_: dict[str, Any], max_forgetting: float = 0.02) -> tuple[str, str] | None:
    """(what the gate said, what the held-out data says) of one run, or None when it was not scored.

    Gate: ``better`` (promoted), ``forgets`` (better on the recent labels, refused for forgetting),
    ``not better``. Held out: ``forgets`` when a tweet head lost more than ``max_forgetting`` beyond
    noise (the loss's 90 % lower bound above it), else ``better`` / ``worse`` when the new-domain
    difference is beyond noise (z > 1.28 either way), else ``no clear change``.
    """
    held = run_.get("held_out")
    if held is None:
        return None
    reason = run_.get("reason") or ""
    said = "better" if run_["event"] == "promoted" else "forgets" if reason.startswith("forgetting") else "not better"
    lost = [-held[k]["diff"] - Z_90 * held[k]["se"] for k in ("tweets_sentiment", "tweets_topic")]
    new = held["new_domain"]
    z = new["diff"] / new["se"] if new["se"] > 0 else 0.0
    truth = ("forgets" if max(lost) > max_forgetting else "better" if z > Z_90 else "worse" if z < -Z_90
             else "no clear change")
    return said, truth


def agreement(rows: list[dict[str, Any]]) -> str:
    """A table: the gate's verdicts (rows) against the held-out data's (columns), over every scored run."""
    from collections import Counter

    counts = Counter(v for r in rows for run_ in r["runs"] if (v := verdicts(run_)) is not None)
    cols = ("better", "no clear change", "worse", "forgets")
    lines = ["| gate said \\ held out says | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for said in ("better", "not better", "forgets"):
        lines.append(f"| {said} | " + " | ".join(str(counts[(said, c)]) for c in cols) + " |")
    unscored = sum(1 for r in rows for run_ in r["runs"] if run_.get("held_out") is None)
    return "\n".join(lines) + (f"\n({unscored} runs without held-out scores: refused before keep_rejected)"
                               if unscored else "")


def standard_error(values: list[float]) -> float:
    """The standard error of the mean of ``values`` (NaN for fewer than two)."""
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")


def forgetting_check(rows: list[dict[str, Any]]) -> str:
    """The forgetting test against fresh tweets, for every scored run whose worst tested stratum was the holdout's
    tweet sentiment: the gate's observed loss beside the held-out tweets' (points, means), their paired difference
    with its standard error, and their correlation, by verdict and by the holdout's size (which tells served
    models' seeds apart: about 1,250 answers for the served model of round 16, 750 before it; rounded to 250).
    """
    groups: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for r in rows:
        for run_ in r["runs"]:
            gate, held = run_.get("gate") or {}, run_.get("held_out")
            if held is None or gate.get("forgetting_stratum") != "twitter_sentiment@?":
                continue
            pair = (100 * gate["forgetting"], -100 * held["tweets_sentiment"]["diff"])
            size = 250 * round(gate["holdout_answers"] / 250)
            groups.setdefault((size, run_["event"]), []).append(pair)
            groups.setdefault((size, "all"), []).append(pair)
    lines = ["| holdout answers | runs | n | gate's loss (pt) | fresh tweets' loss (pt) | difference (se) | "
             "correlation |", "|---|---|---:|---:|---:|---:|---:|"]
    for (size, event), pairs in sorted(groups.items()):
        gate_loss, fresh_loss = zip(*pairs, strict=True)
        diffs = [f - g for g, f in pairs]
        se = standard_error(diffs)
        corr = (statistics.correlation(gate_loss, fresh_loss) if len(pairs) > 2 and len(set(gate_loss)) > 1
                and len(set(fresh_loss)) > 1 else float("nan"))
        lines.append(f"| ~{size:.0f} | {event} | {len(pairs)} | {statistics.mean(gate_loss):+.2f} | "
                     f"{statistics.mean(fresh_loss):+.2f} | {statistics.mean(diffs):+.2f} ({se:.2f}) | {corr:.2f} |")
    return "\n".join(lines)


def agreement_report(rows: list[dict[str, Any]]) -> str:
    """What ``--agreement`` prints: the verdicts table, then the forgetting test against fresh tweets."""
    return f"{agreement(rows)}\n\nThe forgetting test against fresh tweets:\n{forgetting_check(rows)}"


def table(rows: list[dict[str, Any]]) -> str:
    """One line a variant (and split): the gap recovered and the tweet-sentiment change per label sample, their means
    (with the gap's standard error over samples), the worst loss, how many samples lose at most 1 point, promotions.

    Then the gate's discordant answers pooled over every scored run against the held-out data's for the same
    challengers: a gate set that is only small splits its discordant answers as the held-out set does.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        split = r["split"] if r.get("domain", "phrasebank") == "phrasebank" else f"{r['domain']} {r['split']}"
        groups.setdefault((r.get("variant", ""), split), []).append(r)
    lines = ["| variant | split | seeds | gap recovered per seed | mean (se) | tweet sentiment (pt) per seed | mean | "
             "worst | within 1 pt | promoted |", "|---|---|---|---|---:|---|---:|---:|---:|---:|"]
    for (variant, split), group in groups.items():
        group = sorted(group, key=lambda r: r["seed"])
        gaps = [float(r["gap_recovered"]) for r in group]
        tweets = [100 * r["forgetting"]["tweets_sentiment"]["diff"] for r in group]
        se = standard_error(gaps)
        runs = [run_ for r in group for run_ in r["runs"]]
        lines.append(f"| {variant or '-'} | {split} | {' '.join(str(r['seed']) for r in group)} | "
                     f"{' '.join(f'{g:.3f}' for g in gaps)} | {statistics.mean(gaps):.2f} ({se:.2f}) | "
                     f"{' '.join(f'{t:+.1f}' for t in tweets)} | {statistics.mean(tweets):+.1f} | {min(tweets):+.1f} | "
                     f"{sum(t >= -1.0 for t in tweets)} of {len(tweets)} | "
                     f"{sum(run_['event'] == 'promoted' for run_ in runs)} of {len(runs)} |")
    pairs = [(run_["gate"], run_["held_out"]["new_domain"]) for r in rows for run_ in r["runs"]
             if run_.get("held_out") and "won" in run_["held_out"]["new_domain"] and run_.get("gate")
             and run_["gate"].get("challenger_only") is not None and not run_["gate"].get("shadow_answers")]
    if pairs:
        gate = [sum(g["challenger_only"] for g, _ in pairs), sum(g["serving_only"] for g, _ in pairs),
                sum(g["recent_answers"] for g, _ in pairs)]
        held = [sum(h["won"] for _, h in pairs), sum(h["lost"] for _, h in pairs), sum(h["n"] for _, h in pairs)]
        lines.append("")
        for name, (won, lost, n) in (("gate sets", gate), ("held-out new domain", held)):
            lines.append(f"{name} of {len(pairs)} runs: {won} won, {lost} lost of {n} answers "
                         f"({won / n:.1%} / {lost / n:.1%}); won {won / max(1, won + lost):.0%} of the discordant")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """One dot per stream: the share of the gap recovered against the tweet sentiment lost, a colour per (domain,
    variant), the targets as lines (at least 0.5 of the gap, at most 1 point lost)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(f"{r.get('domain', 'phrasebank')}: {r.get('variant') or r['settings']}", []).append(r)
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for name, group in sorted(groups.items()):
        ax.scatter([r["gap_recovered"] or 0.0 for r in group],
                   [100 * r["forgetting"]["tweets_sentiment"]["diff"] for r in group], label=f"{name} ({len(group)})")
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.axhline(-1.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("share of the gap to the in-domain model recovered (new domain, held out)")
    ax.set_ylabel("tweet sentiment accuracy change (points)")
    ax.set_title("500 streamed labels through monitor replay --learn, one dot a stream")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--split", choices=("tune", "final"), default="final",
                        help="held-out sets scored: final (PhraseBank final + the served model's validation tweets, "
                             "never used to choose) or tune (PhraseBank tune + the test tweets, for tuning)")
    parser.add_argument("--domain", choices=tuple(DOMAINS), default="phrasebank",
                        help="the new domain streamed: phrasebank (tuned on its tune split) or semeval (a third "
                             "domain, never tuned on: --split final only)")
    parser.add_argument("--settings", default="{}",
                        help="learning.settings as JSON, for tuning (default {}: every learner default)")
    parser.add_argument("--labels", type=int, default=500, help="labelled sentences streamed (default 500)")
    parser.add_argument("--spacing-s", type=float, default=120.0, help="event-time seconds between items")
    parser.add_argument("--label-delay-s", type=float, default=600.0, help="label known this long after the item")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "adapt_replay.jsonl")
    parser.add_argument("--reseed", action="store_true",
                        help="replace the served model's seed (in a copy) by the one this code's monitor train writes")
    parser.add_argument("--workdir", type=Path, help="keep registries and replays here (default: a temp dir)")
    parser.add_argument("--agreement", type=Path, help="print the gate-vs-held-out table of the runs in this "
                        "JSONL file and the forgetting test against fresh tweets (--variant: only its rows) and exit")
    parser.add_argument("--table", type=Path, help="print the per-variant results of the rows in this JSONL file "
                        "(--variant: only those whose variant contains it) and the gate's discordance against the "
                        "held-out data's, and exit")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="with --table: also draw its rows, gap recovered "
                        "against tweets lost, one dot a stream")
    parser.add_argument("--variant", default="", help="a tag stored in each row written; with --agreement or --table, "
                        "only the rows whose variant contains it")
    args = parser.parse_args(argv)
    for path, show in ((args.agreement, agreement_report), (args.table, table)):
        if path is not None:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
            chosen = [r for r in rows if args.variant in r.get("variant", "")]
            print(show(chosen))
            if args.plot is not None and show is table:
                plot(chosen, args.plot)
                print(f"plot: {args.plot}")
            return 0
    if not data_dir().is_dir():
        print("../shared/data not found (set MONITOR_SHARED_DATA): nothing to do")
        return 0
    if not (BASE / "model.safetensors").is_file():
        print(f"{BASE} missing: train the served model first (bench/README.md)", file=sys.stderr)
        return 2
    if args.domain == "semeval" and args.split != "final":
        parser.error("--domain semeval has no tune split: no choice is made on it (use --split final)")
    if not (DOMAIN / "pb_final.jsonl").is_file():
        build(DOMAIN, per_set=5000)
    if not (DOMAIN / "se_final.jsonl").is_file():
        build_semeval(DOMAIN)
    with tempfile.TemporaryDirectory(prefix="adapt-replay-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            result = run(seed, args, work)
            print(summary(result), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
