"""Warm start: a sample of a model's training data travels with it and seeds the replay buffer.

Without it the learner's buffer starts empty: the first update is naive fine-tuning on the new
labels and the gate's forgetting holdout holds only new-domain examples, so forgetting of the
domain the model was trained on is never measured. So:

- ``monitor train`` writes ``replay_seed.jsonl`` into every checkpoint it writes, in two parts
  with the fingerprint of the whole training set in its header, both seeded random samples that
  keep the data's mix of classes and sources (``mixed_sample``):
  - *replay*: ``--replay-per-class`` (100) x the number of classes examples of each head (2,000
    topic and 300 sentiment tweets for the Twitter model);
  - *holdout*: up to ``--holdout-per-head`` (1000) examples for each head, of the validation
    examples when there are any (never trained on), else of the training examples the replay
    part did not take. They go to the forgetting holdout whole, so the gate tests forgetting of
    each head of the old domain on hundreds of answers (a 10 % hash share of the replay part
    would give the 3-class sentiment head about 30).
  Why the data's mix and not a class-balanced sample: two thirds of financial tweets are
  neutral. A balanced replay (one third neutral) taught an update that the old domain has fewer
  neutral items, and it lost neutral tweets (-4 points, 2.1 points of tweet sentiment in all;
  half that with replay in the data's mix), while a balanced holdout weighed that loss down to
  a gain (bench/README.md, tenth round).
  A retrain promoted by the learner carries a replay part (a sample of what it trained on).
- ``monitor model add CHECKPOINT [--replay-from FILE]`` copies it into the registry (or writes one
  from ``FILE``, for a model trained elsewhere) and seeds the registry's default learner buffer
  (``<registry>/learner/buffer.jsonl``) at once; the learner, when it starts, seeds its buffer
  (wherever ``state_dir`` puts it) from the serving version's seed file if it has not absorbed
  that fingerprint yet. A second start does not add the seed again.

Seeded examples enter the buffer's pool their part names (a seed written before the parts
existed: a ``holdout_fraction`` share by a hash of the text goes to the holdout, as for any
labelled example); their stratum is their source with no event time (``twitter_topic@?``), so
the gate tests forgetting on the old domain separately from the stream.

    >>> data = [Example(f"t{i}", topic="A" if i % 4 else "B", source="s1" if i % 2 else "s2") for i in range(400)]
    >>> from collections import Counter
    >>> picked = mixed_sample(data, {"topic": 40})
    >>> sorted(Counter(e.topic for e in picked).items())
    [('A', 33), ('B', 7)]
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monitor.datasets import fingerprint
from monitor.learn.buffer import ReplayBuffer, example_key, load_tagged, save_examples
from monitor.records import Example

__all__ = ["DEFAULT_HOLDOUT_PER_HEAD", "DEFAULT_PER_CLASS", "SEED_FILE", "mixed_sample",
           "read_replay_file", "read_seed", "seed_buffer", "seed_registry", "trained_sources", "write_seed"]

SEED_FILE = "replay_seed.jsonl"
#: Examples per class of each head in a seed (``monitor train --replay-per-class``).
DEFAULT_PER_CLASS = 100
#: Forgetting-holdout examples per head in a seed (``monitor train --holdout-per-head``).
DEFAULT_HOLDOUT_PER_HEAD = 1000
HEADS = ("topic", "sentiment")


def mixed_sample(examples: Sequence[Example], per_head: int | Mapping[str, int], seed: int = 0) -> list[Example]:
    """Up to ``per_head`` examples labelled for each head (a number, or one per head), drawn uniformly
    (seeded): the classes and sources keep the data's proportions. An example labelled for both
    heads counts for both.

    >>> data = [Example(f"t{i}", sentiment="neutral" if i % 4 else "negative") for i in range(400)]
    >>> from collections import Counter
    >>> sorted(Counter(e.sentiment for e in mixed_sample(data, 100)).items())
    [('negative', 24), ('neutral', 76)]
    """
    order = list(examples)
    random.Random(seed).shuffle(order)
    chosen: dict[tuple[str, str, str], Example] = {}
    for head in HEADS:
        quota = per_head if isinstance(per_head, int) else per_head.get(head, 0)
        have = sum(1 for e in chosen.values() if getattr(e, head) is not None)
        for e in order:
            if have >= quota:
                break
            if getattr(e, head) is not None and example_key(e) not in chosen:
                chosen[example_key(e)] = e
                have += 1
    return list(chosen.values())


def write_seed(directory: Path | str, examples: Sequence[Example], per_class: int = DEFAULT_PER_CLASS,
               seed: int = 0, source: str = "training data", data_fingerprint: str = "",
               holdout_per_head: int = DEFAULT_HOLDOUT_PER_HEAD, holdout_from: Sequence[Example] = ()) -> Path:
    """Write the seed of a model trained on ``examples`` into its checkpoint ``directory``.

    ``data_fingerprint``: the checkpoint's ``meta.data_fingerprint`` (default: that of ``examples``);
    ``holdout_from``: examples the model never trained on for the holdout part (default: the
    ``examples`` the replay part did not take); ``holdout_per_head`` 0: no holdout part.
    """
    classes = {head: {getattr(e, head) for e in examples} - {None} for head in HEADS}
    picked = mixed_sample(examples, {head: per_class * len(labels) for head, labels in classes.items()}, seed)
    taken = {example_key(e) for e in picked}
    pool = [e for e in (holdout_from or examples) if example_key(e) not in taken]
    held = mixed_sample(pool, holdout_per_head, seed) if holdout_per_head > 0 else []
    path = Path(directory) / SEED_FILE
    header = {"kind": "replay-seed", "fingerprint": data_fingerprint or fingerprint(examples), "per_class": per_class,
              "examples": len(picked), "holdout": len(held),
              "holdout_from": "validation examples" if holdout_from else "training examples",
              "of": len(examples), "from": source}
    save_examples(path, [*picked, *held], header, tags=["replay"] * len(picked) + ["holdout"] * len(held))
    return path


def read_seed(directory: Path | str, part: str = "") -> tuple[dict[str, Any], list[Example]]:
    """Header and examples of the seed in a checkpoint ``directory`` (``({}, [])`` when it has none).

    ``part``: only the "replay" part (what an offline update may train on) or the "holdout" part; "": both.
    """
    header, rows = load_tagged(Path(directory) / SEED_FILE)
    return header, [e for tag, e in rows if not part or (tag or "replay") == part]


def trained_sources(directory: Path | str, replay: Sequence[Example] = ()) -> set[str]:
    """The sources a checkpoint's model trained on, as far as it tells: those of its seed's replay part (a sample
    of its training data), else, for a checkpoint without a seed, those of the ``replay`` sample a run draws.

    The seed, not the run's replay sample, because the replay pool also takes a source's streamed labels as they
    age out of the window (a source whose runs were refused would stop counting as new) and a small sample can
    miss a source the model did train on.
    """
    seeded = {e.source for e in read_seed(directory, part="replay")[1]}
    return seeded or {e.source for e in replay}


def seed_buffer(buffer: ReplayBuffer, directory: Path | str) -> int:
    """Add the seed of the checkpoint ``directory`` to ``buffer`` once (by fingerprint); the examples added.

    Its replay part goes to the replay pool, its holdout part to the holdout (a seed without parts:
    by the hash of each text, as any example)."""
    header, rows = load_tagged(Path(directory) / SEED_FILE)
    mark = str(header.get("fingerprint") or "")
    if not rows or not mark or mark in buffer.seeds:
        return 0
    pools = {"replay": "train", "holdout": "holdout"}
    added = sum(buffer.add(e, pool=pools.get(tag, "")) for tag, e in rows)
    buffer.seeds.append(mark)
    return added


def seed_registry(root: Path | str, version: str, *, replay_from: Sequence[Example] | None = None,
                  per_class: int = DEFAULT_PER_CLASS, source: str = "") -> tuple[int, Path]:
    """Seed the default learner buffer of the registry at ``root`` from ``version`` (monitor model add).

    ``replay_from``: labelled examples of a model trained elsewhere; their sample (in their class mix)
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
