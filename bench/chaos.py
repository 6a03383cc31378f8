"""Chaos benchmark: `monitor run` under SIGKILLs, a broker outage and fuzzed input, on a real broker.

A dedicated single-node broker and `monitor run` (the real CLI, a tiny random BERT so the CPU is
not the bottleneck) process a stream of valid items mixed with fuzzed messages (random bytes,
random JSON, valid items with one field broken, and the hostile shapes of the poison-pill tests).

1. kills: while the stream is produced, the daemon is SIGKILLed ``--kills`` times and restarted at
   once; each restart's *recovery* is the time from its start to its first offset commit;
2. outage: with a backlog in hand, the broker is stopped for ``--outage-s`` seconds and started
   again; the same daemon process must finish the stream.

Every input message must end as a result (matched by id) or a dead letter (matched by the
``dlq.partition``/``dlq.offset`` headers). Printed and written to ``bench/results/chaos.json``:
sent, lost, duplicated, crashes (daemon exits we did not cause), dead-lettered by reason,
recovery seconds.

    nice -n 10 timeout 40m .venv/bin/python bench/chaos.py > runs/bench-chaos.log 2>&1
    .venv/bin/python bench/chaos.py --kills 2 --outage-s 10 --fuzzed 500 --valid 500   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from monitor.broker import Broker, BrokerConfig, create_topics, find_free_port

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = "2026-03-02T09:00:00Z"


# --- the input ----------------------------------------------------------------------------------------
def valid(i: int) -> bytes:
    return json.dumps({"id": f"ok-{i:06d}", "text": f"Company {i} shares rise after earnings beat",
                       "source": "wire", "published_at": PUBLISHED, "tickers": ["ABC"]}).encode()


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-10**30, 10**30)
    if kind == 3:
        return rng.uniform(-1e300, 1e300)
    if kind == 4:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000), 0x200B, 0]))
                       for _ in range(rng.randrange(12)))
    if kind in (5, 6):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(_random_json(rng, 3)): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


HOSTILE: list[bytes | None] = [
    b'{"id": "x", "text": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"id": ' + b"7" * 5000 + b', "text": "t"}',
    b'{"id": "h", "text": "\\ud800 oil", "source": "wire", "published_at": "2026-03-02T09:00:00Z"}',
    b'{"id": "h", "text": "\\u200b\\u0000", "source": "wire", "published_at": "2026-03-02T09:00:00Z"}',
    b'{"id": "h", "text": "oil", "source": "wire", "published_at": "2062-01-01T00:00:00Z"}',
    None,
    b"null",
    b"{" + b"x" * 1_040_000,
]


def fuzzed(i: int, rng: random.Random) -> tuple[bytes | None, str | None]:
    """A fuzzed message and the id it would have if it were valid (None: it cannot be)."""
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120))), None
    if kind == 1:
        return json.dumps(_random_json(rng)).encode(), None
    if kind == 2:
        return HOSTILE[i % len(HOSTILE)], None
    body: dict[str, Any] = json.loads(valid(i))
    body["id"] = f"fz-{i:06d}"
    key = rng.choice(["text", "source", "published_at", "tickers", "kind", "lang", "topic", "sentiment"])
    if kind == 3:
        body.pop(key, None)
    else:
        body[key] = _random_json(rng)
    return json.dumps(body).encode(), body["id"]


# --- the daemon -------------------------------------------------------------------------------------------
class Daemon:
    """`monitor run` in a subprocess; ``crashes`` counts the exits nobody asked for."""

    def __init__(self, config: Path, log_dir: Path) -> None:
        self.command = [sys.executable, "-m", "monitor.cli", "run", "--config", str(config)]
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.crashes = 0

    def start(self) -> float:
        self.starts += 1
        log = open(self.log_dir / f"daemon-{self.starts:02d}.log", "wb")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        return time.monotonic()

    def check(self) -> None:
        """Restart the daemon if it exited by itself (a crash)."""
        if self.proc is not None and self.proc.poll() is not None:
            self.crashes += 1
            print(f"  daemon exited by itself with {self.proc.returncode}; restarting", flush=True)
            self.start()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


def committed(admin: KafkaAdminClient, group: str) -> int:
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except Exception:  # the broker may be restarting
        return -1
    return sum(meta.offset for meta in offsets.values() if meta.offset >= 0)


def wait_commit_above(admin: KafkaAdminClient, group: str, floor: int, started: float, daemon: Daemon,
                      timeout_s: float = 120.0) -> float | None:
    """Seconds from ``started`` until the group's committed total exceeds ``floor``."""
    while time.monotonic() - started < timeout_s:
        daemon.check()
        if committed(admin, group) > floor:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def build_model(root: Path) -> Path:
    from transformers import AutoTokenizer

    from monitor.labels import DEFAULT_TOPICS, SENTIMENTS
    from monitor.model.backbone import tiny_backbone
    from monitor.model.checkpoint import CheckpointMeta, save_checkpoint
    from monitor.model.network import MultiTaskClassifier
    from monitor.registry import ModelRegistry

    backbone = tiny_backbone(root / "backbone")
    model = MultiTaskClassifier.from_backbone(backbone, DEFAULT_TOPICS, SENTIMENTS)
    meta = CheckpointMeta(version="v-chaos", parent=None, backbone=str(backbone), topics=DEFAULT_TOPICS,
                          sentiments=SENTIMENTS, data_fingerprint="none")
    registry = ModelRegistry(root / "registry").init()
    save_checkpoint(model, AutoTokenizer.from_pretrained(str(backbone)), meta, registry.path(meta.version))
    registry.set_current(meta.version, reason="chaos benchmark")
    return registry.root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--kill-every-s", type=float, default=12.0)
    ap.add_argument("--outage-s", type=float, default=90.0)
    ap.add_argument("--valid", type=int, default=6000)
    ap.add_argument("--fuzzed", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    broker = Broker(BrokerConfig(data_dir=work / "kafka", port=find_free_port(), controller_port=find_free_port()))
    broker.start()
    bootstrap = broker.bootstrap
    topics = {"news": "chaos-news", "out": "chaos-out", "dlq": "chaos-dlq", "alerts": "chaos-alerts"}
    create_topics(bootstrap, [topics["news"]], 3)
    create_topics(bootstrap, [topics["out"], topics["dlq"], topics["alerts"]], 1)
    group = "chaos"
    config = work / "monitor.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": bootstrap, "input_topics": [topics["news"]], "output_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "alerts_topic": topics["alerts"], "group_id": group,
                  "create_topics": False, "flush_timeout_s": 5, "outage_backoff_max_s": 5},
        "batch": {"max_batch": 32, "max_wait_ms": 50},
        "model": {"path": str(build_model(work / "models")), "device": "cpu", "threads": 1},
        "metrics": {"port": 0},
    }))

    # The messages, shuffled: (value, id it must come out under or None).
    messages: list[tuple[bytes | None, str | None]] = [(valid(i), f"ok-{i:06d}") for i in range(args.valid)]
    messages += [fuzzed(i, rng) for i in range(args.fuzzed)]
    rng.shuffle(messages)
    split = int(len(messages) * 0.7)  # 70 % during the kills, the rest around the outage
    sent: list[tuple[int, int, str | None]] = []  # (partition, offset, id)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2_000_000)

    def produce(batch: list[tuple[bytes | None, str | None]], rate: float | None) -> None:
        futures = []
        for n, (value, item_id) in enumerate(batch):
            key = f"k{len(sent) + n}".encode()  # kafka-python sends a null value (tombstone) only with a key
            futures.append((producer.send(topics["news"], key=key, value=value), item_id))
            if rate and n % 50 == 0:
                time.sleep(50 / rate)
        producer.flush()
        sent.extend((f.get().partition, f.get().offset, item_id) for f, item_id in futures)

    daemon = Daemon(config, work)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    recoveries: list[float | None] = []  # None: nothing left to commit, so not measurable
    t0 = time.monotonic()
    print(f"chaos: {len(messages)} messages ({args.valid} valid, {args.fuzzed} fuzzed), {args.kills} kills, "
          f"{args.outage_s:.0f} s outage; work dir {work}", flush=True)
    try:
        # --- phase 1: kills while the stream arrives -------------------------------------------------------
        rate = split / max(1.0, args.kills * args.kill_every_s * 1.4)  # the stream outlasts the kills
        feeder = threading.Thread(target=produce, args=(messages[:split], rate))
        feeder.start()
        started = daemon.start()
        wait_commit_above(admin, group, 0, started, daemon)
        for kill in range(args.kills):
            deadline = time.monotonic() + args.kill_every_s * rng.uniform(0.5, 1.5)
            while time.monotonic() < deadline:
                daemon.check()
                time.sleep(0.1)
            floor = committed(admin, group)
            daemon.kill()
            started = daemon.start()
            took = wait_commit_above(admin, group, floor, started, daemon)
            recoveries.append(took)
            print(f"  kill {kill + 1}: first commit {took if took is None else round(took, 1)} s after restart",
                  flush=True)
        feeder.join()
        # --- phase 2: a backlog, then the broker goes away ------------------------------------------------------
        produce(messages[split:(split + len(messages)) // 2], None)
        pid = daemon.proc.pid if daemon.proc else None
        time.sleep(2.0)
        print(f"  broker down for {args.outage_s:.0f} s (committed {committed(admin, group)} of {len(sent)})",
              flush=True)
        broker.stop()
        outage_start = time.monotonic()
        while time.monotonic() - outage_start < args.outage_s:
            daemon.check()
            time.sleep(0.5)
        broker.start()
        print("  broker back", flush=True)
        produce(messages[(split + len(messages)) // 2:], None)
        deadline = time.monotonic() + 600
        while committed(admin, group) < len(sent) and time.monotonic() < deadline:
            daemon.check()
            time.sleep(0.5)
        same_process = daemon.proc is not None and daemon.proc.pid == pid
        exit_code = daemon.stop()
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
        admin.close()
        producer.close()

    # --- accounting ---------------------------------------------------------------------------------------------
    def read(topic: str) -> list[Any]:
        consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                 enable_auto_commit=False, group_id=None, consumer_timeout_ms=10_000)
        out = list(consumer)
        consumer.close()
        return out

    outputs, dead = read(topics["out"]), read(topics["dlq"])
    broker.stop()
    out_ids = Counter(json.loads(r.value)["id"] for r in outputs)
    dead_at = Counter((int(dict(r.headers)["dlq.partition"]), int(dict(r.headers)["dlq.offset"])) for r in dead)
    reasons = Counter(dict(r.headers)["dlq.reason"].decode() for r in dead)
    lost = [(p, o, i) for p, o, i in sent if (p, o) not in dead_at and (i is None or i not in out_ids)]
    duplicated = sum(c - 1 for c in out_ids.values()) + sum(c - 1 for c in dead_at.values())
    measured = [r for r in recoveries if r is not None]
    result = {
        "sent": len(sent), "valid": args.valid, "fuzzed": args.fuzzed, "lost": len(lost),
        "duplicated": duplicated, "crashes": daemon.crashes, "kills": args.kills,
        "outage_s": args.outage_s, "same_process_through_outage": same_process, "exit_code": exit_code,
        "results": sum(out_ids.values()), "dead_letters": sum(dead_at.values()),
        "dead_lettered_by_reason": dict(sorted(reasons.items())),
        "recovery_s": [None if r is None else round(r, 2) for r in recoveries],
        "recovery_s_max": round(max(measured), 2) if measured else None,
        "recovery_s_median": round(sorted(measured)[len(measured) // 2], 2) if measured else None,
        "wall_s": round(time.monotonic() - t0, 1), "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not lost and not daemon.crashes and same_process else 1


if __name__ == "__main__":
    sys.exit(main())
