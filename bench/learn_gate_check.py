"""Does the gate agree with held-out data on real text? One learner update, end to end, on CPU.

A base model (MiniLM) is trained on Twitter sentiment + topic tweets; its replay seed goes into a
registry's buffer as ``monitor model add`` does. Then one retrain run of the learner
(``monitor.learn.incremental.retrain``, default settings) on N labelled Financial PhraseBank
sentences (a domain the base never saw), with the seeded buffer's replay sample and holdout. The
gate's verdict and numbers are printed next to what large held-out sets say about the challenger:
PhraseBank test accuracy (gain) and held-out tweets (forgetting). Skips when ../shared/data is absent.

    nice -n 10 .venv/bin/python bench/learn_gate_check.py --labels 300 --base-examples 800 \
        --base-freeze-layers 3 --test-size 500 --threads 2
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from monitor.datasets import read_labelled
from monitor.learn import TrainConfig, evaluate, fit
from monitor.learn.buffer import ReplayBuffer, example_key, in_holdout
from monitor.learn.incremental import RunInput, retrain
from monitor.learn.settings import parse_settings
from monitor.learn.warmstart import seed_buffer, write_seed
from monitor.model.backbone import default_backbone, load_encoder
from monitor.model.checkpoint import CheckpointMeta, save_checkpoint
from monitor.model.network import MultiTaskClassifier
from monitor.registry import ModelRegistry

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DATA = DATA if DATA.is_dir() else Path("/work/shared/data")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", type=int, default=400, help="PhraseBank labels the update gets")
    p.add_argument("--base-examples", type=int, default=3000, help="tweets of each Twitter set for the base")
    p.add_argument("--base-epochs", type=int, default=1)
    p.add_argument("--base-freeze-layers", type=int, default=0, help="frozen encoder layers of the base (CPU time)")
    p.add_argument("--test-size", type=int, default=1000, help="held-out examples per test set")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--settings", default="{}", help="learner settings overrides, JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/results/learn_gate_check.json"))
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent")
        return 0
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    sent = read_labelled(DATA / "twitter_financial_news_sentiment" / "sent_train.csv", "twitter-sentiment")
    topic = read_labelled(DATA / "twitter_financial_news_topic" / "train_data.csv", "twitter-topic")
    pb = read_labelled(DATA / "financial_phrasebank" / "FinancialPhraseBank-v1.0" / "Sentences_50Agree.txt",
                       "phrasebank")
    for xs in (sent, topic, pb):
        rng.shuffle(xs)
    base_train = sent[: args.base_examples] + topic[: args.base_examples]
    n = args.test_size
    tweets_test = sent[-n:] + topic[-n:]
    pb_stream, pb_test = pb[: args.labels], pb[-n:]
    work = Path(tempfile.mkdtemp(prefix="gate-check-"))
    backbone = default_backbone()
    tokenizer = AutoTokenizer.from_pretrained(str(backbone), local_files_only=True)
    torch.manual_seed(args.seed)
    model = MultiTaskClassifier(load_encoder(backbone))
    started = time.perf_counter()
    cfg = TrainConfig(epochs=args.base_epochs, max_length=64, device="cpu", seed=args.seed,
                      freeze_layers=args.base_freeze_layers)
    fit(model, tokenizer, base_train, [], cfg, progress=False)
    base_s = time.perf_counter() - started
    registry = ModelRegistry(work / "registry").init()
    meta = CheckpointMeta(version="base", parent=None, backbone=str(backbone), topics=model.topics,
                          sentiments=model.sentiments, data_fingerprint="", max_length=64)
    save_checkpoint(model, tokenizer, meta, registry.path("base"))
    write_seed(registry.path("base"), base_train, seed=args.seed)
    registry.set_current("base", reason="gate check")
    settings = parse_settings(json.loads(args.settings))
    b = settings.buffer
    buffer = ReplayBuffer(b.buffer_size, b.holdout_fraction, b.period_s, b.seed, b.holdout_size)
    seeded = seed_buffer(buffer, registry.path("base"))

    window = [e for e in pb_stream if not in_holdout(e, b.holdout_fraction)]
    for e in pb_stream:
        buffer.add(e)
    replay = buffer.sample(round(settings.train.replay_ratio * len(window)), random.Random(args.seed),
                           exclude={example_key(e) for e in window})
    captured: list[Any] = []

    def capture(m: Any, *a: Any, **kw: Any) -> Any:
        captured.append(m)
        return fit(m, *a, **kw)

    job = RunInput(serving_version="base", new=tuple(window), replay=tuple(replay), holdout=buffer.holdout,
                   trigger="gate check", seed=args.seed, version="challenger")
    started = time.perf_counter()
    result = retrain(registry, job, settings, device="cpu", fit_fn=capture)
    update_s = time.perf_counter() - started
    challenger = captured[0]

    def scores(m: Any) -> dict[str, float]:
        t = evaluate(m, tweets_test, tokenizer, max_length=64)
        return {"phrasebank_accuracy": evaluate(m, pb_test, tokenizer, max_length=64).heads["sentiment"].accuracy,
                "tweets_sentiment_accuracy": t.heads["sentiment"].accuracy,
                "tweets_topic_accuracy": t.heads["topic"].accuracy}

    before, after = scores(model.eval()), scores(challenger.eval())
    report = {"labels": args.labels, "window": len(window), "replay": len(replay), "seeded": seeded,
              "holdout": len(buffer.holdout), "base_seconds": round(base_s, 1), "update_seconds": round(update_s, 1),
              "outcome": result.outcome, "reason": result.reason, "gate": result.numbers, "fit": result.fit,
              "held_out_before": before, "held_out_after": after,
              "held_out_tests": {"phrasebank": len(pb_test), "tweets": len(tweets_test)}}
    print(json.dumps(report, indent=2, default=str))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
