"""The label join store: durable across restarts (SQLite WAL), bounded by retention time and size."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from monitor.learn.joins import JoinCache, Seen

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def seen(i: int, confidence: float = 0.9) -> Seen:
    return Seen(f"n{i}", f"text {i} \u00e9", "wire", AT, "Macro", "neutral", confidence, "v1")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_predictions_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "joins.sqlite"
    store = JoinCache(100, path)
    for i in range(10):
        store.put(seen(i))
    store.close()  # or a crash: every put is committed
    again = JoinCache(100, path)
    assert len(again) == 10 and again.get("n3") == seen(3) and again.get("nope") is None
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_kill_without_close_loses_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys

    import monitor.learn.joins as joins

    path = tmp_path / "joins.sqlite"
    # The module is loaded from its file, so the child does not import torch through monitor.learn.
    code = ("import importlib.util, os\n"
            f"spec = importlib.util.spec_from_file_location('joins', {joins.__file__!r})\n"
            "import sys; m = importlib.util.module_from_spec(spec); sys.modules['joins'] = m\n"
            "spec.loader.exec_module(m)\n"
            "from datetime import datetime, UTC\n"
            f"s = m.JoinCache(100, {str(path)!r})\n"
            "for i in range(50): s.put(m.Seen(f'n{i}', 't', 'w', datetime(2026, 1, 1, tzinfo=UTC), 'Macro', "
            "'neutral', 0.5, 'v1'))\n"
            "os.kill(os.getpid(), 9)\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, env={"PYTHONPATH": str(Path.cwd())})
    assert done.returncode == -9
    assert len(JoinCache(100, path)) == 50


def test_retention_time_bounds_the_store_and_leavers_are_late(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "joins.sqlite"
    store = JoinCache(100, path, retention_s=48 * 3600, clock=clock)
    store.put(seen(1))
    clock.now += 47 * 3600
    store.put(seen(2))
    store.close()
    clock.now += 2 * 3600  # n1 is 49 h old, n2 2 h
    again = JoinCache(100, path, retention_s=48 * 3600, clock=clock)
    assert again.get("n1") is None and again.was_evicted("n1")
    assert again.get("n2") == seen(2) and not again.was_evicted("n2") and len(again) == 1


def test_size_bounds_the_store_least_recently_used_out_first(tmp_path: Path) -> None:
    store = JoinCache(3, tmp_path / "j.sqlite")
    for i in range(3):
        store.put(seen(i))
    assert store.get("n0") is not None  # a use: n1 is now the least recently used
    store.put(seen(3))
    assert len(store) == 3 and store.get("n1") is None and store.was_evicted("n1")
    assert all(store.get(f"n{i}") is not None for i in (0, 2, 3))
    for i in range(4, 20):
        store.put(seen(i))
    assert len(store) == 3
    evicted = sqlite3.connect(tmp_path / "j.sqlite").execute("SELECT COUNT(*) FROM evicted").fetchone()[0]
    assert evicted <= 3  # the ids that left are bounded too


def test_label_requests_are_marked_once_and_the_mark_persists(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    store = JoinCache(100, path)
    for i, conf in enumerate((0.9, 0.3, 0.5, 0.2)):
        store.put(seen(i, conf))
    assert [s.id for s in store.most_uncertain(2, pool=10)] == ["n3", "n1"]
    store.close()
    again = JoinCache(100, path)
    assert [s.id for s in again.most_uncertain(2, pool=10)] == ["n2", "n0"]
    assert again.get("n3") is not None and again.get("n3").requested  # type: ignore[union-attr]
