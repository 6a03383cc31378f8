"""The label sets: the default topic taxonomy and the three sentiment classes.

The default topics are the 20 classes of the Twitter financial-news topic data set
(``zeroshot/twitter-financial-news-topic``), in its label-id order, so that real
labelled data maps onto them one to one.

>>> len(DEFAULT_TOPICS), DEFAULT_TOPICS[0], SENTIMENTS
(20, 'Analyst Update', ('negative', 'neutral', 'positive'))
"""

from __future__ import annotations

__all__ = ["DEFAULT_TOPICS", "SENTIMENTS"]

DEFAULT_TOPICS: tuple[str, ...] = (
    "Analyst Update",
    "Fed | Central Banks",
    "Company | Product News",
    "Treasuries | Corporate Debt",
    "Dividend",
    "Earnings",
    "Energy | Oil",
    "Financials",
    "Currencies",
    "General News | Opinion",
    "Gold | Metals | Materials",
    "IPO",
    "Legal | Regulation",
    "M&A | Investments",
    "Macro",
    "Markets",
    "Politics",
    "Personnel Change",
    "Stock Commentary",
    "Stock Movement",
)

SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")
