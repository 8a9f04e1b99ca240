"""What-if preview of a ranking policy on one shortlist: the entries re-scored under other weights.

Mirrors matching's default policy (DESIGN.md): `score = quality_weight * quality + price_weight *
price`, `price = 100 * lowest_fee / fee` over the offers still ranked, offers from providers below
`min_quality` left out, ties to the earlier rank. A preview only: matching's own ranking decides.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

TWO = Decimal("0.01")


def rerank(entries: list[dict[str, Any]], weights: dict[str, str]) -> list[dict[str, Any]]:
    quality_weight = Decimal(weights["quality_weight"])
    price_weight = Decimal(weights["price_weight"])
    floor = Decimal(weights["min_quality"]) if weights.get("min_quality") else None
    kept = [e for e in entries if floor is None or Decimal(e["quality"]) >= floor]
    if not kept:
        return []
    lowest = min(int(e["weekly_fee_pence"]) for e in kept)
    scored = []
    for e in kept:
        price = (Decimal(100) * lowest / int(e["weekly_fee_pence"])).quantize(TWO, ROUND_HALF_UP)
        score = (quality_weight * Decimal(e["quality"]) + price_weight * price).quantize(TWO, ROUND_HALF_UP)
        scored.append({**e, "price": str(price), "score": str(score), "was_rank": e["rank"]})
    scored.sort(key=lambda e: (-Decimal(e["score"]), e["was_rank"]))
    return [{**e, "rank": i} for i, e in enumerate(scored, start=1)]
