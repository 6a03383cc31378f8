"""Domain adaptation from a few hundred streamed labels (issue #10, point 4): one update, offline.

The served model (``monitor train`` on both Twitter sets, see ``continual_domain_data``) gets ``N``
labelled PhraseBank sentences, as the learner's retrain would: the learner's split (``gate_fraction``
held out for the gate, ``val_fraction`` of the rest for early stopping), a replay sample drawn from
the warm-start seed (a sample of the served model's training tweets in their class mix, as
``monitor train`` writes it; recipe key ``warm_mix`` "balanced": a class-balanced one), the learner's
``TrainSettings`` (freezing, learning rates, epochs, distillation from the serving model). The
challenger is then scored, whatever a gate would say, on held-out PhraseBank sentences (``tune`` or
``final``) and on the held-out tweets (sentiment and topic).

Figures per run: accuracy before/after on each set, the gap recovered
``(after - before) / (reference - before)`` where the reference is a model trained from the backbone
on the 2,907 in-domain sentences (stream + reference parts), forgetting (tweet accuracy lost) with the
standard error of the paired difference, training time. One JSON line per run is appended to
``--out``. A recipe is the learner's settings (``learning.settings`` keys) plus ``n_labels`` and
``warm_per_class``; ``--recipe '{}'`` is the DEFAULT settings of ``monitor.learn.settings``.

    MONITOR_SHARED_DATA=/work/shared/data nice -n 10 .venv/bin/python bench/continual_adapt.py \\
        --split tune --recipe '{"distill_weight": 0.0}' --out bench/results/continual_adapt_tuning.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from continual_domain_data import ROOT, build, data_dir
from transformers import AutoTokenizer

from monitor.datasets import read_labelled
from monitor.learn import TrainConfig, fit
from monitor.learn.buffer import ReplayBuffer
from monitor.learn.evidence import split
from monitor.learn.settings import LearnerSettings, parse_settings
from monitor.learn.warmstart import trained_sources
from monitor.model import MultiTaskClassifier, Predictor, default_backbone
from monitor.model.checkpoint import load_checkpoint
from monitor.model.onnx_export import write_atomic
from monitor.records import Example

DOMAIN = ROOT / "var" / "bench" / "domain"
BASE = ROOT / "var" / "bench" / "twitter_base"
CACHE = ROOT / "var" / "bench" / "adapt_cache.json"
#: The in-domain reference: the classifier benchmark's PhraseBank recipe, from the backbone.
REFERENCE = TrainConfig(epochs=3, batch_size=16, lr_encoder=1e-4, lr_head=1e-3, freeze_layers=2, patience=2)
#: Recipe keys that are not learner settings: labels streamed, warm-start examples per class of each head.
EXTRA_KEYS = ("n_labels", "warm_per_class", "warm_mix")
ALSO_FINAL = False
#: The learner's gate and holdout choices by a hash of the text (when the learner has them).
try:
    from monitor.learn.buffer import in_holdout
    from monitor.learn.evidence import in_gate
except ImportError:  # an older learner: the gate set is a seeded split
    in_gate = None  # type: ignore[assignment]


def load(name: str) -> list[Example]:
    return read_labelled(DOMAIN / f"{name}.jsonl", "jsonl")


def correct(predictor: Predictor, examples: Sequence[Example], head: str, by_source: bool = True) -> list[int]:
    """Per-example correctness (0/1) of ``head`` on examples that carry its label; ``by_source``: each with its
    source's logit offsets, as served (False: the shared heads' answers, as for an item of an unknown source)."""
    rows = [e for e in examples if getattr(e, head) is not None]
    out = predictor.predict([e.text for e in rows], [e.source for e in rows] if by_source else None)
    return [int(getattr(p, head) == getattr(e, head)) for p, e in zip(out, rows, strict=True)]


def score(model: MultiTaskClassifier, tokenizer: Any, sets: dict[str, tuple[list[Example], str]],
          max_length: int, by_source: bool = True) -> dict[str, list[int]]:
    predictor = Predictor(model, tokenizer, "bench", max_length=max_length, batch_size=64)
    return {name: correct(predictor, examples, head, by_source) for name, (examples, head) in sets.items()}


def paired(before: list[int], after: list[int]) -> dict[str, float]:
    """Accuracies, their difference and the standard error of the paired difference."""
    n = len(before)
    d = [a - b for a, b in zip(after, before, strict=True)]
    mean_d = sum(d) / n
    var = sum((x - mean_d) ** 2 for x in d) / (n - 1)
    return {"n": n, "before": round(sum(before) / n, 4), "after": round(sum(after) / n, 4),
            "diff": round(mean_d, 4), "se": round(math.sqrt(var / n), 4),
            "won": d.count(1), "lost": d.count(-1)}


def warm_seed(train: Sequence[Example], per_class: int, seed: int, mix: str = "natural") -> list[Example]:
    """A sample of the served model's training data: ``per_class`` x its classes examples per head.

    ``mix`` "natural" (``monitor train``'s seed since round 10): drawn uniformly, so the classes
    keep the proportions of the training data (neutral tweets are about 65 %); "balanced":
    ``per_class`` of each (head, class).
    """
    rng = random.Random(seed)
    cells: dict[tuple[str, str], list[Example]] = {}
    for e in train:
        key = ("topic", e.topic) if e.topic is not None else ("sentiment", e.sentiment or "")
        cells.setdefault(key, []).append(e)
    out: list[Example] = []
    if mix == "natural":
        for head in sorted({h for h, _ in cells}):
            members = [e for (h, _), m in sorted(cells.items()) if h == head for e in m]
            n = per_class * sum(1 for h, _ in cells if h == head)
            out += rng.sample(members, min(n, len(members)))
        return out
    for key in sorted(cells):
        members = cells[key]
        out += rng.sample(members, min(per_class, len(members)))
    return out


def eval_sets(split_name: str) -> dict[str, tuple[list[Example], str]]:
    """The held-out sets scored; with ``--also-final`` the final split too (reported, never used to choose)."""
    # The held-out tweets of the tuning runs were looked at while choosing; the final split scores
    # forgetting on the served model's validation tweets instead (only its early stopping saw them).
    tweets = load("twitter_test") if split_name == "tune" else load("twitter_val")
    return {"new_domain": (load(f"pb_{split_name}"), "sentiment"),
            **({"new_domain_final": (load("pb_final"), "sentiment")} if ALSO_FINAL and split_name == "tune" else {}),
            "tweets_sentiment": ([e for e in tweets if e.sentiment is not None], "sentiment"),
            "tweets_topic": ([e for e in tweets if e.topic is not None], "topic")}


def cached(key: str, compute: Any) -> Any:
    """``compute()``, kept in ``CACHE`` under ``key``.

    Several seeds run as parallel processes: the file is re-read just before the write (keys
    another process added meanwhile are kept) and replaced atomically (never read half-written).
    """
    cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    if key not in cache:
        value = compute()
        cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
        cache[key] = value
        write_atomic(CACHE, json.dumps(cache).encode("utf-8"))
    return cache[key]


def reference_scores(split_name: str, max_length: int, domain: str = "pb") -> dict[str, list[int]]:
    """The in-domain model: trained from the backbone on the domain's training parts (length 64, cached).

    ``pb``: PhraseBank stream + reference parts, scored on tune and final; ``se`` (SemEval headlines): the
    stream pool, scored on final only (no choice is made on that domain).
    """
    parts, splits = {"pb": (("pb_stream", "pb_ref"), ("tune", "final")), "se": (("se_stream",), ("final",))}[domain]

    def compute() -> dict[str, list[int]]:
        backbone = default_backbone()
        torch.manual_seed(0)
        model = MultiTaskClassifier.from_backbone(backbone)
        tokenizer = AutoTokenizer.from_pretrained(str(backbone))
        data = [e for part in parts for e in load(part)]
        train, val = split(data, 0.1, random.Random(0))
        started = time.perf_counter()
        fit(model, tokenizer, train, val, REFERENCE, progress=False)
        print(f"reference trained on {len(train)} in {time.perf_counter() - started:.0f} s", flush=True)
        return {s: score(model, tokenizer, {"new_domain": (load(f"{domain}_{s}"), "sentiment")},
                         max_length)["new_domain"] for s in splits}
    return {"new_domain": cached("reference@64" if domain == "pb" else f"reference-{domain}@64", compute)[split_name]}


def run(recipe: dict[str, Any], split_name: str, seed: int,
        merge_ratios: Sequence[float] = ()) -> list[dict[str, Any]]:
    original = dict(recipe)
    extra = {k: recipe.pop(k) for k in EXTRA_KEYS if k in recipe}
    val_fraction = recipe.pop("val_fraction", None) if recipe.get("val_fraction") == 0 else None  # older learner
    settings: LearnerSettings = parse_settings(recipe)
    ts, gs = settings.train, settings.gate
    n_labels, per_class = int(extra.get("n_labels", 500)), int(extra.get("warm_per_class", 100))
    loaded = load_checkpoint(BASE)
    model, tokenizer = loaded.model, loaded.tokenizer
    max_length = getattr(loaded.meta, "max_length", None) or getattr(ts, "max_length", 64)
    serving = copy.deepcopy(model)
    stream = load("se_stream" if split_name == "se-tune" else "pb_stream")
    random.Random(seed).shuffle(stream)
    labelled = stream[:n_labels]
    if split_name == "se-tune":  # SemEval headlines: the pool's sentences this seed did not stream, and the tune tweets
        tweets = load("twitter_test")
        sets = {"new_domain": (stream[n_labels:], "sentiment"),
                "tweets_sentiment": ([e for e in tweets if e.sentiment is not None], "sentiment"),
                "tweets_topic": ([e for e in tweets if e.topic is not None], "topic")}
        # Its gap is against the in-domain model's accuracy on se_final (it trained on these sentences).
        reference = reference_scores("final", max_length, "se")
    else:
        sets = eval_sets(split_name)
        reference = reference_scores(split_name, max_length)
    before = cached(f"base:{split_name}{f'-{seed}' if split_name == 'se-tune' else ''}@{max_length}",
                    lambda: score(serving, tokenizer, sets, max_length))
    if ALSO_FINAL and split_name == "tune":
        final_sets = {"new_domain": (load("pb_final"), "sentiment")}
        final_before = cached(f"base:final-new@{max_length}", lambda: score(serving, tokenizer, final_sets,
                                                                             max_length))
        before = {**before, "new_domain_final": final_before["new_domain"]}

    # As the learner does: a label whose text hashes into the holdout share feeds the forgetting
    # holdout and never trains; the rest is the window (gate set + new training data).
    new = [e for e in labelled if in_gate is None or not in_holdout(e, settings.buffer.holdout_fraction)]
    # The learner's buffer, seeded as `monitor model add` seeds it (its holdout share never replays),
    # and its replay draw (an equal share per head).
    buffer = ReplayBuffer(settings.buffer.buffer_size, settings.buffer.holdout_fraction, seed=seed)
    for e in warm_seed(load("twitter_train"), per_class, seed, str(extra.get("warm_mix", "natural"))):
        buffer.add(e)
    seed_buffer = buffer.examples
    rng = random.Random(seed)
    replay = buffer.sample(ts.replay_size(len(new)), rng)
    if in_gate is not None:
        gate_set = [e for e in new if in_gate(e, gs.gate_fraction)]
        new_train = [e for e in new if not in_gate(e, gs.gate_fraction)]
    else:
        new_train, gate_set = split(new, gs.gate_fraction, rng)
    train = new_train + (replay if ts.method in ("replay", "replay_distill") else [])
    val_fraction = ts.val_fraction if val_fraction is None else val_fraction
    train, val = split(train, val_fraction, rng) if val_fraction > 0 else (train, [])
    cfg = TrainConfig(epochs=ts.epochs, batch_size=ts.batch_size, lr_encoder=ts.lr_encoder, lr_head=ts.lr_head,
                      max_length=max_length, patience=ts.patience, freeze_embeddings=ts.freeze_embeddings,
                      freeze_layers=ts.freeze_layers, seed=seed, distill_weight=ts.distill_weight,
                      distill_temperature=ts.distill_temperature, device="cpu",
                      **({"offset_sources": ts.offset_sources(new_train, trained_sources(BASE, replay),
                                                              model.source_offsets),
                          "lr_offsets": ts.source_offset_lr} if hasattr(ts, "offset_sources") else {}),
                      **({"distill_congruent": ts.congruent} if hasattr(ts, "congruent") else {}))
    teacher = serving if ts.method == "replay_distill" else None
    rows = ts.distill_rows(train, replay) if hasattr(ts, "distill_rows") else None
    fitted = fit(model, tokenizer, train, val, cfg, teacher=teacher, progress=False,
                 **({"distill_rows": rows} if rows is not None else {}))
    sizes = {"labels": len(labelled), "window": len(new), "new_trained": len(new_train), "gate": len(gate_set),
             "replay": len(replay) if teacher is not None or ts.method == "replay" else 0,
             "train": len(train), "val": len(val), "warm_seed": len(seed_buffer)}
    start = {name: p.detach().clone() for name, p in serving.named_parameters()}
    results = []
    for ratio in [None, *merge_ratios]:  # None: the recipe as trained
        merged = model
        if ratio is not None:  # the same fit, its weights interpolated toward the served model's
            merged = copy.deepcopy(model)
            interpolate(merged, start, ratio)
        after = score(merged, tokenizer, sets, max_length)
        results.append(figures(original if ratio is None else {**original, "merge_ratio": ratio}, split_name,
                               seed, ts, gs, max_length, sizes, before, after, reference, fitted,
                               [str(e.sentiment) for e in sets["tweets_sentiment"][0]]))
        if getattr(merged, "source_offsets", None):
            blind = score(merged, tokenizer, {"new_domain": sets["new_domain"]}, max_length, by_source=False)
            # the new domain without its source's logit offsets (as an evaluation that drops the source sees it)
            results[-1]["source_blind"] = gap_figures(before["new_domain"], blind["new_domain"],
                                                      reference["new_domain"])
    return results


def gap_figures(before: list[int], after: list[int], reference: list[int]) -> dict[str, Any]:
    """The new domain's paired scores, the in-domain reference's accuracy and the share of the gap to it recovered."""
    new_domain = paired(before, after)
    ref_acc = sum(reference) / len(reference)
    gap = ref_acc - new_domain["before"]
    return {"reference_accuracy": round(ref_acc, 4), "new_domain": new_domain,
            "gap_recovered": round((new_domain["after"] - new_domain["before"]) / gap, 3) if gap > 0 else None}


@torch.no_grad()
def interpolate(model: torch.nn.Module, start: dict[str, torch.Tensor], ratio: float) -> None:
    """Weight-space interpolation (WiSE-FT, Wortsman et al. 2022): each parameter to start + ratio x (it - start)."""
    for name, parameter in model.named_parameters():
        parameter.mul_(ratio).add_(start[name], alpha=1.0 - ratio)


def figures(recipe: dict[str, Any], split_name: str, seed: int, ts: Any, gs: Any, max_length: int,
            sizes: dict[str, int], before: dict[str, list[int]], after: dict[str, list[int]],
            reference: dict[str, list[int]], fitted: Any, sentiments: Sequence[str]) -> dict[str, Any]:
    """One result row: the update's scores against the served model's and the reference's."""
    result = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "split": split_name, "seed": seed, "recipe": recipe,
        "settings": {"train": ts.model_dump() if hasattr(ts, "model_dump") else asdict(ts),
                     "gate_fraction": gs.gate_fraction, "max_length": max_length},
        "sizes": sizes,
        **gap_figures(before["new_domain"], after["new_domain"], reference["new_domain"]),
        "forgetting": {k: paired(before[k], after[k]) for k in ("tweets_sentiment", "tweets_topic")},
        "forgetting_by_class": by_class(before["tweets_sentiment"], after["tweets_sentiment"], sentiments),
        **({"final_split": final_figures(before, after)} if "new_domain_final" in after else {}),
        "fit": {"epochs": fitted.epochs_run, "best_epoch": fitted.best_epoch, "stop": fitted.stop_reason,
                "seconds": round(fitted.seconds, 1), "examples_seen": fitted.examples_seen},
    }
    return result


def by_class(before: list[int], after: list[int], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """The paired difference of each true class: a class-balanced holdout weighs them equally, the tweets do not."""
    rows: dict[str, tuple[list[int], list[int]]] = {}
    for b, a, label in zip(before, after, labels, strict=True):
        rows.setdefault(label, ([], []))[0].append(b)
        rows[label][1].append(a)
    return {label: paired(*rows[label]) for label in sorted(rows)}


def final_figures(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, Any]:
    """The same update scored on the final split (PhraseBank sentences no choice was made on)."""
    reference = reference_scores("final", 64)["new_domain"]
    return gap_figures(before["new_domain_final"], after["new_domain_final"], reference)


def summary(r: dict[str, Any]) -> str:
    f = r["forgetting"]
    return (f"{r['split']} seed {r['seed']} {json.dumps(r['recipe'])}: new {r['new_domain']['before']:.3f} -> "
            f"{r['new_domain']['after']:.3f} (ref {r['reference_accuracy']:.3f}, gap recovered "
            f"{r['gap_recovered']}); tweets sentiment {f['tweets_sentiment']['diff']:+.4f} "
            f"(se {f['tweets_sentiment']['se']:.4f}), topic {f['tweets_topic']['diff']:+.4f} "
            f"(se {f['tweets_topic']['se']:.4f}); fit {r['fit']['seconds']} s, {r['fit']['epochs']} epochs")


def table(path: Path) -> str:
    """The runs in ``path`` as a markdown table (mean over seeds of each split and recipe, with their spread)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        groups.setdefault((r["split"], json.dumps(r["recipe"], sort_keys=True)), []).append(r)
    rows = ["| split | recipe | seeds | new domain before -> after (ref) | gap recovered | tweets sentiment | "
            "tweets topic | fit s |", "|---|---|---:|---|---:|---:|---:|---:|"]
    for (split_name, recipe), rs in groups.items():
        def avg(f: Any, rs: list[dict[str, Any]] = rs) -> float:
            return sum(f(r) for r in rs) / len(rs)

        gaps = [r["gap_recovered"] for r in rs]
        spread = f" ({min(gaps):.2f}-{max(gaps):.2f})" if len(rs) > 1 else ""
        sent = avg(lambda r: r["forgetting"]["tweets_sentiment"]["diff"])
        top = avg(lambda r: r["forgetting"]["tweets_topic"]["diff"])
        se_s = rs[0]["forgetting"]["tweets_sentiment"]["se"]
        se_t = rs[0]["forgetting"]["tweets_topic"]["se"]
        rows.append(f"| {split_name} | `{recipe}` | {len(rs)} | {avg(lambda r: r['new_domain']['before']):.3f} -> "
                    f"{avg(lambda r: r['new_domain']['after']):.3f} ({rs[0]['reference_accuracy']:.3f}) | "
                    f"{avg(lambda r: r['gap_recovered']):.2f}{spread} | {sent * 100:+.1f} pt (se {se_s * 100:.1f}) | "
                    f"{top * 100:+.1f} pt (se {se_t * 100:.1f}) | {avg(lambda r: r['fit']['seconds']):.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("tune", "final", "se-tune"), default="tune",
                        help="se-tune: SemEval headlines streamed, scored on the pool's sentences not streamed "
                             "(never se_final) and the test tweets")
    parser.add_argument("--recipe", action="append", default=[], help="JSON settings; repeatable (one run each)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "continual_adapt_tuning.jsonl")
    parser.add_argument("--also-final", action="store_true",
                        help="with --split tune: also score the final split (recorded, not for choosing)")
    parser.add_argument("--merge-ratios", type=float, nargs="*", default=[],
                        help="also score the same fit with its weights interpolated toward the served model's "
                             "(WiSE-FT; a row per ratio, recipe key merge_ratio; measured in round 10, not kept)")
    parser.add_argument("--table", action="store_true", help="print the runs in --out as a markdown table and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.out))
        return 0
    if not data_dir().is_dir():
        print(f"shared data not found at {data_dir()}: skipped")
        return 0
    if not BASE.is_dir():
        print(f"no served base model at {BASE}: train it first (bench/README.md)", file=sys.stderr)
        return 2
    if not (DOMAIN / "sizes.json").is_file():
        build(DOMAIN, 5000)
    torch.set_num_threads(args.threads)
    global ALSO_FINAL
    ALSO_FINAL = args.also_final
    for text in args.recipe or ["{}"]:
        for seed in args.seeds:
            for result in run(json.loads(text), args.split, seed, args.merge_ratios):
                print(summary(result), flush=True)
                with args.out.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
