"""Warm start: a balanced sample of a model's training data travels with it and seeds the replay buffer.

Without it the learner's buffer starts empty: the first update is naive fine-tuning on the new
labels and the gate's forgetting holdout holds only new-domain examples, so forgetting of the
domain the model was trained on is never measured. So:

- ``monitor train`` writes ``replay_seed.jsonl`` into every checkpoint it writes: up to
  ``--replay-per-class`` examples of every class of each head, spread evenly over the sources
  (``balanced_sample``), with the fingerprint of the whole training set in its header. A retrain
  promoted by the learner carries one too (a sample of what it trained on).
- ``monitor model add CHECKPOINT [--replay-from FILE]`` copies it into the registry (or writes one
  from ``FILE``, for a model trained elsewhere) and seeds the registry's default learner buffer
  (``<registry>/learner/buffer.jsonl``) at once; the learner, when it starts, seeds its buffer
  (wherever ``state_dir`` puts it) from the serving version's seed file if it has not absorbed
  that fingerprint yet. A second start does not add the seed again.

Seeded examples enter the buffer like any labelled example: a share (``holdout_fraction``, by a
hash of the text) goes to the forgetting holdout, the rest is replayed; their stratum is their
source with no event time (``twitter_topic@?``), so the gate tests forgetting on the old domain
separately from the stream.

    >>> data = [Example(f"t{i}", topic="A" if i % 4 else "B", source="s1" if i % 2 else "s2") for i in range(40)]
    >>> from collections import Counter
    >>> picked = balanced_sample(data, per_class=6)
    >>> sorted(Counter((e.topic, e.source) for e in picked).items())
    [(('A', 's1'), 3), (('A', 's2'), 3), (('B', 's2'), 6)]
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitor.datasets import fingerprint
from monitor.learn.buffer import ReplayBuffer, example_key, load_examples, save_examples
from monitor.records import Example

__all__ = ["DEFAULT_PER_CLASS", "SEED_FILE", "balanced_sample", "read_replay_file", "read_seed", "seed_buffer",
           "seed_registry", "write_seed"]

SEED_FILE = "replay_seed.jsonl"
#: Examples per class of each head in a seed (``monitor train --replay-per-class``).
DEFAULT_PER_CLASS = 100


def balanced_sample(examples: Sequence[Example], per_class: int, seed: int = 0) -> list[Example]:
    """Up to ``per_class`` examples of each class of each head, taken from the sources in turn (seeded)."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    chosen: dict[tuple[str, str, str], Example] = {}
    for head in ("topic", "sentiment"):
        by_class: dict[str, dict[str, list[Example]]] = defaultdict(lambda: defaultdict(list))
        for e in order:
            label = getattr(e, head)
            if label is not None:
                by_class[label][e.source].append(e)
        for label, by_source in sorted(by_class.items()):
            have = sum(1 for e in chosen.values() if getattr(e, head) == label)
            queues = [by_source[s][::-1] for s in sorted(by_source)]
            while have < per_class and any(queues):
                for queue in queues:
                    if queue and have < per_class:
                        e = queue.pop()
                        if example_key(e) not in chosen:
                            chosen[example_key(e)] = e
                            have += 1
    return list(chosen.values())


def write_seed(directory: Path | str, examples: Sequence[Example], per_class: int = DEFAULT_PER_CLASS,
               seed: int = 0, source: str = "training data", data_fingerprint: str = "") -> Path:
    """Write the seed of a model trained on ``examples`` into its checkpoint ``directory``.

    ``data_fingerprint``: the checkpoint's ``meta.data_fingerprint`` (default: that of ``examples``).
    """
    picked = balanced_sample(examples, per_class, seed)
    path = Path(directory) / SEED_FILE
    header = {"kind": "replay-seed", "fingerprint": data_fingerprint or fingerprint(examples), "per_class": per_class,
              "examples": len(picked), "of": len(examples), "from": source}
    save_examples(path, picked, header)
    return path


def read_seed(directory: Path | str) -> tuple[dict[str, Any], list[Example]]:
    """Header and examples of the seed in a checkpoint ``directory`` (``({}, [])`` when it has none)."""
    return load_examples(Path(directory) / SEED_FILE)


def seed_buffer(buffer: ReplayBuffer, directory: Path | str) -> int:
    """Add the seed of the checkpoint ``directory`` to ``buffer`` once (by fingerprint); the examples added."""
    header, examples = read_seed(directory)
    mark = str(header.get("fingerprint") or "")
    if not examples or not mark or mark in buffer.seeds:
        return 0
    added = sum(buffer.add(e) for e in examples)
    buffer.seeds.append(mark)
    return added


def seed_registry(root: Path | str, version: str, *, replay_from: Sequence[Example] | None = None,
                  per_class: int = DEFAULT_PER_CLASS, source: str = "") -> tuple[int, Path]:
    """Seed the default learner buffer of the registry at ``root`` from ``version`` (monitor model add).

    ``replay_from``: labelled examples of a model trained elsewhere; their balanced sample
    becomes the version's seed file first. Buffer sizes are the learner's defaults; a learner
    configured otherwise trims the buffer when it loads it. Returns (examples added, buffer file).
    """
    from monitor.learn.online import BUFFER_FILE
    from monitor.learn.settings import parse_settings

    directory = Path(root) / "versions" / version
    if replay_from is not None:
        write_seed(directory, replay_from, per_class, source=source or "--replay-from")
    b = parse_settings(None).buffer
    path = Path(root) / "learner" / BUFFER_FILE
    buffer = ReplayBuffer.load(path, b.buffer_size, b.holdout_fraction, b.period_s, b.seed, b.holdout_size)
    added = seed_buffer(buffer, directory)
    if added:
        buffer.save(path)
    return added, path


def read_replay_file(value: str, topics: Sequence[str]) -> list[Example]:
    """The labelled examples of a ``FILE[:FORMAT]`` option (``--replay-from``); ``DataError`` if unreadable."""
    from monitor.datasets import DataError, parse_data_arg, read_labelled

    path, fmt = parse_data_arg(value)
    examples = read_labelled(path, fmt, topics=topics)
    if not examples:
        raise DataError(f"{path}: no labelled examples to replay")
    return examples
