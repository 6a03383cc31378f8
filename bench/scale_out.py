"""Scale-out throughput on the real broker: serving replicas against the all-in-one daemon.

Variants, interleaved round by round, each on a backlog of ``--messages`` items (6 input
partitions, fresh topics, one torch thread per process):

- ``run x1``: one all-in-one ``monitor run`` (learning off, alerts on);
- ``serve x1`` / ``serve x2``: one or two ``monitor serve`` replicas in one group;
- ``serve x1 + training``: one replica while a ``monitor train --from`` process (the learner's
  training, in its own process) runs beside it on the same cores.

Throughput is items over the span from the first to the last result (start-up excluded; it is
printed apart). On a 2-core machine two replicas share the cores with each other and with the
broker, so read the ratio as what a second replica buys on the same box; on separate machines
each replica adds its own cores.

    .venv/bin/python bench/scale_out.py --model var/models --messages 2000 --rounds 2

Needs the broker jars (``scripts/setup``) and a model (the demo's ``var/models`` after
``scripts/run``, or any checkpoint or registry); starts and stops its own broker.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

ROOT = Path(__file__).resolve().parents[1]


def texts(n: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (ROOT / "sample_data" / "feed.jsonl").read_text().splitlines() if line]
    return [{"id": f"b{i:06d}", "text": rows[i % len(rows)]["text"], "source": "bench",
             "published_at": rows[i % len(rows)]["published_at"]} for i in range(n)]


def produce(bootstrap: str, topic: str, items: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    for item in items:
        producer.send(topic, key=item["id"].encode(), value=json.dumps(item).encode())
    producer.flush()
    producer.close()


def wait_results(bootstrap: str, topic: str, n: int, timeout_s: float) -> tuple[float, float]:
    """Kafka timestamps (s) of the first and the last of ``n`` distinct results."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    seen.setdefault(r.key.decode(), r.timestamp)
    finally:
        consumer.close()
    if len(seen) < n:
        raise RuntimeError(f"only {len(seen)} of {n} results within {timeout_s} s")
    return min(seen.values()) / 1000.0, max(seen.values()) / 1000.0


def variant(name: str, bootstrap: str, model: str, items: list[dict[str, Any]], train_data: str | None,
            timeout_s: float) -> dict[str, float]:
    run_id = uuid.uuid4().hex[:8]
    env = {**os.environ, "MONITOR__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
           "MONITOR__KAFKA__INPUT_TOPICS": f"news-{run_id}",
           "MONITOR__KAFKA__OUTPUT_TOPIC": f"out-{run_id}", "MONITOR__KAFKA__GROUP_ID": f"g-{run_id}",
           "MONITOR__KAFKA__VERSIONS_TOPIC": f"versions-{run_id}", "MONITOR__KAFKA__TOPIC_PARTITIONS": "6",
           "MONITOR__MODEL__PATH": model, "MONITOR__MODEL__THREADS": "1", "MONITOR__METRICS__PORT": "0",
           "MONITOR__LEARNING__ENABLED": "false", "OMP_NUM_THREADS": "1"}
    from monitor.config import load_config
    from monitor.stream.admin import ensure_topics

    config = load_config(None, env=env)
    ensure_topics(config.kafka, [f"news-{run_id}", f"out-{run_id}"], partitions=6)
    produce(bootstrap, f"news-{run_id}", items)
    role, copies = {"run x1": ("run", 1), "serve x1": ("serve", 1), "serve x2": ("serve", 2),
                    "serve x1 + training": ("serve", 1)}[name]
    procs = []
    if name.endswith("training") and train_data:
        # The training process starts first and gets 20 s to import and begin its epochs, so that the
        # whole measured span of the replica overlaps training (about a minute on one thread).
        from monitor.serving import resolve_model_dir

        out = Path(tempfile.mkdtemp(prefix="bench-train-")) / "model"
        checkpoint = str(resolve_model_dir(model))
        procs.append(subprocess.Popen([sys.executable, "-m", "monitor.cli", "train", "--from", checkpoint, "--data",
                                       train_data, "--out", str(out), "--epochs", "6", "--threads", "1",
                                       "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        time.sleep(20)
    started = time.time()
    procs += [subprocess.Popen([sys.executable, "-m", "monitor.cli", role], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL) for _ in range(copies)]
    try:
        first, last = wait_results(bootstrap, f"out-{run_id}", len(items), timeout_s)
    finally:
        if name.endswith("training") and procs[0].poll() is not None:
            print(f"  (the training process had ended, exit {procs[0].returncode}: the figure is not beside training)")
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    return {"msg_per_s": len(items) / max(last - first, 1e-3), "startup_s": first - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="var/models", help="checkpoint or registry (default: var/models)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-data", default=str(ROOT / "sample_data" / "train.jsonl"))
    parser.add_argument("--timeout-s", type=float, default=900)
    args = parser.parse_args()
    model = str(Path(args.model).resolve())
    if not Path(model).exists():
        print(f"no model at {model}: run scripts/run once (it trains the demo model) or pass --model", file=sys.stderr)
        return 2
    from monitor.broker import Broker, BrokerConfig

    items = texts(args.messages)
    names = ["run x1", "serve x1", "serve x2", "serve x1 + training"]
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    with Broker(BrokerConfig(data_dir=Path(tempfile.mkdtemp(prefix="bench-kafka-")))) as broker:
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else list(reversed(names)):
                results[name].append(variant(name, broker.bootstrap, model, items, args.train_data, args.timeout_s))
                print(f"round {r + 1} {name:>20}: {results[name][-1]['msg_per_s']:7.1f} msg/s "
                      f"(first result {results[name][-1]['startup_s']:.1f} s after launch)", flush=True)
    base = statistics.median(x["msg_per_s"] for x in results["run x1"])
    print(f"\n{'variant':>20} {'msg/s (median)':>15} {'vs run x1':>10}")
    for name in names:
        rate = statistics.median(x["msg_per_s"] for x in results[name])
        print(f"{name:>20} {rate:15.1f} {rate / base:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
