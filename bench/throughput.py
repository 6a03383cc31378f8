"""Serving speed: forward-only ceilings, the daemon end to end through a real broker, latency, RSS.

In one run, variants interleaved round by round (the shared machine's load drifts; ratios within
a round are what to read):

1. **forward only** on the same texts, one torch thread: the seed-style loop (each message
   tokenized padded to 128 and run alone), the baseline batching (length-sorted inside 64-text
   slices, batches of 32: the predictor at commit a361fcd), and the predictor of this tree with
   each backend (torch, ONNX, ONNX int8), called on all texts at once (the ceiling) and on
   ``--poll``-text slices (what the daemon hands it under backlog);
2. **end to end**: ``monitor run`` as a subprocess on a real local Kafka broker, learning off,
   with a backlog of ``--messages`` (>= 3,000) messages: msg/s over the last 90 % of the results
   (Kafka timestamps of the outputs),
   launch-to-first-result time, peak RSS (VmHWM), labels compared with the baseline daemon's;
   the baseline daemon is the code at ``--baseline`` (an unpacked tree of commit a361fcd);
3. **latency at half of peak**: the same daemon, then fed at half its own backlog rate for
   ``--paced-s`` seconds: ``latency_ms`` (poll to publish) and Kafka timestamp to timestamp
   p50/p95/p99;
4. **int8**: accuracy of fp32 and int8 ONNX per head and their agreement on the Twitter test
   splits (stratified 80/10/10, seed 0, as in bench/classifier.py).

Needs a trained checkpoint (``--model``; the demo model is too weak to judge int8) and the Twitter
sets in ``../shared/data`` (``MONITOR_SHARED_DATA``); exits 0 with a message when they are absent.
Run it niced on a shared machine::

    nice -n 10 .venv/bin/python bench/throughput.py --model /tmp/twitter_model --baseline /tmp/baseline

Writes ``bench/results/throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from monitor.config import BatchConfig  # noqa: E402
from monitor.datasets import read_labelled, split_examples  # noqa: E402
from monitor.records import Example  # noqa: E402

FILES = {"twitter_sentiment": ("twitter_financial_news_sentiment/sent_train.csv", "twitter-sentiment"),
         "twitter_topic": ("twitter_financial_news_topic/train_data.csv", "twitter-topic")}


def data_dir() -> Path:
    return Path(os.environ.get("MONITOR_SHARED_DATA", ROOT.parent / "shared" / "data"))


def splits() -> dict[str, tuple[list[Example], list[Example]]]:
    """(validation, test) per Twitter set: the 80/10/10 split of bench/classifier.py."""
    out = {}
    for name, (rel, fmt) in FILES.items():
        rest, test = split_examples(read_labelled(data_dir() / rel, fmt), 0.1, seed=0)
        _, val = split_examples(rest, 1 / 9, seed=1)
        out[name] = (val, test)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


# --- forward only -------------------------------------------------------------------------------------
def forward_only(model_dir: Path, texts: list[str], seed_texts: int, poll: int, rounds: int,
                 int8_ok: bool, max_length: int, baseline_poll: int = 64) -> dict[str, Any]:
    from monitor.config import ModelConfig
    from monitor.model.predictor import Predictor
    from monitor.serving import load_predictor

    torch.set_num_threads(1)
    settings = ModelConfig(path=str(model_dir), device="cpu", threads=1, max_length=max_length)
    onnx, loaded = load_predictor(model_dir, settings)
    ours_torch, _ = load_predictor(model_dir, ModelConfig(path=str(model_dir), device="cpu", threads=1,
                                                          max_length=max_length, backend="torch"))
    baseline = Predictor(loaded.model, loaded.tokenizer, "a361fcd-style", device="cpu", max_length=max_length,
                         batch_size=32)
    int8 = _int8_predictor(model_dir, loaded, max_length) if int8_ok else None
    tokenizer, model = loaded.tokenizer, loaded.model

    def seed_loop(sample: list[str]) -> None:
        with torch.inference_mode():
            for t in sample:
                enc = tokenizer([t], padding="max_length", truncation=True, max_length=128, return_tensors="pt")
                model(enc["input_ids"], enc["attention_mask"])

    def slices(predictor: Any, size: int) -> Any:
        return lambda sample: [predictor.predict(sample[i:i + size]) for i in range(0, len(sample), size)]

    variants: dict[str, tuple[Any, int]] = {
        "seed_loop": (seed_loop, seed_texts),
        f"baseline_torch_{baseline_poll}": (slices(baseline, baseline_poll), len(texts)),
        "baseline_torch_all": (slices(baseline, len(texts)), len(texts)),
        f"torch_budget_{poll}": (slices(ours_torch, poll), len(texts)),
        "torch_budget_all": (slices(ours_torch, len(texts)), len(texts)),
        f"onnx_budget_{poll}": (slices(onnx, poll), len(texts)),
        "onnx_budget_all": (slices(onnx, len(texts)), len(texts)),
    }
    if int8 is not None:
        variants[f"int8_budget_{poll}"] = (slices(int8, poll), len(texts))
        variants["int8_budget_all"] = (slices(int8, len(texts)), len(texts))
    rates: dict[str, list[float]] = {k: [] for k in variants}
    padding: dict[str, float] = {}
    for _ in range(rounds):
        for name, (run, n) in variants.items():
            started = time.perf_counter()
            run(texts[:n])
            rates[name].append(n / (time.perf_counter() - started))
    for name, predictor in (("baseline", baseline), ("torch", ours_torch), ("onnx", onnx)):
        share = []
        for i in range(0, len(texts), poll):
            predictor.predict(texts[i:i + poll])
            share.append(predictor.last_stats.padding_share)
        padding[f"{name}_{poll}"] = round(statistics.mean(share), 4)
    best = {k: max(v) for k, v in rates.items()}
    ref = best[f"baseline_torch_{baseline_poll}"]
    return {"msg_per_s_best": {k: round(v, 1) for k, v in best.items()},
            "msg_per_s_rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
            "ratio_to_baseline_batching": {k: round(v / ref, 2) for k, v in best.items()},
            "padding_share": padding, "texts": len(texts), "seed_loop_texts": seed_texts}


def _int8_predictor(model_dir: Path, loaded: Any, max_length: int) -> Any:
    from monitor.model.backends import _open_onnx
    from monitor.model.onnx_export import read_record
    from monitor.model.onnx_int8 import quantize
    from monitor.model.predictor import Predictor

    def make(backend: Any) -> Predictor:
        return Predictor(loaded.model, loaded.tokenizer, "int8", max_length=max_length, batch_size=32,
                         max_tokens=256, backend=backend)

    record = read_record(model_dir)
    assert record is not None and record.accepted, "no accepted ONNX export"
    if not record.int8:
        from monitor.model.onnx_backend import OnnxBackend

        quantize(model_dir, record, make(_open_onnx(model_dir, "onnx", 1)),
                 lambda p, s: make(OnnxBackend.from_file(p, s, 1, "onnx-int8")))
    return make(_open_onnx(model_dir, "onnx-int8", 1))


def int8_report(model_dir: Path, tests: dict[str, list[Example]], max_length: int) -> dict[str, Any]:
    from monitor.config import ModelConfig
    from monitor.serving import load_predictor

    fp32, loaded = load_predictor(model_dir, ModelConfig(path=str(model_dir), device="cpu", threads=1,
                                                         max_length=max_length))
    int8 = _int8_predictor(model_dir, loaded, max_length)
    out: dict[str, Any] = {}
    for name, examples in tests.items():
        head = "sentiment" if "sentiment" in name else "topic"
        texts = [e.text for e in examples]
        a, b = fp32.predict(texts), int8.predict(texts)
        truth = [getattr(e, head) for e in examples]
        acc32 = sum(getattr(x, head) == t for x, t in zip(a, truth, strict=True)) / len(truth)
        acc8 = sum(getattr(y, head) == t for y, t in zip(b, truth, strict=True)) / len(truth)
        agree = sum(getattr(x, head) == getattr(y, head) for x, y in zip(a, b, strict=True)) / len(truth)
        out[name] = {"head": head, "examples": len(truth), "fp32_accuracy": round(acc32, 4),
                     "int8_accuracy": round(acc8, 4), "loss_pt": round((acc32 - acc8) * 100, 2),
                     "agreement": round(agree, 4)}
    return out


# --- end to end ---------------------------------------------------------------------------------------
class Daemon:
    """``monitor run`` from ``code`` (a source tree) as a subprocess, on its own fresh topics."""

    def __init__(self, name: str, code: Path, bootstrap: str, model: Path, work: Path, extra_model: dict[str, Any],
                 max_batch: int, max_length: int) -> None:
        self.name, self.code, self.bootstrap = name, code, bootstrap
        tag = f"{name}-{uuid.uuid4().hex[:6]}"
        self.input, self.output = f"in-{tag}", f"out-{tag}"
        cfg = {
            "kafka": {"bootstrap_servers": bootstrap, "input_topics": [self.input], "output_topic": self.output,
                      "dead_letter_topic": f"dlq-{tag}", "alerts_topic": f"alerts-{tag}",
                      "labels_topic": f"labels-{tag}", "label_requests_topic": f"lr-{tag}", "group_id": tag,
                      "topic_partitions": 1},
            "batch": {"max_batch": max_batch, "max_wait_ms": 200},
            "model": {"path": str(model), "device": "cpu", "threads": 1, "max_length": max_length, **extra_model},
            "metrics": {"port": 0},
            "logging": {"level": "WARNING"},
        }
        self.config = work / f"{tag}.json"
        self.config.write_text(json.dumps(cfg))
        self.log = work / f"{tag}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.launched = 0.0

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(self.code), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.launched = time.time()
        launcher = self.config.parent / "serve.py"
        launcher.write_text("import sys\nfrom monitor.cli import main\nsys.exit(main(sys.argv[1:]))\n")
        self.proc = subprocess.Popen([sys.executable, str(launcher), "run", "--config", str(self.config)], env=env,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def check(self) -> None:
        """Raise if the daemon has exited (a crash, or killed by someone else's process sweep)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} daemon exited with {self.proc.returncode}; see {self.log}")

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _item(i: int, text: str, run: str) -> bytes:
    return json.dumps({"id": f"{run}-{i:06d}", "text": text, "source": "bench", "kind": "news",
                       "published_at": "2026-03-02T09:00:00Z", "tickers": []}).encode()


def _collect(bootstrap: str, topic: str, expected: int, timeout_s: float, daemon: Daemon | None = None) -> list[Any]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
            if daemon is not None:
                daemon.check()
    finally:
        consumer.close()
    return out


def end_to_end(daemon: Daemon, texts: list[str], paced_s: float, timeout_s: float,
               rate: float | None = None) -> dict[str, Any]:
    """Backlog phase, then the paced phase at half the backlog rate (or ``rate``)."""
    from kafka import KafkaProducer

    from monitor.broker import create_topics

    create_topics(daemon.bootstrap, [daemon.input, daemon.output], 1)
    producer = KafkaProducer(bootstrap_servers=daemon.bootstrap, acks="all", linger_ms=0)
    for i, text in enumerate(texts):
        producer.send(daemon.input, value=_item(i, text, "b"))
    producer.flush()
    daemon.start()
    got = _collect(daemon.bootstrap, daemon.output, len(texts), timeout_s, daemon)
    if len(got) < len(texts):
        daemon.stop()
        raise RuntimeError(f"{daemon.name}: {len(got)} of {len(texts)} results in {timeout_s} s; see {daemon.log}")
    stamps = sorted(r.timestamp for r in got)
    skip = len(stamps) // 10  # steady state: the last 90 % of the backlog (the first batches warm up)
    backlog_rate = (len(stamps) - 1 - skip) / max(1e-3, (stamps[-1] - stamps[skip]) / 1000.0)
    labels = {json.loads(r.value)["id"]: (json.loads(r.value)["topic"], json.loads(r.value)["sentiment"])
              for r in got}
    paced_rate = rate or backlog_rate / 2
    n_paced = max(50, int(paced_rate * paced_s))
    sent: dict[str, float] = {}

    def feed() -> None:
        start = time.time()
        for i in range(n_paced):
            wait = start + i / paced_rate - time.time()
            if wait > 0:
                time.sleep(wait)
            sent[f"p-{i:06d}"] = time.time()
            producer.send(daemon.input, value=_item(i, texts[i % len(texts)], "p"))
        producer.flush()

    feeder = threading.Thread(target=feed)
    feeder.start()
    all_out = _collect(daemon.bootstrap, daemon.output, len(texts) + n_paced, timeout_s, daemon)
    feeder.join()
    rss = daemon.peak_rss_mb()
    daemon.stop()
    producer.close()
    paced = [r for r in all_out if json.loads(r.value)["id"].startswith("p-")]
    latency = [float(json.loads(r.value)["latency_ms"]) for r in paced]
    in_stamp = {}
    for r in _collect(daemon.bootstrap, daemon.input, len(texts) + n_paced, 60):
        in_stamp[json.loads(r.value)["id"]] = r.timestamp
    paced_ids = [(r, json.loads(r.value)["id"]) for r in paced]
    ts_to_ts = [r.timestamp - in_stamp[i] for r, i in paced_ids if i in in_stamp]
    return {
        "messages": len(texts), "msg_per_s": round(backlog_rate, 1),
        "startup_s": round(stamps[0] / 1000.0 - daemon.launched, 2), "peak_rss_mb": round(rss, 1),
        "paced_rate": round(paced_rate, 1), "paced_messages": len(paced),
        "latency_ms": {"p50": round(pct(latency, 50), 1), "p95": round(pct(latency, 95), 1),
                       "p99": round(pct(latency, 99), 1)},
        "kafka_ts_to_ts_ms": {"p50": pct(ts_to_ts, 50), "p95": pct(ts_to_ts, 95), "p99": pct(ts_to_ts, 99)},
        "_labels": labels,
    }


def _labelled_state(work: Path, val: dict[str, list[Example]]) -> Path:
    """A learner state dir (buffer.jsonl holdout + window.jsonl) from the validation splits, for the int8 guard."""
    from monitor.learn.buffer import save_examples

    state = work / "learner"
    holdout = [e for examples in val.values() for e in examples[:300]]
    recent = [e for examples in val.values() for e in examples[300:600]]
    save_examples(state / "buffer.jsonl", holdout, {"kind": "replay-buffer"}, tags=["holdout"] * len(holdout))
    save_examples(state / "window.jsonl", recent, {"kind": "window"})
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a trained checkpoint directory (copied; the copy gets the export)")
    parser.add_argument("--baseline", type=Path, default=Path("/tmp/baseline"),
                        help="source tree of the baseline daemon (git archive a361fcd | tar -x -C DIR)")
    parser.add_argument("--messages", type=int, default=3000, help="backlog per end-to-end run (default 3000)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--poll", type=int, default=BatchConfig().max_batch,
                        help="messages per poll of this tree's daemons, batch.max_batch (default: its default, "
                             "%(default)s)")
    parser.add_argument("--baseline-poll", type=int, default=64,
                        help="batch.max_batch of the baseline daemon (default 64, its default at a361fcd)")
    parser.add_argument("--paced-s", type=float, default=20.0, help="seconds of the half-peak phase (default 20)")
    parser.add_argument("--forward-texts", type=int, default=1000, help="texts of the forward-only runs")
    parser.add_argument("--variants", default="baseline,torch,onnx,int8",
                        help="end-to-end variants to run (also: onnx_threads_auto, model.threads auto)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "throughput.json")
    args = parser.parse_args(argv)
    if args.model is None or not (args.model / "meta.json").is_file():
        print("throughput: needs --model DIR, a trained checkpoint (monitor train); skipping")
        return 0
    if not all((data_dir() / rel).is_file() for rel, _ in FILES.values()):
        print(f"throughput: Twitter sets not found under {data_dir()}; skipping")
        return 0
    variants = args.variants.split(",")
    if "baseline" in variants and not (args.baseline / "monitor" / "app.py").is_file():
        print(f"throughput: no baseline tree at {args.baseline} (git archive a361fcd | tar -x -C DIR); skipping it")
        variants.remove("baseline")
    from monitor.broker import Broker, BrokerConfig

    data = splits()
    texts = [e.text for _, test in data.values() for e in test] + [e.text for val, _ in data.values() for e in val]
    random.Random(0).shuffle(texts)
    texts = texts[: args.messages]
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    model = Path(shutil.copytree(args.model, work / "model", ignore=shutil.ignore_patterns("*.onnx", "onnx.json")))
    started = time.time()
    report: dict[str, Any] = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "machine": {"cpus": os.cpu_count(), "load_1m_start": os.getloadavg()[0],
                                          "torch_threads": 1},
                              "settings": {k: str(v) for k, v in vars(args).items()}}
    # One truncation length for every variant: the checkpoint's (the daemon of this tree serves with it).
    from monitor.model.checkpoint import CheckpointMeta

    max_length = CheckpointMeta.from_dict(json.loads((model / "meta.json").read_text())).max_length
    report["settings"]["max_length"] = str(max_length)
    print(f"forward only: {args.forward_texts} texts, {args.rounds} rounds, max_length {max_length} ...", flush=True)
    report["forward_only"] = forward_only(model, texts[: args.forward_texts], 150, args.poll, args.rounds, True,
                                          max_length, args.baseline_poll)
    print(json.dumps(report["forward_only"]["msg_per_s_best"]), flush=True)
    report["int8_twitter_test"] = int8_report(model, {k: test for k, (_, test) in data.items()}, max_length)
    print(json.dumps(report["int8_twitter_test"]), flush=True)
    labels_dir = _labelled_state(work, {k: val for k, (val, _) in data.items()})
    extra = {"baseline": {}, "torch": {"backend": "torch"}, "onnx": {"backend": "auto"},
             "int8": {"backend": "auto", "int8": True, "int8_labels_dir": str(labels_dir)},
             "onnx_threads_auto": {"backend": "auto", "threads": "auto"}}
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with Broker(BrokerConfig(data_dir=work / "kafka")) as broker:
        for r in range(args.rounds):
            for v in variants:
                code = args.baseline if v == "baseline" else ROOT
                poll = args.baseline_poll if v == "baseline" else args.poll
                daemon = Daemon(v, code, broker.bootstrap, model, work, extra[v], poll, max_length)
                result = end_to_end(daemon, texts, args.paced_s, timeout_s=900)
                runs[v].append(result)
                print(f"round {r + 1} {v}: {result['msg_per_s']} msg/s, start {result['startup_s']} s, "
                      f"RSS {result['peak_rss_mb']} MB, p99 {result['latency_ms']['p99']} ms at "
                      f"{result['paced_rate']} msg/s", flush=True)
    summary: dict[str, Any] = {}
    ref = "baseline" if "baseline" in runs else variants[0]
    for v, results in runs.items():
        best = max(results, key=lambda x: x["msg_per_s"])
        ratios = [x["msg_per_s"] / b["msg_per_s"] for x, b in zip(results, runs[ref], strict=True)]
        same = [sum(x["_labels"][k] == b["_labels"].get(k) for k in x["_labels"]) / len(x["_labels"])
                for x, b in zip(results, runs[ref], strict=True)]
        summary[v] = {
            "msg_per_s": [x["msg_per_s"] for x in results],
            "ratio_to_baseline_per_round": [round(x, 2) for x in ratios],
            "labels_identical_to_baseline": [round(s, 4) for s in same],
            "startup_s": [x["startup_s"] for x in results], "peak_rss_mb": [x["peak_rss_mb"] for x in results],
            "latency_ms_at_half_peak": [x["latency_ms"] for x in results],
            "kafka_ts_to_ts_ms_at_half_peak": [x["kafka_ts_to_ts_ms"] for x in results],
            "paced_rate": [x["paced_rate"] for x in results], "best_msg_per_s": best["msg_per_s"],
        }
    fwd = report["forward_only"]["msg_per_s_best"]
    ceiling = {"baseline": fwd.get("baseline_torch_all"), "torch": fwd.get("torch_budget_all"),
               "onnx": fwd.get("onnx_budget_all"), "int8": fwd.get("int8_budget_all")}  # one thread each
    for v in summary:
        if ceiling.get(v):
            summary[v]["ratio_to_forward_ceiling"] = round(summary[v]["best_msg_per_s"] / ceiling[v], 2)
    report["end_to_end"] = summary
    report["seconds"] = round(time.time() - started, 1)
    report["machine"]["load_1m_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out} ({report['seconds']} s)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
