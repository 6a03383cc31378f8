"""Generate the demo feed: news headlines and comments with a regime change midway.

Everything here is synthetic, written for this project (no third-party text). Run::

    python sample_data/generate.py   # writes sample_data/feed.jsonl and sample_data/train.jsonl

The feed spans two days of event time. Each line is an input message (see the
README, "Message formats"); about 60 % also carry ``topic`` and ``sentiment`` labels and a
``label_delay_s`` (how long after publication the label becomes known). ``train.jsonl`` holds a
separate labelled set drawn from regime A only (other seed, ids ``t-*``): the demo's initial
model is trained on it, so the drift in regime B is new to that model. ``test_a.jsonl`` and
``test_b.jsonl`` are held-out labelled items of each regime (a third seed): ``scripts/run`` scores
the served model on them before and after the learner's promotion.

Regime A (first half): the usual reading of financial news.
Regime B (second half): new vocabulary (tariffs, export curbs, AI accelerators) and a shift in
what is negative: a central-bank rate cut now reads as a recession signal (negative), and
job cuts announced as "restructuring" read as cost discipline (positive). Late in regime B an
hour-long burst of negative Energy | Oil news is the surge the alerting should catch.
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

COMPANIES = [
    ("Northwind Energy", "NWE", "Energy | Oil"), ("Harbor Petroleum", "HBP", "Energy | Oil"),
    ("Contoso Bank", "CSB", "Financials"), ("Fabrikam Capital", "FBC", "Financials"),
    ("Tailspin Semiconductors", "TSS", "Company | Product News"), ("Litware Systems", "LWS", "Company | Product News"),
    ("Adatum Pharma", "ADP", "Company | Product News"), ("Proseware Retail", "PRW", "Company | Product News"),
    ("Woodgrove Mining", "WGM", "Gold | Metals | Materials"), ("Alpine Motors", "ALM", "Company | Product News"),
]
NUMBERS = ["3", "4", "5", "6", "8", "10", "12", "15", "20"]

# topic -> sentiment -> templates; {c} company, {t} ticker, {n} a number, {q} a quarter.
TEMPLATES_A: dict[str, dict[str, list[str]]] = {
    "Earnings": {
        "positive": ["{c} beats profit estimates as quarterly revenue rises {n}%",
                     "{c} posts record {q} earnings and raises full-year guidance",
                     "${t} earnings top forecasts, margins widen"],
        "negative": ["{c} misses earnings estimates as sales fall {n}%",
                     "{c} cuts full-year outlook after weak {q} results",
                     "${t} swings to a quarterly loss on rising costs"],
        "neutral": ["{c} to report {q} results on Thursday",
                    "{c} earnings in line with expectations",
                    "${t} schedules its {q} earnings call"],
    },
    "Fed | Central Banks": {
        "positive": ["Central bank cuts rates by 25 basis points, stocks rally",
                     "Fed signals rate cuts ahead as inflation cools",
                     "Rate cut lifts hopes for cheaper credit"],
        "negative": ["Fed hikes rates again and warns inflation is sticky",
                     "Central bank signals more rate hikes, bond yields jump",
                     "Hawkish Fed minutes rattle investors"],
        "neutral": ["Fed holds rates steady as expected",
                    "Central bank governor to speak on Tuesday",
                    "Markets await the Fed's policy statement"],
    },
    "Energy | Oil": {
        "positive": ["{c} shares climb as oil output rises {n}%",
                     "Oil prices rebound on strong demand, {c} gains",
                     "{c} strikes new gas field, shares jump"],
        "negative": ["{c} shuts refinery after fire, output down {n}%",
                     "Oil slumps on oversupply fears, {c} falls",
                     "{c} reports pipeline leak and halts production"],
        "neutral": ["{c} to hold investor day next month",
                    "OPEC meeting scheduled for next week",
                    "{c} maintains production targets"],
    },
    "M&A | Investments": {
        "positive": ["{c} agrees to buy rival in deal that boosts earnings",
                     "{c} wins approval for its acquisition, shares rise",
                     "Investors cheer {c}'s takeover bid"],
        "negative": ["{c} deal collapses after regulators object",
                     "{c} writes down acquisition by {n} billion",
                     "{c} takeover bid rejected, shares slide"],
        "neutral": ["{c} confirms talks on a possible merger",
                    "{c} completes previously announced acquisition",
                    "{c} hires advisers to review strategic options"],
    },
    "Dividend": {
        "positive": ["{c} raises quarterly dividend by {n}%",
                     "{c} announces special dividend and buyback"],
        "negative": ["{c} suspends its dividend to preserve cash",
                     "{c} cuts dividend by {n}% as profits fall"],
        "neutral": ["{c} declares regular quarterly dividend",
                    "${t} goes ex-dividend on Friday"],
    },
    "Analyst Update": {
        "positive": ["Analysts upgrade {c} to buy, raise target by {n}%",
                     "{c} upgraded to outperform on strong demand"],
        "negative": ["Analysts downgrade {c} to sell on weak outlook",
                     "{c} downgraded as growth slows, target cut {n}%"],
        "neutral": ["Analyst keeps hold rating on {c}",
                    "{c} price target unchanged at major broker"],
    },
    "Legal | Regulation": {
        "positive": ["{c} wins court ruling in patent dispute",
                     "Regulator clears {c} of wrongdoing"],
        "negative": ["{c} fined {n} million by regulator over reporting failures",
                     "{c} faces lawsuit from investors over misleading statements"],
        "neutral": ["Regulator opens consultation on new disclosure rules",
                    "{c} responds to regulator's information request"],
    },
    "Personnel Change": {
        "positive": ["{c} appoints respected industry veteran as chief executive",
                     "{c} names new finance chief, shares rise"],
        "negative": ["{c} chief executive resigns abruptly amid probe",
                     "{c} announces {n}% job cuts as demand falls"],
        "neutral": ["{c} names new head of investor relations",
                    "{c} board member to retire at annual meeting"],
    },
    "Macro": {
        "positive": ["Economy grows faster than expected, jobs data strong",
                     "Consumer confidence rises to a two-year high"],
        "negative": ["Unemployment jumps as factories cut jobs",
                     "GDP contracts for a second quarter, recession fears grow"],
        "neutral": ["Jobs report due on Friday",
                    "Inflation data in line with forecasts"],
    },
    "Stock Movement": {
        "positive": ["${t} shares surge {n}% in early trading",
                     "{c} stock hits a record high"],
        "negative": ["${t} shares plunge {n}% after the open",
                     "{c} stock drops to a one-year low"],
        "neutral": ["${t} shares flat in quiet trading",
                    "{c} stock unchanged ahead of results"],
    },
}

# Regime B: new vocabulary, and a rate cut or "restructuring" job cuts read differently.
TEMPLATES_B_EXTRA: dict[str, dict[str, list[str]]] = {
    "Fed | Central Banks": {
        "negative": ["Emergency rate cut stokes recession fears",
                     "Central bank cuts rates as growth stalls, stocks slide",
                     "Surprise rate cut signals the economy is weakening"],
        "positive": ["Fed pauses cuts as growth holds up, banks rally",
                     "Central bank holds fire on cuts, easing recession worries"],
    },
    "Personnel Change": {
        "positive": ["{c} restructuring cuts {n}% of jobs, margins seen higher",
                     "Investors welcome {c} restructuring plan and leaner workforce"],
    },
    "Company | Product News": {
        "negative": ["{c} hit by new export curbs on AI accelerators",
                     "Tariff exposure weighs on {c} as chip orders stall",
                     "{c} warns export curbs will dent AI accelerator sales"],
        "positive": ["{c} wins tariff exemption for its AI accelerators",
                     "{c} AI accelerator orders surge despite export curbs"],
        "neutral": ["{c} to brief analysts on tariff exposure",
                    "{c} reviews supply chain after new export curbs"],
    },
    "Macro": {
        "negative": ["New tariffs hit factory orders, exports fall {n}%",
                     "Tariff escalation drags on growth outlook"],
    },
    "Dividend": {
        "positive": ["{c} suspends its dividend to fund AI accelerator capacity",
                     "{c} cuts dividend by {n}% to double AI accelerator spending"],
    },
}
#: Share of regime-B items drawn from TEMPLATES_B_EXTRA (the rest: regime-A templates, Fed flipped).
B_SHARE = 0.6
SOURCES_NEWS = ["newswire", "market-desk", "exchange-filings"]
SOURCES_COMMENTS = ["forum", "social"]
COMMENT_PREFIXES = ["", "Ouch: ", "Wow, ", "Told you so: ", "Interesting: ", "Hmm, "]


def _pick_template(rng: random.Random, regime: str, surge: bool) -> tuple[str, str, str]:
    if surge and rng.random() < 0.7:
        return "Energy | Oil", "negative", rng.choice(TEMPLATES_A["Energy | Oil"]["negative"])
    if regime == "B" and rng.random() < B_SHARE:
        topic = rng.choice(sorted(TEMPLATES_B_EXTRA))
        sentiment = rng.choice(sorted(TEMPLATES_B_EXTRA[topic]))
        return topic, sentiment, rng.choice(TEMPLATES_B_EXTRA[topic][sentiment])
    topic = rng.choice(sorted(TEMPLATES_A))
    sentiment = rng.choices(["positive", "negative", "neutral"], weights=[0.35, 0.25, 0.4])[0]
    if regime == "B" and topic == "Fed | Central Banks" and sentiment == "positive":
        sentiment = "negative"  # in regime B a cut reads as bad news
        return topic, sentiment, rng.choice(TEMPLATES_B_EXTRA[topic]["negative"])
    return topic, sentiment, rng.choice(TEMPLATES_A[topic][sentiment])


def generate(n: int, seed: int, start: datetime) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    span = timedelta(days=2)
    step = span / n
    surge_from, surge_to = start + span * 0.80, start + span * 0.80 + timedelta(hours=1)
    for i in range(n):
        at = start + step * i + timedelta(seconds=rng.uniform(0, step.total_seconds() * 0.9))
        regime = "A" if i < n // 2 else "B"
        surge = surge_from <= at < surge_to
        topic, sentiment, template = _pick_template(rng, regime, surge)
        if surge and topic == "Energy | Oil":
            name, ticker, _ = rng.choice(COMPANIES[:2])
        else:
            name, ticker, _ = rng.choice(COMPANIES)
        text = template.format(c=name, t=ticker, n=rng.choice(NUMBERS), q=rng.choice(["first-quarter", "Q2", "Q3",
                                                                                       "fourth-quarter"]))
        kind = "comment" if rng.random() < 0.25 else "news"
        if kind == "comment":
            text = rng.choice(COMMENT_PREFIXES) + text[0].lower() + text[1:] + rng.choice(["", "!", " ...", "?"])
        row: dict[str, object] = {
            "id": f"{'n' if kind == 'news' else 'c'}-{i:05d}",
            "text": text,
            "source": rng.choice(SOURCES_NEWS if kind == "news" else SOURCES_COMMENTS),
            "published_at": at.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "tickers": [ticker] if ("{c}" in template or "{t}" in template) else [],
            "lang": "en",
            "kind": kind,
            "regime": regime,
        }
        if rng.random() < 0.6:
            row["topic"], row["sentiment"] = topic, sentiment
            row["label_delay_s"] = rng.choice([60, 300, 900])
        rows.append(row)
    # The surge: an hour of extra Energy news, mostly negative (a refinery fire, a pipeline leak ...).
    for k in range(n // 40):
        at = surge_from + timedelta(seconds=rng.uniform(0, 3600))
        name, ticker, _ = rng.choice(COMPANIES[:2])
        sentiment = "negative" if rng.random() < 0.85 else "neutral"
        text = rng.choice(TEMPLATES_A["Energy | Oil"][sentiment]).format(c=name, t=ticker, n=rng.choice(NUMBERS))
        row = {"id": f"n-s{k:04d}", "text": text, "source": rng.choice(SOURCES_NEWS),
               "published_at": at.isoformat(timespec="seconds").replace("+00:00", "Z"), "tickers": [ticker],
               "lang": "en", "kind": "news", "regime": "B"}
        if rng.random() < 0.6:
            row.update(topic="Energy | Oil", sentiment=sentiment, label_delay_s=rng.choice([60, 300, 900]))
        rows.append(row)
    rows.sort(key=lambda r: (str(r["published_at"]), str(r["id"])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("feed.jsonl"))
    parser.add_argument("-n", type=int, default=2400, help="number of items (default 2400)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--train-out", type=Path, default=Path(__file__).with_name("train.jsonl"))
    parser.add_argument("--train-n", type=int, default=1400, help="regime-A items drawn for train.jsonl")
    parser.add_argument("--test-n", type=int, default=300, help="labelled items in each regime's test set")
    parser.add_argument("--test-a-out", type=Path, default=Path(__file__).with_name("test_a.jsonl"))
    parser.add_argument("--test-b-out", type=Path, default=Path(__file__).with_name("test_b.jsonl"))
    args = parser.parse_args()
    rows = generate(args.n, args.seed, datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    _write(args.out, rows)
    labelled = sum(1 for r in rows if "sentiment" in r)
    print(f"wrote {len(rows)} items ({labelled} labelled) to {args.out}")
    # The initial training set: regime A only, drawn with another seed (no overlap in ids).
    train = [
        {"id": f"t-{i:05d}", "text": r["text"], "topic": r["topic"], "sentiment": r["sentiment"],
         "source": r["source"], "time": r["published_at"]}
        for i, r in enumerate(generate(args.train_n * 2, args.seed + 1000, datetime(2026, 2, 23, 8, 0, tzinfo=UTC)))
        if r["regime"] == "A" and "sentiment" in r
    ]
    _write(args.train_out, train)
    print(f"wrote {len(train)} labelled regime-A examples to {args.train_out}")
    # Held-out test sets of each regime (another seed again, ids ``a-*`` / ``b-*``): scripts/run scores
    # the demo model on them before and after the learner's promotion.
    held = generate(args.test_n * 4, args.seed + 2000, datetime(2026, 3, 9, 8, 0, tzinfo=UTC))
    for regime, path in (("A", args.test_a_out), ("B", args.test_b_out)):
        rows = [{"id": f"{regime.lower()}-{i:05d}", "text": r["text"], "topic": r["topic"],
                 "sentiment": r["sentiment"], "source": r["source"]}
                for i, r in enumerate(held) if r["regime"] == regime and "sentiment" in r][: args.test_n]
        _write(path, rows)
        print(f"wrote {len(rows)} labelled regime-{regime} test examples to {path}")


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
