"""Deterministic splits of the shared data for the domain-adaptation scenario (issue #10, point 4).

Old domain: the two Twitter sets, split 80/10/10 exactly as ``bench/classifier.py`` does (seed 0),
the train part subsampled to ``--per-set`` tweets a set (the 2-core CPU budget). New domain:
Financial PhraseBank 50Agree minus nothing, split into a *stream* part (labels streamed through
``monitor replay --learn``), a *reference train* part (the in-domain model), and two held-out
parts: ``tune`` (every recipe choice was made on it) and ``final`` (reported once, never tuned on).

Third domain (``--semeval``; no choice was ever made on it): the SemEval-2017 task 5 headlines (train
and gold test), one example a distinct title, its sentiment the mean of its targets' scores cut at
+-0.1 (the threshold the data's README states); 35 % ``se_final`` (scored), the rest ``se_stream``
(the pool a replay's labels are drawn from, and the in-domain reference model's training data).

    .venv/bin/python bench/continual_domain_data.py --out var/bench/domain
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from monitor.datasets import read_labelled, sample, split_examples
from monitor.records import Example

ROOT = Path(__file__).resolve().parents[1]
TWITTER = {
    "twitter_sentiment": ("twitter_financial_news_sentiment/sent_train.csv", "twitter-sentiment"),
    "twitter_topic": ("twitter_financial_news_topic/train_data.csv", "twitter-topic"),
}
PHRASEBANK = ("financial_phrasebank/FinancialPhraseBank-v1.0/Sentences_50Agree.txt", "phrasebank")
SEMEVAL = ("semeval2017_task5/Headline_Trainingdata.json", "semeval2017_task5/Headlines_Testdata_withscores.json")
#: A title's mean score below minus this is negative, above it positive, neutral between (the data README's).
SEMEVAL_THRESHOLD = 0.1


def data_dir() -> Path:
    return Path(os.environ.get("MONITOR_SHARED_DATA", ROOT.parent / "shared" / "data"))


def three_way(examples: list[Example], seed: int = 0) -> tuple[list[Example], list[Example], list[Example]]:
    """Stratified 80/10/10 train/validation/test split (the classifier benchmark's)."""
    rest, test = split_examples(examples, 0.1, seed=seed)
    train, val = split_examples(rest, 1 / 9, seed=seed + 1)
    return train, val, test


def write_jsonl(path: Path, examples: list[Example]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for e in examples:
            row = {"text": e.text, "source": e.source}
            if e.topic is not None:
                row["topic"] = e.topic
            if e.sentiment is not None:
                row["sentiment"] = e.sentiment
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def build(out: Path, per_set: int, seed: int = 0) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    parts: dict[str, list[Example]] = {"twitter_train": [], "twitter_val": [], "twitter_test": []}
    for name, (rel, fmt) in TWITTER.items():
        train, val, test = three_way(read_labelled(data_dir() / rel, fmt), seed)
        train = sample(train, per_set, seed=seed)
        val = sample(val, max(200, per_set // 8), seed=seed)
        parts["twitter_train"] += train
        parts["twitter_val"] += val
        parts["twitter_test"] += test
        write_jsonl(out / f"{name}_test.jsonl", test)
        sizes[f"{name}_test"] = len(test)
    # New domain: PhraseBank 50Agree. 20 % final, 20 % tune, 30 % stream, 30 % reference train.
    rel, fmt = PHRASEBANK
    pb = [Example(e.text, sentiment=e.sentiment, source="phrasebank") for e in read_labelled(data_dir() / rel, fmt)]
    rest, final = split_examples(pb, 0.2, seed=seed + 10)
    rest, tune = split_examples(rest, 0.25, seed=seed + 11)
    ref, stream = split_examples(rest, 0.5, seed=seed + 12)
    parts.update(pb_final=final, pb_tune=tune, pb_stream=stream, pb_ref=ref)
    for name, examples in parts.items():
        write_jsonl(out / f"{name}.jsonl", examples)
        sizes[name] = len(examples)
    (out / "sizes.json").write_text(json.dumps(sizes, indent=1) + "\n")
    return sizes


def semeval_headlines() -> list[Example]:
    """The SemEval-2017 headlines, one example a distinct title (a title with several targets: the mean score)."""
    scores: dict[str, list[float]] = {}
    for rel in SEMEVAL:
        for row in json.loads((data_dir() / rel).read_text(encoding="utf-8")):
            value = row["sentiment"] if "sentiment" in row else row["sentiment score"]
            scores.setdefault(" ".join(row["title"].split()), []).append(float(value))
    labelled = []
    for title, values in scores.items():
        mean = sum(values) / len(values)
        label = "negative" if mean < -SEMEVAL_THRESHOLD else "positive" if mean > SEMEVAL_THRESHOLD else "neutral"
        labelled.append(Example(title, sentiment=label, source="semeval"))
    return labelled


def build_semeval(out: Path, seed: int = 0) -> dict[str, int]:
    """``se_final.jsonl`` (35 %, scored) and ``se_stream.jsonl`` (the rest: stream pool and reference training)."""
    out.mkdir(parents=True, exist_ok=True)
    stream, final = split_examples(semeval_headlines(), 0.35, seed=seed + 30)
    for name, examples in (("se_final", final), ("se_stream", stream)):
        write_jsonl(out / f"{name}.jsonl", examples)
    return {"se_final": len(final), "se_stream": len(stream)}


def fresh(out: Path, per_set: int = 5000, n: int = 1000, seed: int = 0) -> Path:
    """``twitter_fresh.jsonl``: ``n`` tweets a set from the train splits that ``twitter_train`` did not take.

    The served model never saw them (not even for early stopping) and no tuning choice looked at them:
    the forgetting test of the final split of ``adapt_replay``.
    """
    path = out / "twitter_fresh.jsonl"
    if path.is_file():
        return path
    picked: list[Example] = []
    for rel, fmt in TWITTER.values():
        train, _, _ = three_way(read_labelled(data_dir() / rel, fmt), seed)
        used = {e.text for e in sample(train, per_set, seed=seed)}
        picked += sample([e for e in train if e.text not in used], n, seed=seed + 20)
    write_jsonl(path, picked)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "domain")
    parser.add_argument("--per-set", type=int, default=5000, help="Twitter training tweets a set")
    parser.add_argument("--semeval", action="store_true", help="only the third domain's parts (se_final, se_stream)")
    args = parser.parse_args()
    if not data_dir().is_dir():
        print(f"shared data not found at {data_dir()}: skipped")
        return 0
    print(json.dumps(build_semeval(args.out) if args.semeval else build(args.out, args.per_set), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
