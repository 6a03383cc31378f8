"""The replay buffer: a bounded, class- and stratum-balanced reservoir of labelled examples.

Every labelled example lands in one *cell*: its stratum (source, event-time period) and its
labels (topic, sentiment). When the buffer is full, a new example evicts a random member of the
largest cell, so small cells (rare classes, old regimes, quiet sources) keep everything they
have and big ones shrink towards the others: the buffer stays balanced over the label classes
and over time, which is what lets replay remind a retrained model of old regimes. Within a cell
that is already the largest, a new example replaces a random member with probability
``size / seen`` (reservoir sampling), so each cell is a uniform sample of its own stream.

A fixed share of examples (chosen by a hash of the text, so a text always goes the same way)
goes to a separate, equally balanced **holdout** that is never trained on: the promotion gate
measures forgetting on it.

``save``/``load`` write and read one JSONL file atomically (temp file, fsync, rename), random
state included, so a restarted learner continues with the same buffer and the same choices.

    >>> import random
    >>> buf = ReplayBuffer(capacity=4, holdout_fraction=0.0, seed=1)
    >>> for i in range(12):
    ...     _ = buf.add(Example(f"pos {i}", sentiment="positive"))
    >>> _ = buf.add(Example("neg 0", sentiment="negative"))
    >>> len(buf), sorted(e.sentiment for e in buf.sample(4, random.Random(0)))
    (4, ['negative', 'positive', 'positive', 'positive'])
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.records import Example

__all__ = [
    "ReplayBuffer",
    "draw_per_head",
    "example_key",
    "in_holdout",
    "load_examples",
    "load_tagged",
    "save_examples",
    "stratum",
]

FORMAT = 1
Cell = tuple[str, str, str, str]  # source, period, topic, sentiment


def example_key(e: Example) -> tuple[str, str, str]:
    """Identity of a labelled example for de-duplication: (id or text, topic, sentiment)."""
    return (e.id or e.text, e.topic or "", e.sentiment or "")


def in_holdout(e: Example, fraction: float) -> bool:
    """Whether ``e`` belongs to the holdout: a stable hash of its text below ``fraction``.

    >>> in_holdout(Example("oil falls", sentiment="negative"), 0.0), in_holdout(Example("x", topic="A"), 1.0)
    (False, True)
    """
    digest = hashlib.blake2b(e.text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def stratum(e: Example, period_s: float) -> str:
    """``source@period``: the source and the index of the event-time period ("?" without a time).

    >>> from datetime import UTC
    >>> stratum(Example("t", topic="A", source="wire", time=datetime(1970, 1, 2, 1, tzinfo=UTC)), 86400)
    'wire@1'
    """
    period = "?" if e.time is None else str(int(e.time.timestamp() // period_s))
    return f"{e.source}@{period}"


def draw_per_head(candidates: Sequence[Example], n: int, rng: random.Random) -> list[Example]:
    """Up to ``n`` distinct ``candidates``, ``n / heads`` uniformly among those labelled for each head, shuffled.

    An example labelled for both heads serves both; a head with too few examples leaves its share
    to the other (``ReplayBuffer.sample``, and ``monitor train --from`` on a seed's replay part).

    >>> pool = [Example(f"t{i}", topic="A") for i in range(90)]
    >>> pool += [Example(f"s{i}", sentiment="neutral") for i in range(10)]
    >>> sum(e.sentiment is not None for e in draw_per_head(pool, 20, random.Random(0)))
    10
    """
    if n >= len(candidates):
        return rng.sample(list(candidates), len(candidates))
    pools = sorted(([e for e in candidates if getattr(e, head) is not None] for head in ("topic", "sentiment")),
                   key=len)
    pools = [pool for pool in pools if pool]
    chosen: dict[tuple[str, str, str], Example] = {}
    for i, pool in enumerate(pools):  # the smallest first: what it cannot fill goes to the next
        quota = (n - len(chosen)) // (len(pools) - i)
        rest = [e for e in pool if example_key(e) not in chosen]
        chosen.update((example_key(e), e) for e in rng.sample(rest, min(quota, len(rest))))
    picked = list(chosen.values())
    rng.shuffle(picked)
    return picked


class _Pool:
    """Balanced reservoir cells of one side (train or holdout)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.cells: dict[Cell, list[Example]] = {}
        self.seen: Counter[Cell] = Counter()

    def __len__(self) -> int:
        return sum(len(members) for members in self.cells.values())

    def examples(self) -> list[Example]:
        return [e for cell in sorted(self.cells) for e in self.cells[cell]]

    def add(self, cell: Cell, e: Example, rng: random.Random) -> tuple[bool, Example | None]:
        """Offer ``e``: (whether it was kept, the example it evicted if any)."""
        self.seen[cell] += 1
        members = self.cells.setdefault(cell, [])
        if len(self) < self.capacity:
            members.append(e)
            return True, None
        largest = max(len(m) for m in self.cells.values())
        if len(members) >= largest:  # already the biggest cell: reservoir step inside it
            j = rng.randrange(self.seen[cell])
            if j >= len(members):
                return False, None
            evicted, members[j] = members[j], e
            return True, evicted
        return True, self._evict_from_largest(rng, then_add=(cell, e))

    def _evict_from_largest(self, rng: random.Random, then_add: tuple[Cell, Example] | None = None) -> Example:
        largest = max(len(m) for m in self.cells.values())
        victim_cell = rng.choice(sorted(c for c, m in self.cells.items() if len(m) == largest))
        victims = self.cells[victim_cell]
        j = rng.randrange(len(victims))
        victims[j], victims[-1] = victims[-1], victims[j]
        evicted = victims.pop()
        if not victims:
            del self.cells[victim_cell]
        if then_add is not None:
            self.cells.setdefault(then_add[0], []).append(then_add[1])
        return evicted

    def shrink(self, rng: random.Random) -> list[Example]:
        evicted = []
        while len(self) > self.capacity:
            evicted.append(self._evict_from_largest(rng))
        return evicted


class ReplayBuffer:
    """``add(example)``; ``sample(n, rng)``; ``holdout``; ``save(path)`` / ``ReplayBuffer.load(path, ...)``."""

    def __init__(
        self, capacity: int, holdout_fraction: float = 0.1, period_s: float = 86_400.0, seed: int = 0,
        holdout_capacity: int | None = None,
    ) -> None:
        if capacity < 1 or not 0.0 <= holdout_fraction < 1.0 or period_s <= 0:
            raise ValueError("need capacity >= 1, 0 <= holdout_fraction < 1 and period_s > 0")
        self.capacity = capacity
        self.holdout_fraction = holdout_fraction
        self.period_s = period_s
        self._train = _Pool(capacity)
        if holdout_capacity is None:
            holdout_capacity = max(1, round(capacity * holdout_fraction)) if holdout_fraction > 0 else 0
        self._holdout = _Pool(holdout_capacity if holdout_fraction > 0 else 0)
        self._rng = random.Random(seed)
        self._keys: set[tuple[str, str, str]] = set()
        self._added = 0
        self.seeds: list[str] = []
        """Fingerprints of the warm-start seeds absorbed (``monitor.learn.warmstart``), persisted."""

    def __len__(self) -> int:
        """Examples available for replay (the holdout is not counted)."""
        return len(self._train)

    @property
    def holdout(self) -> tuple[Example, ...]:
        """The held-out examples (never returned by ``sample``)."""
        return tuple(self._holdout.examples())

    @property
    def examples(self) -> tuple[Example, ...]:
        """The replay examples, grouped by cell."""
        return tuple(self._train.examples())

    @property
    def added(self) -> int:
        """Examples accepted by ``add`` since the buffer was created (persisted)."""
        return self._added

    def cell(self, e: Example) -> Cell:
        source, period = stratum(e, self.period_s).rsplit("@", 1)
        return (source, period, e.topic or "", e.sentiment or "")

    def add(self, e: Example, pool: str = "") -> bool:
        """Offer one labelled example; False for a duplicate or an unlabelled example.

        ``pool``: "train" or "holdout" puts it there (a warm-start seed's parts); "": by the hash of its text.
        """
        key = example_key(e)
        if key in self._keys or (e.topic is None and e.sentiment is None):
            return False
        if pool not in ("", "train", "holdout"):
            raise ValueError(f"pool must be train, holdout or empty, got {pool!r}")
        held = pool == "holdout" or (not pool and in_holdout(e, self.holdout_fraction))
        if held and self._holdout.capacity == 0:
            held = False
        pool_ = self._holdout if held else self._train
        kept, evicted = pool_.add(self.cell(e), e, self._rng)
        self._added += 1
        if kept:  # else it was offered to (and counted by) the reservoir, just not sampled into it
            self._keys.add(key)
        if evicted is not None:
            self._keys.discard(example_key(evicted))
        return True

    def sample(self, n: int, rng: random.Random, exclude: Collection[tuple[str, str, str]] = ()) -> list[Example]:
        """Up to ``n`` distinct replay examples, an equal share for each head, leaving out the keys in ``exclude``.

        The cells balance the classes, but a head with few classes has few cells: a seed of 100
        examples per class holds 2,000 topic tweets and 300 sentiment tweets, so a uniform draw
        would give the sentiment head 13 % of the replay. Each head (topic, sentiment) gets
        ``n / heads`` draws instead, uniform among the examples labelled for it (an example
        labelled for both serves both); a head with too few examples leaves its share to the
        other. Then shuffled.
        """
        return draw_per_head([e for e in self._train.examples() if example_key(e) not in exclude], n, rng)

    # --- persistence ----------------------------------------------------------------------------
    def save(self, path: Path | str) -> None:
        """Write the whole buffer (examples, reservoir counts, random state) atomically."""
        header = {
            "kind": "replay-buffer",
            "added": self._added,
            "seen": {name: [[*cell, n] for cell, n in sorted(pool.seen.items())]
                     for name, pool in (("train", self._train), ("holdout", self._holdout))},
            "rng": _state_to_json(self._rng.getstate()),
            "seeds": self.seeds,
        }
        pools = [("train", e) for e in self._train.examples()] + [("holdout", e) for e in self._holdout.examples()]
        save_examples(path, [e for _, e in pools], header, tags=[p for p, _ in pools])

    @classmethod
    def load(
        cls, path: Path | str, capacity: int, holdout_fraction: float = 0.1, period_s: float = 86_400.0, seed: int = 0,
        holdout_capacity: int | None = None,
    ) -> ReplayBuffer:
        """The buffer saved at ``path`` (an empty one if there is none), trimmed to its capacities."""
        buffer = cls(capacity, holdout_fraction, period_s, seed, holdout_capacity)
        if not Path(path).is_file():
            return buffer
        header, rows = _read(path)
        if header.get("kind") != "replay-buffer":
            raise ValueError(f"{path} is not a replay buffer file")
        for name, pool in (("train", buffer._train), ("holdout", buffer._holdout)):
            pool.seen.update({tuple(row[:4]): int(row[4]) for row in header["seen"].get(name, [])})
        for tag, e in rows:
            pool = buffer._holdout if tag == "holdout" else buffer._train
            pool.cells.setdefault(buffer.cell(e), []).append(e)
            buffer._keys.add(example_key(e))
        buffer._rng.setstate(_state_from_json(header["rng"]))
        buffer._added = int(header.get("added", 0))
        buffer.seeds = [str(x) for x in header.get("seeds", [])]
        for pool in (buffer._train, buffer._holdout):
            for evicted in pool.shrink(buffer._rng):
                buffer._keys.discard(example_key(evicted))
        return buffer


# --- JSONL files ------------------------------------------------------------------------------------
def _to_dict(e: Example) -> dict[str, Any]:
    return {"text": e.text, "topic": e.topic, "sentiment": e.sentiment, "source": e.source, "id": e.id,
            "time": None if e.time is None else e.time.isoformat()}


def _from_dict(row: Mapping[str, Any]) -> Example:
    time = row.get("time")
    return Example(text=row["text"], topic=row.get("topic"), sentiment=row.get("sentiment"),
                   source=row.get("source") or "unknown", id=row.get("id"),
                   time=None if time is None else datetime.fromisoformat(time))


def save_examples(
    path: Path | str, examples: Iterable[Example], header: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
) -> None:
    """Write a header line and one JSON line per example to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"format": FORMAT, **(header or {})}) + "\n")
            for i, e in enumerate(examples):
                row = _to_dict(e)
                if tags is not None:
                    row["pool"] = tags[i]
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: Path | str) -> tuple[dict[str, Any], list[tuple[str, Example]]]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0]) if lines else {"format": FORMAT}
    if header.get("format", FORMAT) > FORMAT:
        raise ValueError(f"{path} has format {header['format']}; this code reads <= {FORMAT}")
    rows = [json.loads(line) for line in lines[1:] if line.strip()]
    return header, [(row.get("pool", ""), _from_dict(row)) for row in rows]


def load_tagged(path: Path | str) -> tuple[dict[str, Any], list[tuple[str, Example]]]:
    """The header and the (tag, example) rows of a file written by ``save_examples`` with tags (empty if none)."""
    if not Path(path).is_file():
        return {}, []
    return _read(path)


def load_examples(path: Path | str) -> tuple[dict[str, Any], list[Example]]:
    """The header and the examples of a file written by ``save_examples`` (empty if it does not exist)."""
    if not Path(path).is_file():
        return {}, []
    header, rows = _read(path)
    return header, [e for _, e in rows]


def _state_to_json(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _state_from_json(body: Sequence[Any]) -> tuple[Any, ...]:
    return (body[0], tuple(body[1]), body[2])
