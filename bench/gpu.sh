#!/usr/bin/env bash
# GPU serving check: fp32 vs fp16 (torch autocast) throughput and label agreement on CUDA, in < 5 minutes.
#
#   bench/gpu.sh [MODEL_DIR]      # a trained checkpoint; default: MiniLM with seeded random heads
#
# Texts: the Twitter sets under ../shared/data (MONITOR_SHARED_DATA) when present, else
# sample_data/feed.jsonl. Prints msg/s per precision and batch budget, the fp16/fp32 ratio and
# the share of texts whose topic and sentiment labels agree with fp32. Exits 0 with a message
# when no CUDA device is visible. Writes bench/results/gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec timeout 290 env PYTHONPATH="$PWD" "$PY" - "$@" <<'PYEOF'
import json, os, sys, time
from pathlib import Path

import torch

if not torch.cuda.is_available():
    print("gpu.sh: no CUDA device visible; nothing to measure")
    sys.exit(0)

from monitor.model import default_backbone, load_checkpoint
from monitor.model.network import MultiTaskClassifier
from monitor.model.predictor import Predictor

from transformers import AutoTokenizer

root = Path(os.environ.get("MONITOR_SHARED_DATA", Path.cwd().parent / "shared" / "data"))
texts = []
for rel in ("twitter_financial_news_topic/train_data.csv", "twitter_financial_news_sentiment/sent_train.csv"):
    if (root / rel).is_file():
        from monitor.datasets import read_labelled
        texts += [e.text for e in read_labelled(root / rel)]
if not texts:
    texts = [json.loads(line)["text"] for line in Path("sample_data/feed.jsonl").read_text().splitlines()
             if line.strip().startswith("{")]
texts = (texts * (1 + 20000 // max(1, len(texts))))[:20000]

if len(sys.argv) > 1:
    loaded = load_checkpoint(sys.argv[1], device="cuda")
    model, tokenizer, version = loaded.model, loaded.tokenizer, loaded.meta.version
else:
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(default_backbone()).eval()
    tokenizer, version = AutoTokenizer.from_pretrained(str(default_backbone())), "random-heads"

device = torch.device("cuda")
results = {"device": torch.cuda.get_device_name(0), "model": version, "texts": len(texts), "runs": {}}
labels = {}
for fp16 in (False, True):
    for max_tokens, batch in ((4096, 256), (16384, 1024)):
        p = Predictor(model, tokenizer, version, device=device, max_length=64, batch_size=batch,
                      max_tokens=max_tokens, fp16=fp16)
        p.predict(texts[:2048])  # warm-up: kernels, allocator
        torch.cuda.synchronize()
        best = 0.0
        for _ in range(3):
            started = time.perf_counter()
            out = p.predict(texts)
            torch.cuda.synchronize()
            best = max(best, len(texts) / (time.perf_counter() - started))
        name = f"{'fp16' if fp16 else 'fp32'}_tokens{max_tokens}_batch{batch}"
        labels[name] = [(s.topic, s.sentiment) for s in out]
        results["runs"][name] = {"msg_per_s": round(best, 1), "padding_share": round(p.last_stats.padding_share, 4)}
        print(f"{name}: {best:.0f} msg/s", flush=True)
ref = labels["fp32_tokens4096_batch256"]
for name, run in results["runs"].items():
    run["labels_agree_with_fp32"] = round(sum(a == b for a, b in zip(labels[name], ref)) / len(ref), 4)
    run["ratio_to_fp32"] = round(run["msg_per_s"] / results["runs"]["fp32_tokens4096_batch256"]["msg_per_s"], 2)
print(json.dumps(results, indent=1))
Path("bench/results").mkdir(parents=True, exist_ok=True)
Path("bench/results/gpu.json").write_text(json.dumps(results, indent=1) + "\n")
PYEOF
