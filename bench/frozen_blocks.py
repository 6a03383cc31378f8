"""What computing the frozen blocks once saves: one learner update's ``fit``, cached against run every step.

The learner's update freezes the embeddings and the lowest ``freeze_layers`` blocks (3 of
all-MiniLM-L6-v2's 6 by default). ``fit`` computes their output once per training example and
runs only the blocks above in each step (``TrainConfig.cache_frozen``, the default); with it off
every step runs the whole network. Both give the same weights (checked here: the largest weight
difference is printed). The two variants run alternately, ``--rounds`` times each, on the same
training set and seed, so a load change on the machine hits both alike.

The training set is an update's: ``--new`` labelled examples and ``--replay`` x as many replayed
ones, with the serving model as the distillation teacher, at the learner's default settings
(``monitor.learn.settings.TrainSettings``), ``--epochs`` epochs (8 by default in the learner; 2 here
to keep the run short: the saving is per epoch, the one-off pass is reported apart). It also times the
teacher's logits over the training set, whole and from the frozen blocks' cached states (as ``fit`` takes them
when the teacher is the serving model the update started from). Texts: the
PhraseBank stream and Twitter training tweets of ``var/bench/domain`` when it was built
(``bench/continual_domain_data.py``), else ``sample_data/train.jsonl``.

    nice -n 5 .venv/bin/python bench/frozen_blocks.py --rounds 2
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.datasets import read_labelled  # noqa: E402
from monitor.learn import TrainConfig, fit  # noqa: E402
from monitor.learn.precompute import lower_states, teacher_logits  # noqa: E402
from monitor.learn.settings import TrainSettings  # noqa: E402
from monitor.model import MultiTaskClassifier, default_backbone  # noqa: E402
from monitor.model.batching import encode  # noqa: E402
from monitor.model.checkpoint import load_checkpoint  # noqa: E402
from monitor.records import Example  # noqa: E402

DOMAIN = ROOT / "var" / "bench" / "domain"
BASE = ROOT / "var" / "bench" / "twitter_base"


def training_set(new: int, replay: int) -> tuple[list[Example], str]:
    if (DOMAIN / "pb_stream.jsonl").is_file():
        stream = read_labelled(DOMAIN / "pb_stream.jsonl", "jsonl")[:new]
        tweets = read_labelled(DOMAIN / "twitter_train.jsonl", "jsonl")[: replay * len(stream)]
        return stream + tweets, "PhraseBank stream + Twitter training tweets"
    data = read_labelled(ROOT / "sample_data" / "train.jsonl", "jsonl")
    return data[: new * (1 + replay)], "sample_data/train.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=int, default=500)
    parser.add_argument("--replay", type=int, default=2, help="replayed examples per new one (replay_ratio)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, source = training_set(args.new, args.replay)
    if BASE.is_dir():
        loaded = load_checkpoint(BASE)
        serving, tokenizer, model_name = loaded.model, loaded.tokenizer, str(BASE.relative_to(ROOT))
    else:
        torch.manual_seed(0)
        serving = MultiTaskClassifier.from_backbone(default_backbone())
        tokenizer, model_name = AutoTokenizer.from_pretrained(str(default_backbone())), "the backbone, fresh heads"
    serving.eval()
    ts = TrainSettings()
    print(f"{len(train)} training examples ({source}); model {model_name}; freeze_layers {ts.freeze_layers}, "
          f"{args.epochs} epochs, batch {ts.batch_size}, {args.threads} thread(s)", flush=True)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    weights: dict[bool, dict[str, torch.Tensor]] = {}
    for r in range(args.rounds):
        for cache in (True, False) if r % 2 == 0 else (False, True):
            model = copy.deepcopy(serving)
            cfg = TrainConfig(epochs=args.epochs, batch_size=ts.batch_size, lr_encoder=ts.lr_encoder,
                              lr_head=ts.lr_head, max_length=64, patience=ts.patience,
                              freeze_embeddings=ts.freeze_embeddings, freeze_layers=ts.freeze_layers,
                              distill_weight=ts.distill_weight, distill_temperature=ts.distill_temperature,
                              device="cpu", cache_frozen=cache)
            started = time.perf_counter()
            fit(model, tokenizer, train, [], cfg, teacher=serving, progress=False)
            seconds[cache].append(time.perf_counter() - started)
            weights[cache] = model.state_dict()
            print(f"round {r + 1}: {'once' if cache else 'every step':>10}  {seconds[cache][-1]:7.1f} s", flush=True)
    once, every = statistics.median(seconds[True]), statistics.median(seconds[False])
    diff = max(float((weights[True][k].float() - weights[False][k].float()).abs().max()) for k in weights[True])
    whole, cached, logit_diff = teacher_seconds(serving, tokenizer, train, ts.freeze_layers, args.rounds)
    print(json.dumps({"examples": len(train), "epochs": args.epochs, "rounds": args.rounds,
                      "frozen_once_s": round(once, 1), "every_step_s": round(every, 1),
                      "ratio": round(once / every, 3), "max_weight_difference": diff,
                      "teacher_whole_s": round(whole, 2), "teacher_from_states_s": round(cached, 2),
                      "teacher_max_logit_difference": logit_diff}))
    return 0


def teacher_seconds(serving: MultiTaskClassifier, tokenizer: Any, train: list[Example], below: int,
                    rounds: int) -> tuple[float, float, float]:
    """The distillation teacher's logits over ``train``: median seconds of its whole forward pass and of its upper
    blocks on the frozen blocks' cached states (what ``fit`` does when the teacher is the serving model the student
    started from), alternately ``rounds`` times each, and the largest logit difference between the two."""
    ids = encode(tokenizer, [e.text for e in train], 64)
    sources = [e.source for e in train]
    pad, cpu = tokenizer.pad_token_id or 0, torch.device("cpu")
    states = lower_states(serving, ids, pad, cpu, below, 64)
    times: dict[bool, list[float]] = {True: [], False: []}
    logits: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}
    for r in range(rounds):
        for from_states in (True, False) if r % 2 == 0 else (False, True):
            started = time.perf_counter()
            logits[from_states] = teacher_logits(serving, ids, sources, pad, cpu, 64, serving,
                                                  states if from_states else None, below)
            times[from_states].append(time.perf_counter() - started)
    difference = max(float((a - b).abs().max()) for a, b in zip(logits[True], logits[False], strict=True))
    return statistics.median(times[False]), statistics.median(times[True]), difference


if __name__ == "__main__":
    raise SystemExit(main())
