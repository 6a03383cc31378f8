"""The issue #10 experiment as a user runs it: ``monitor replay --learn`` with DEFAULT learner settings.

1. A registry with the served Twitter model (``var/bench/twitter_base``, see bench/README.md),
   entered by ``monitor model add``. Its warm-start seed is the one ``monitor train --val-data``
   writes (``write_seed``: 100 training tweets a class of each head to replay, 500 validation
   tweets a head for the forgetting holdout), added to a copy when the checkpoint has none.
2. ``N`` labelled Financial PhraseBank sentences (the *stream* part, a seeded sample), one every
   ``--spacing-s`` seconds of event time, each label known ``--label-delay-s`` later, streamed
   through ``monitor replay FEED --learn`` with a config that sets only ``model.path`` and
   ``learning.enabled``: every learner setting is its default (triggers, gate, recipe).
3. The served model and the replay's final ``CURRENT`` scored on data no choice saw: the PhraseBank
   *final* split (gain, and the share of the gap to an in-domain model recovered) and 1,000
   tweets a set the served model never saw (``twitter_fresh``: forgetting, paired, with its
   standard error). ``--split tune`` scores the PhraseBank *tune* split and the test tweets
   instead (for choosing). Every training run's gate verdict is printed beside what the
   held-out data says of the model it promoted.

    MONITOR_SHARED_DATA=/work/shared/data nice -n 10 .venv/bin/python bench/adapt_replay.py --seeds 0 1 2

One JSON line per seed is appended to ``--out`` (default bench/results/adapt_replay.jsonl).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from continual_adapt import BASE, DOMAIN, cached, eval_sets, load, paired, reference_scores, score
from continual_domain_data import ROOT, build, data_dir, fresh

from monitor.datasets import read_labelled
from monitor.learn.warmstart import SEED_FILE, write_seed
from monitor.model.checkpoint import load_checkpoint
from monitor.records import Example
from monitor.registry import ModelRegistry

MONITOR = [str(Path(sys.executable).with_name("monitor"))]


def feed(path: Path, n: int, seed: int, spacing_s: float, delay_s: float) -> int:
    """Write ``n`` labelled PhraseBank stream sentences as a replay feed; the number written."""
    stream = load("pb_stream")
    random.Random(seed).shuffle(stream)
    start = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
    with path.open("w", encoding="utf-8") as handle:
        for i, e in enumerate(stream[:n]):
            at = start + timedelta(seconds=i * spacing_s)
            handle.write(json.dumps({"id": f"pb-{seed}-{i:04d}", "text": e.text, "source": "phrasebank",
                                     "published_at": at.isoformat().replace("+00:00", "Z"), "kind": "news",
                                     "sentiment": e.sentiment, "label_delay_s": delay_s}) + "\n")
    return min(n, len(stream))


def held_out(split: str) -> dict[str, tuple[list[Example], str]]:
    """The sets scored: the PhraseBank split and, for final, tweets the served model never saw."""
    sets = eval_sets(split)
    if split == "final":
        tweets = read_labelled(fresh(DOMAIN), "jsonl")
        sets["tweets_sentiment"] = ([e for e in tweets if e.sentiment is not None], "sentiment")
        sets["tweets_topic"] = ([e for e in tweets if e.topic is not None], "topic")
    return sets


def run(seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    registry_dir, out = work / f"registry-{seed}", work / f"replay-{seed}"
    served = BASE
    if not (BASE / SEED_FILE).is_file():  # the seed monitor train --val-data would have written
        served = work / "served"
        if not served.exists():
            shutil.copytree(BASE, served)
            write_seed(served, load("twitter_train"), holdout_from=load("twitter_val"),
                       data_fingerprint=load_checkpoint(BASE).meta.data_fingerprint, source="monitor train")
    subprocess.run([*MONITOR, "model", "--registry", str(registry_dir), "add", str(served), "--promote"], check=True)
    config = work / f"config-{seed}.yaml"
    settings = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in json.loads(args.settings).items())
    config.write_text(f"model:\n  path: {registry_dir}\nlearning:\n  enabled: true\n"
                      + (f"  settings:\n{settings}" if settings else ""), encoding="utf-8")
    feed_path = work / f"feed-{seed}.jsonl"
    n = feed(feed_path, args.labels, seed, args.spacing_s, args.label_delay_s)
    started = time.perf_counter()
    subprocess.run([*MONITOR, "replay", str(feed_path), "--config", str(config), "--out", str(out), "--learn",
                    "--seed", str(seed), "--no-progress", "--format", "csv"], check=True)
    wall = time.perf_counter() - started

    history = ModelRegistry(out / "registry").history()
    runs = [h for h in history if h.get("event") in ("promoted", "rejected", "failed") and h.get("parent")]
    final = ModelRegistry(out / "registry").current_version()
    base = load_checkpoint(BASE)
    max_length = base.meta.max_length or 64
    sets = held_out(args.split)
    before = cached(f"base:{args.split}-fresh@{max_length}",
                    lambda: score(base.model, base.tokenizer, sets, max_length))
    scores: dict[str, dict[str, list[int]]] = {base.meta.version: before}
    for h in runs:  # what the held-out data says of every model the gate let through
        if h["event"] == "promoted":
            loaded = load_checkpoint(out / "registry" / "versions" / h["version"])
            scores[h["version"]] = score(loaded.model, loaded.tokenizer, sets, max_length)
    after = scores.get(final or "", before)
    reference = reference_scores(args.split, max_length)["new_domain"]
    ref_acc = sum(reference) / len(reference)
    new_domain = paired(before["new_domain"], after["new_domain"])
    gap = ref_acc - new_domain["before"]
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "split": args.split, "seed": seed,
        "settings": args.settings, "labels": n,
        "spacing_s": args.spacing_s, "label_delay_s": args.label_delay_s, "replay_wall_s": round(wall, 1),
        "final_version": final, "reference_accuracy": round(ref_acc, 4), "new_domain": new_domain,
        "gap_recovered": round((new_domain["after"] - new_domain["before"]) / gap, 3) if gap > 0 else None,
        "forgetting": {k: paired(before[k], after[k]) for k in ("tweets_sentiment", "tweets_topic")},
        "runs": [{"version": h["version"], "parent": h.get("parent"), "event": h["event"],
                  "trigger": h.get("trigger"), "reason": h.get("reason"), "seconds": h.get("seconds"),
                  "gate": {k: (h.get("gate") or {}).get(k) for k in (
                      "recent_answers", "improvement", "mcnemar_p", "holdout_answers", "forgetting",
                      "forgetting_upper", "forgetting_stratum")},
                  "held_out": None if h["version"] not in scores else {
                      "new_domain": paired(scores[h["parent"]]["new_domain"], scores[h["version"]]["new_domain"]),
                      **{k: paired(scores[h["parent"]][k], scores[h["version"]][k])
                         for k in ("tweets_sentiment", "tweets_topic")}}}
                 for h in runs],
    }


def summary(r: dict[str, Any]) -> str:
    f = r["forgetting"]
    lines = [f"{r['split']} seed {r['seed']} {r['settings']}: {r['labels']} labels, {len(r['runs'])} runs, "
             f"serving {r['final_version']}; "
             f"new domain {r['new_domain']['before']:.3f} -> {r['new_domain']['after']:.3f} "
             f"(ref {r['reference_accuracy']:.3f}, gap recovered {r['gap_recovered']}); tweets sentiment "
             f"{100 * f['tweets_sentiment']['diff']:+.1f} pt (se {100 * f['tweets_sentiment']['se']:.1f}), topic "
             f"{100 * f['tweets_topic']['diff']:+.1f} pt (se {100 * f['tweets_topic']['se']:.1f})"]
    for run_ in r["runs"]:
        held = run_["held_out"]
        said = "" if held is None else (f"; held out: new {100 * held['new_domain']['diff']:+.1f} pt, tweets "
                                        f"{100 * held['tweets_sentiment']['diff']:+.1f} / "
                                        f"{100 * held['tweets_topic']['diff']:+.1f} pt")
        lines.append(f"  {run_['version']} {run_['event']} ({run_['trigger']}): {run_['reason']}{said}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--split", choices=("tune", "final"), default="final",
                        help="held-out sets scored: final (PhraseBank final + the served model's validation tweets, "
                             "never used to choose) or tune (PhraseBank tune + the test tweets, for tuning)")
    parser.add_argument("--settings", default="{}",
                        help="learning.settings as JSON, for tuning (default {}: every learner default)")
    parser.add_argument("--labels", type=int, default=500, help="labelled sentences streamed (default 500)")
    parser.add_argument("--spacing-s", type=float, default=120.0, help="event-time seconds between items")
    parser.add_argument("--label-delay-s", type=float, default=600.0, help="label known this long after the item")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "adapt_replay.jsonl")
    parser.add_argument("--workdir", type=Path, help="keep registries and replays here (default: a temp dir)")
    args = parser.parse_args(argv)
    if not data_dir().is_dir():
        print("../shared/data not found (set MONITOR_SHARED_DATA): nothing to do")
        return 0
    if not (BASE / "model.safetensors").is_file():
        print(f"{BASE} missing: train the served model first (bench/README.md)", file=sys.stderr)
        return 2
    if not (DOMAIN / "pb_final.jsonl").is_file():
        build(DOMAIN, per_set=5000)
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
