"""The three continual-learning scenarios, cut from the real labelled data sets.

Each scenario is a sequence of *phases*. A phase has a **stream** (labelled examples that arrive
during the phase: the training data) and a fixed, seeded **test** set of its own. Phase 1 is
what the serving model was trained on before the benchmark starts; phases 2.. arrive as a stream.

a. **domain shift** (sentiment): Financial PhraseBank AllAgree news sentences, then Twitter
   finance tweets (sentiment, label order Bearish/Bullish/Neutral mapped by ``monitor.datasets``).
b. **class-incremental topics**: the 20 Twitter topics in 4 phases of 5 (label-id order);
   per topic the same number of examples (capped by what the rarest topics have), so each phase
   is balanced over its five topics.
c. **many small updates**: the news phase of (a), then the tweets in ``chunks`` small phases: the
   same shift as (a), learned in ``chunks`` (8) updates, to see whether forgetting builds up.

All update phases of a scenario have the same stream size (the learner retrains every that many
labels, see ``continual_runs``); a phase with more examples is cut to the smallest.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

from monitor.datasets import read_labelled
from monitor.labels import DEFAULT_TOPICS
from monitor.records import Example

__all__ = ["FILES", "Phase", "Scenario", "Sizes", "build_scenarios", "load_sources", "missing_files"]

#: Data set name -> (path under the shared data directory, reader format).
FILES: Mapping[str, tuple[str, str]] = {
    "news": ("financial_phrasebank/FinancialPhraseBank-v1.0/Sentences_AllAgree.txt", "phrasebank"),
    "tweets": ("twitter_financial_news_sentiment/sent_train.csv", "twitter-sentiment"),
    "topics": ("twitter_financial_news_topic/train_data.csv", "twitter-topic"),
}
TOPICS_PER_PHASE = 5


@dataclass(frozen=True)
class Sizes:
    """How many examples each part gets at ``--scale 1`` (sized for a shared 2-core CPU)."""

    news_stream: int = 250
    """Scenarios a and c, phase 1: news sentences the base model trains on."""
    news_test: int = 200
    tweets_stream: int = 250
    """Scenario a, phase 2: tweets in the stream."""
    tweets_test: int = 200
    topic_stream: int = 100
    """Scenario b: stream examples per topic (5 topics a phase; the two rarest topics have 44 and 69 in all)."""
    topic_test: int = 40
    """Scenario b: test examples per topic (at most a third of a topic's examples)."""
    chunks: int = 8
    """Scenario c: tweet chunks after the news phase (updates in a row)."""
    chunk_stream: int = 50
    chunk_test: int = 30

    def scaled(self, scale: float) -> Sizes:
        """Every count times ``scale`` (at least 1), ``chunks`` unchanged.

        >>> Sizes().scaled(2).news_stream, Sizes().scaled(0.01).topic_test, Sizes().scaled(2).chunks
        (500, 1, 8)
        """
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        return replace(self, **{f.name: max(1, round(getattr(self, f.name) * scale))
                                for f in fields(self) if f.name != "chunks"})


@dataclass(frozen=True)
class Phase:
    name: str
    stream: tuple[Example, ...]
    """Labelled examples arriving during the phase (training data), in arrival order."""
    test: tuple[Example, ...]


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    head: str
    """The head scored: ``sentiment`` or ``topic``."""
    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        if len(self.phases) < 2:
            raise ValueError(f"scenario {self.key} needs at least two phases")
        sizes = {len(p.stream) for p in self.phases[1:]}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(f"scenario {self.key}: update phases need one non-zero stream size, got {sizes}")
        for p in self.phases:
            if not p.test or any(getattr(e, self.head) is None for e in (*p.stream, *p.test)):
                raise ValueError(f"scenario {self.key}, phase {p.name}: every example needs a {self.head} label")

    @property
    def update_size(self) -> int:
        """Stream size of every phase after the first (the learner retrains every that many labels)."""
        return len(self.phases[1].stream)


def missing_files(root: Path) -> list[str]:
    """The data files the benchmark needs that are not under ``root``."""
    return [rel for rel, _ in FILES.values() if not (root / rel).is_file()]


def load_sources(root: Path) -> dict[str, list[Example]]:
    """Read the three data sets (``FILES``) from the shared data directory ``root``."""
    return {name: read_labelled(root / rel, fmt) for name, (rel, fmt) in FILES.items()}


def _shuffled(examples: Sequence[Example], seed: int) -> list[Example]:
    out = list(examples)
    random.Random(seed).shuffle(out)
    return out


def _take(pool: list[Example], n: int, name: str) -> tuple[Example, ...]:
    """Pop the first ``n`` examples of ``pool`` (raises if there are not enough)."""
    if n > len(pool):
        raise ValueError(f"{name}: need {n} more examples, only {len(pool)} left (lower --scale)")
    taken, pool[:] = pool[:n], pool[n:]
    return tuple(taken)


def _equalize(phases: list[Phase]) -> tuple[Phase, ...]:
    """Cut the stream of every phase after the first to the smallest of them."""
    n = min(len(p.stream) for p in phases[1:])
    return (phases[0], *(replace(p, stream=p.stream[:n]) for p in phases[1:]))


def _topic_phases(topics: Sequence[Example], sizes: Sizes, seed: int) -> tuple[Phase, ...]:
    by_topic: dict[str, list[Example]] = defaultdict(list)
    for e in topics:
        by_topic[str(e.topic)].append(e)
    phases = []
    for start in range(0, len(DEFAULT_TOPICS), TOPICS_PER_PHASE):
        names = DEFAULT_TOPICS[start : start + TOPICS_PER_PHASE]
        stream: list[Example] = []
        test: list[Example] = []
        for i, topic in enumerate(names):
            pool = _shuffled(by_topic[topic], seed + 101 * (start + i))
            n_test = min(sizes.topic_test, len(pool) // 3)
            test.extend(_take(pool, n_test, topic))
            stream.extend(_take(pool, min(sizes.topic_stream, len(pool)), topic))
        phases.append(Phase(f"topics {start}-{start + len(names) - 1}", tuple(_shuffled(stream, seed + start)),
                            tuple(test)))
    return _equalize(phases)


def build_scenarios(
    sources: Mapping[str, Sequence[Example]], sizes: Sizes, seed: int = 0, keys: Sequence[str] = ("a", "b", "c")
) -> list[Scenario]:
    """The scenarios ``keys`` cut from ``sources`` (``load_sources``), deterministic for ``seed``.

    Scenarios a and c share their news phase (the same examples, so the same base model); each
    scenario is the same whichever others are built with it.
    """
    news_pool = _shuffled(sources["news"], seed)
    news = Phase("news (PhraseBank)", stream=_take(news_pool, sizes.news_stream, "news stream"),
                 test=_take(news_pool, sizes.news_test, "news test"))
    out = []
    for key in keys:
        if key == "a":
            tweets = _shuffled(sources["tweets"], seed + 1)
            phase = Phase("tweets", stream=_take(tweets, sizes.tweets_stream, "tweets stream"),
                          test=_take(tweets, sizes.tweets_test, "tweets test"))
            out.append(Scenario("a", "domain shift: news -> tweets (sentiment)", "sentiment", (news, phase)))
        elif key == "b":
            out.append(Scenario("b", "class-incremental: 20 topics in 4 phases of 5", "topic",
                                _topic_phases(sources["topics"], sizes, seed + 2)))
        elif key == "c":
            tweets = _shuffled(sources["tweets"], seed + 3)
            chunks = [Phase(f"tweets {i + 1}", stream=_take(tweets, sizes.chunk_stream, "tweet chunk"),
                            test=_take(tweets, sizes.chunk_test, "tweet chunk test")) for i in range(sizes.chunks)]
            out.append(Scenario("c", f"many small updates: news, then tweets in {sizes.chunks} chunks (sentiment)",
                                "sentiment", (news, *chunks)))
        else:
            raise ValueError(f"unknown scenario {key!r} (a, b or c)")
    return out
