"""Resident memory of the learning loop: does a daemon that retrains grow with every run?

A learning replay (``monitor replay --learn``) of ``--labels`` PhraseBank stream sentences through the
served Twitter model (``var/bench/twitter_base``, bench/README.md), with a policy that starts a run
every ``--every`` labels (1 epoch each), run in alternation as shipped and as a baseline from before
a fix (``--baseline``): ``no-trim`` switches off the allocator trim after each run
(``monitor.learn.memory`` before 0c2bce9); ``teacher-graph`` computes the distillation teacher's
logits with autograd on, as ``fit`` did before session 18, which held every training example's
activations for the whole run. The process's resident memory is sampled every second; printed per
variant: before the first run, the lowest between the last two runs (what the process keeps), the
peak, and the growth each keeps. Needs
``../shared/data`` (``$MONITOR_SHARED_DATA``) and the served model; exits 0 with a message when
either is missing.

    MONITOR_SHARED_DATA=/work/shared/data .venv/bin/python bench/learn_memory.py   # about 8 minutes
    MONITOR_SHARED_DATA=/work/shared/data .venv/bin/python bench/learn_memory.py --baseline teacher-graph
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from adapt_replay import feed
from continual_adapt import BASE
from continual_domain_data import data_dir

from monitor.learn.warmstart import SEED_FILE

#: ``monitor replay`` in a fresh interpreter, as shipped ("shipped") or as one of the baselines.
LAUNCH = ("import sys, torch; import monitor.learn.memory as m, monitor.learn.trainer as t\n"
          "variant = sys.argv.pop(1)\n"
          "if variant == 'no-trim': m._TRIM = None\n"
          "if variant == 'teacher-graph': t._teacher_logits = torch.enable_grad()(t._teacher_logits.__wrapped__)\n"
          "from monitor.cli import main; sys.exit(main(sys.argv[1:]))")
BASELINES = ("no-trim", "teacher-graph")


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def replay(work: Path, variant: str, args: argparse.Namespace) -> dict[str, float]:
    """One learning replay; resident memory (MB) before the first run, kept after the runs, and at peak."""
    tag = variant
    registry, out, config = work / f"registry-{tag}", work / f"out-{tag}", work / f"config-{tag}.yaml"
    monitor = str(Path(sys.executable).with_name("monitor"))
    subprocess.run([monitor, "model", "--registry", str(registry), "add", str(BASE), "--promote"], check=True,
                   capture_output=True)
    settings = {"min_new_labels": args.every, "retrain_every_labels": args.every, "min_gate_examples": 5,
                "floor_labels": 20, "epochs": args.epochs, "cooldown_s": 0}
    config.write_text(f"model:\n  path: {registry}\nlearning:\n  enabled: true\n  settings:\n"
                      + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in settings.items()), encoding="utf-8")
    feed_path = work / "feed.jsonl"
    feed(feed_path, args.labels, 0, 120.0, 600.0)
    log_path = work / f"{tag}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, variant, "replay", str(feed_path),
                                 "--config", str(config), "--out", str(out), "--learn", "--no-progress",
                                 "--format", "csv"], stdout=log, stderr=subprocess.STDOUT)
    samples: list[tuple[int, int]] = []  # (runs started so far, resident kB)

    def sample() -> None:
        while proc.poll() is None:
            kb = rss_kb(proc.pid)
            started = log_path.read_text(errors="replace").count(" starts (")  # "training run N starts (...)"
            if kb:
                samples.append((started, kb))
            time.sleep(1.0)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    proc.wait()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{tag} replay failed (exit {proc.returncode}); see {log_path}")
    runs = max((r for r, _ in samples), default=0)
    before = [kb for r, kb in samples if r == 0][-1:] or [0]  # the last sample before the first run started
    late = [kb for r, kb in samples if r >= max(runs - 1, 1)]
    return {"runs": runs, "before_mb": before[0] / 1024, "kept_mb": min(late, default=0) / 1024,
            "peak_mb": max(kb for _, kb in samples) / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=300, help="labelled sentences replayed (default 300)")
    parser.add_argument("--every", type=int, default=40, help="a training run every N labels (default 40)")
    parser.add_argument("--rounds", type=int, default=1, help="baseline/shipped pairs, alternating (default 1)")
    parser.add_argument("--baseline", choices=BASELINES, default="no-trim",
                        help="what the shipped loop is compared with (default no-trim)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each run (default 1)")
    args = parser.parse_args(argv)
    if not data_dir().is_dir() or not (BASE / SEED_FILE).is_file():
        print(f"shared data ({data_dir()}) or the served model ({BASE}) missing: skipped")
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="learn-memory-") as tmp:
        for i in range(args.rounds):
            for variant in (args.baseline, "shipped"):
                work = Path(tmp) / f"{i}-{variant}"
                work.mkdir()
                row = {"variant": variant, **replay(work, variant, args)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("| learning loop | runs | before the first run | kept after the runs | peak |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['runs']} | {r['before_mb']:.0f} MB | {r['kept_mb']:.0f} MB "
              f"| {r['peak_mb']:.0f} MB |")
    for key, what in (("kept_mb", "growth kept"), ("peak_mb", "peak")):
        base = [r[key] - (r["before_mb"] if key == "kept_mb" else 0) for r in rows if r["variant"] != "shipped"]
        fixed = [r[key] - (r["before_mb"] if key == "kept_mb" else 0) for r in rows if r["variant"] == "shipped"]
        if base and fixed:
            b, f = sum(base) / len(base), sum(fixed) / len(fixed)
            print(f"{what}: {args.baseline} {b:.0f} MB, shipped {f:.0f} MB (ratio {f / b:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
