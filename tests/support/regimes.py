"""The scripted two-regime stream of the continual-learning tests (unit, integration, replay).

Topic follows the subject word; sentiment follows regime A's keywords, then regime B's new ones,
so a model trained on A must drift and relearn on B. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from monitor.records import Example

TOPICS = ("Energy", "Financials", "Tech")
SUBJECTS = {"Energy": ("oil", "gas", "energy"), "Financials": ("bank", "banks", "credit"),
            "Tech": ("apple", "microsoft", "google")}
KEYWORDS = {
    "A": {"positive": ("rises", "gains", "beats", "upgrade"), "negative": ("falls", "drops", "misses", "downgrade"),
          "neutral": ("hold", "week")},
    "B": {"positive": ("soars", "surges", "jumps", "bullish"), "negative": ("plunges", "slides", "bearish", "lowers"),
          "neutral": ("today", "month")},
}
FILLER = ("the", "shares", "stock", "price", "market", "after", "on", "news", "investors", "trading")
START = datetime(2026, 3, 2, 9, tzinfo=UTC)


def stream(regime: str, n: int, seed: int, offset: int = 0) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic, sentiment = rng.choice(TOPICS), rng.choice(("positive", "negative", "neutral"))
        words = [rng.choice(SUBJECTS[topic]), *rng.sample(FILLER, rng.randint(0, 2)),
                 rng.choice(KEYWORDS[regime][sentiment]), *rng.sample(FILLER, rng.randint(0, 2))]
        out.append(Example(" ".join(words), topic=topic, sentiment=sentiment, source="wire",
                           id=f"{regime}{seed}-{i}", time=START + timedelta(seconds=offset + i)))
    return out
