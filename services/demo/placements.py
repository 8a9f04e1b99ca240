"""The demo's placements: after each award, the placement runs through its start, the funding
panel's decision, a review, the provider's fee uplift and the borough's answer, and (for many) an
ending, some unplanned; a few boroughs also record places bought outside the DPS.

No waiting: the placement API takes its dates in the body. Its rules fix what can be dated where.
A placement opened by an award starts no earlier than the award and no later than today, and a
review is recorded once it has taken place, so an award made today starts and is first reviewed
today. The rest of its months come from the dates the API does accept ahead: the funding agreed
for a year with a review at six months, an uplift effective months later, an ending planned or
notified for a later date. Off-framework placements (tribunal-named schools, parental preference)
have no award to wait for: they are recorded as having started months ago, with a review and
sometimes an ending in the past (their providers are not enrolled, so they ask for no uplift here).

Determinism as in the rest of the demo: one `random.Random` stream per placement, seeded from the
demo's seed and the referral's index (not the referral flow's own stream, whose choices stay as
they were).
"""
from __future__ import annotations

import random
from collections import Counter
from datetime import date, timedelta
from typing import Any

from services.demo.client import Api, DemoError, Unexpected, poll_until
from services.demo.region import NEEDS_INDICATORS, OUTCOMES

ICBS = ("QKK", "QWE")
"""NHS South East London and South West London integrated care boards (ODS codes)."""
PROGRESS = (("not_started", 15), ("progressing", 60), ("achieved", 25))
PLANNED_ENDINGS = (("outcomes_met", 40), ("step_down", 25), ("age_transition", 20), ("moved_on", 15))
UNPLANNED_ENDINGS = (("breakdown", 35), ("provider_notice", 25), ("needs_changed", 25), ("moved_in_house", 15))
UPLIFT_REASONS = ("Annual inflationary uplift: staff pay award and utilities",
                  "National Living Wage rise from April; agency cover for two vacancies",
                  "Additional 1:1 support agreed at the last review")
OFF_FRAMEWORK_SCHOOLS = ("St Anne's School (Kent)", "Heathside College", "The Meadows Specialist School",
                         "Brookfield House", "Willow Bank School")
OFF_FRAMEWORK_REASONS = (("tribunal_named", 60), ("parental_preference", 30), ("provider_not_enrolled", 10))


def _weighted(rng: random.Random, items: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([k for k, _ in items], weights=[w for _, w in items])[0]


def _split(rng: random.Random, fee: int) -> list[dict[str, Any]]:
    """The fee shared by education, social care and (sometimes) health, in whole pence, adding up to it."""
    education = fee * rng.randint(50, 80) // 100
    health = fee * rng.randint(5, 15) // 100 if rng.random() < 0.4 else 0
    parts = [{"stream": "education", "weekly_pence": education},
             {"stream": "social_care", "weekly_pence": fee - education - health}]
    if health:
        parts.append({"stream": "health", "weekly_pence": health, "icb_code": rng.choice(ICBS)})
    return parts


def _rescored(rng: random.Random, profile: dict[str, int]) -> dict[str, int]:
    """The 12 indicators scored again: most needs the same, some lower (progress), a few higher."""
    def again(score: int) -> int:
        roll = rng.random()
        return max(0, score - 1) if roll < 0.3 else min(3, score + 1) if roll > 0.9 else score
    return {name: again(int(profile.get(name, 1))) for name in NEEDS_INDICATORS}


class Placements:
    """The placement phase of the demo, played per award (inside the referral's flow) and once for
    the off-framework places; it counts into the demo's counters."""

    def __init__(self, api: Api, seed: int, today: date, counts: Counter[str]) -> None:
        self.api = api
        self.seed = seed
        self.today = today
        self.counts = counts

    async def opened(self, referral_id: str, borough_token: str) -> dict[str, Any]:
        """The placement the award opens (placement consumes `placement-awarded`)."""
        async def probe() -> dict[str, Any] | None:
            found = await self.api.call("GET", "placement", "/placements", borough_token,
                                        params={"referral_id": referral_id})
            live = [p for p in found["placements"] if p["status"] == "awarded"]
            return live[0] if live else None

        return await poll_until(probe, f"the placement opened by the award of referral {referral_id}")

    async def after_award(self, index: int, referral_id: str, borough_token: str, provider_token: str) -> None:
        rng = random.Random(f"{self.seed}:placement:{index}")
        placement = await self.opened(referral_id, borough_token)
        self.counts["placements_opened"] += 1
        await self.run(rng, f"{index}", placement, borough_token, provider_token, start=self.today,
                       reviewed_on=self.today)

    async def run(self, rng: random.Random, key: str, placement: dict[str, Any], borough_token: str,
                  provider_token: str | None, *, start: date, reviewed_on: date) -> None:
        """Start, funding, a review, maybe an uplift and its decision, maybe an ending."""
        api, pid = self.api, placement["id"]
        path = f"/placements/{pid}"
        await api.call("POST", "placement", f"{path}/start", provider_token or borough_token,
                       {"started_on": start.isoformat()}, key=f"placement-start:{key}")
        self.counts["placements_started"] += 1
        fee = int(placement["weekly_fee_pence"])
        await api.call("POST", "placement", f"{path}/funding", borough_token,
                       {"contributions": _split(rng, fee), "agreed_from": start.isoformat(),
                        "agreed_until": (start + timedelta(days=364)).isoformat(),
                        "review_due": (start + timedelta(days=182)).isoformat()}, key=f"placement-funding:{key}")
        self.counts["funding_agreed"] += 1
        outcomes = [o["outcome"] for o in placement["outcomes"]]
        first_needs = (placement["needs_over_time"] or [{}])[0].get("needs_profile") or {}
        await api.call("POST", "placement", f"{path}/reviews", borough_token, {
            "reviewed_on": reviewed_on.isoformat(), "continues": True,
            "next_review_due": (start + timedelta(days=182)).isoformat()
            if start + timedelta(days=182) > reviewed_on else None,
            "outcomes": [{"outcome": o, "progress": _weighted(rng, PROGRESS)} for o in outcomes],
            "needs_profile": _rescored(rng, first_needs)}, key=f"placement-review:{key}")
        self.counts["placement_reviews"] += 1
        ends = rng.random() < 0.55
        unplanned = ends and rng.random() < 0.4
        ended_on = max(start + timedelta(days=rng.randint(30, 250) if unplanned else rng.randint(300, 364)),
                       reviewed_on + timedelta(days=14))
        if provider_token is not None and rng.random() < 0.6:
            effective = start + timedelta(days=rng.choice((120, 180, 240)))
            asked = fee + max(100, fee * rng.randint(3, 7) // 100 // 100 * 100)
            requested = await api.call("POST", "placement", f"{path}/fee-changes", provider_token,
                                       {"weekly_fee_pence": asked, "effective_from": effective.isoformat(),
                                        "reason": rng.choice(UPLIFT_REASONS)}, key=f"placement-uplift:{key}")
            self.counts["fee_changes_requested"] += 1
            change = next(c for c in requested["fee_changes"] if c["status"] == "requested")
            decision = _weighted(rng, (("agreed", 50), ("agreed_in_part", 30), ("declined", 20)))
            body: dict[str, Any] = {"decision": decision}
            if decision == "agreed_in_part":
                body |= {"weekly_fee_pence": (fee + asked) // 2,
                         "note": "The panel agreed the pay award, not the rest of the uplift"}
            elif decision == "declined":
                body["note"] = "Within the fee agreed at award for this year; to be looked at again at the review"
            await api.call("POST", "placement", f"{path}/fee-changes/{change['change_id']}/decision", borough_token,
                           body, key=f"placement-uplift-decision:{key}")
            self.counts[f"fee_changes_{decision}"] += 1
        if ends:
            ending = {"ended_on": ended_on.isoformat(), "ending": "unplanned" if unplanned else "planned",
                      "reason": _weighted(rng, UNPLANNED_ENDINGS if unplanned else PLANNED_ENDINGS)}
            await api.call("POST", "placement", f"{path}/end", borough_token, ending, key=f"placement-end:{key}")
            self.counts["placements_ended"] += 1
            if unplanned:
                self.counts["placements_ended_unplanned"] += 1

    async def off_framework(self, boroughs: dict[str, str], how_many: int) -> None:
        """Places bought outside the DPS, started months ago (they count in spend, flagged)."""
        codes = sorted(boroughs)
        for n in range(how_many):
            rng = random.Random(f"{self.seed}:off-framework:{n}")
            borough = codes[n % len(codes)]
            token = boroughs[borough]
            start = self.today - timedelta(days=rng.randint(150, 330))
            need = rng.choice(("ASD", "SEMH", "SLCN"))
            reason = _weighted(rng, OFF_FRAMEWORK_REASONS)
            body = {"provider_name": rng.choice(OFF_FRAMEWORK_SCHOOLS),
                    "weekly_fee_pence": rng.randint(90, 240) * 1000, "planned_start": start.isoformat(),
                    "primary_need": need, "placement_type": "day", "outcomes": list(OUTCOMES[need][:2]),
                    "needs_profile": {name: rng.randint(0, 3) for name in NEEDS_INDICATORS}, "reason": reason,
                    "note": "Named in section I of the EHCP by the tribunal" if reason == "tribunal_named" else None}
            try:
                placement = await self.api.call("POST", "placement", "/placements", token, body,
                                                key=f"off-framework:{n}")
                self.counts["placements_off_framework"] += 1
                await self.run(rng, f"off-framework:{n}", placement, token, None, start=start,
                               reviewed_on=min(self.today, start + timedelta(days=rng.randint(60, 140))))
            except Unexpected as error:
                raise DemoError(f"off-framework placement #{n} ({borough}): {error}") from error

    async def figures(self, commissioner: str) -> dict[str, int]:
        """Spend over the year behind and the year ahead of today, as the commissioners see it."""
        first, last = self.today - timedelta(days=365), self.today + timedelta(days=365)
        spend = await self.api.call("GET", "placement", "/placements/spend", commissioner,
                                    params={"from": first.isoformat(), "to": last.isoformat()})
        framework = {row["framework"]: row["spend_pence"] for row in spend["by_framework"]}
        return {"placement_spend_pence": int(spend["total_pence"]),
                "placement_spend_off_framework_pence": int(framework.get("off_framework", 0))}
