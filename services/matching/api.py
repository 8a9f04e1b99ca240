"""HTTP API of matching: eligible providers, shortlists, the ranking policy, market insights."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.auth import Principal, require
from shared.errors import NotFound
from shared.consumers import journal, lock_journal
from shared.events import Envelope, now_utc

from . import projections as views
from .handlers import Matching
from .insights import insights as compute_insights
from .insights import market_insights
from .ranking import POLICY_STREAM, RankingPolicy

router = APIRouter(tags=["matching"])

READERS = ("commissioner", "auditor")


class PolicyBody(BaseModel):
    """A new ranking policy; weights sum to 1.00, at most 2 decimal places each."""

    model_config = ConfigDict(extra="forbid")

    quality_weight: Decimal = Field(examples=["0.60"], description="0.00–1.00, weight of the quality score")
    price_weight: Decimal = Field(examples=["0.40"], description="0.00–1.00, weight of the price score")
    min_quality: Decimal | None = Field(None, examples=["50.00"],
                                        description="0.00–100.00: offers from providers below it are not ranked")


def _matching(request: Request) -> Matching:
    return request.app.state.matching


async def _referral_for(conn: AsyncConnection, referral_id: str, who: Principal) -> tuple[Any, Any]:
    """The referral if `who` may read it. Others' referrals are reported as not found, so that
    neither a borough nor a provider learns that a referral it may not see exists."""
    found = await views.get_referral(conn, referral_id)
    missing = NotFound(f"referral {referral_id} not found", field="referral_id")
    if found is None:
        raise missing
    referral, row = found
    if who.role == "borough" and row.borough != who.tenant:
        raise missing
    if who.role == "provider" and not await views.is_invited(conn, referral_id, who.tenant):
        raise missing
    return referral, row


@router.get("/referrals/{referral_id}/eligible-providers",
            summary="Providers invited to a referral, with the result of every eligibility rule")
async def eligible_providers(
    referral_id: str, request: Request,
    all: bool = Query(False, description="also list providers evaluated and found not eligible"),
    who: Principal = Depends(require("borough", *READERS)),
) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as conn:
        await _referral_for(conn, referral_id, who)
        results = await views.eligibility_for(conn, referral_id)
        directory = await views.providers_by_id(conn, {r["provider_id"] for r in results})
    providers = []
    for r in results:
        if not (all or r["invited"]):
            continue
        facts = directory.get(r["provider_id"])
        providers.append({**r, "name": facts.name if facts else None,
                          "quality_score": None if facts is None or facts.quality_score is None
                          else str(facts.quality_score)})
    return {"referral_id": referral_id, "providers": providers}


@router.get("/referrals/{referral_id}/shortlist",
            summary="The ranked shortlist (a provider sees only its own rank, never rivals' prices)")
async def shortlist(referral_id: str, request: Request,
                    who: Principal = Depends(require("borough", "provider", *READERS))) -> dict[str, Any]:
    matching = _matching(request)
    async with request.app.state.runtime.db.read() as conn:
        await _referral_for(conn, referral_id, who)
        data = await views.shortlist_for(conn, referral_id)
        if data is None:
            policy = await matching.policy(conn)
            data = {"referral_id": referral_id, "policy_version": policy.version, "entries": [], "excluded": []}
    if who.role != "provider":
        return {"referral_id": referral_id, "policy_version": data["policy_version"],
                "entries": data["entries"], "excluded": data["excluded"]}
    # Price and score components would reveal the lowest rival fee: a provider sees its rank only.
    own = [{"rank": e["rank"], "offer_id": e["offer_id"], "provider_id": e["provider_id"],
            "weekly_fee_pence": e["weekly_fee_pence"], "quality": e["quality"]}
           for e in data["entries"] if e["provider_id"] == who.tenant]
    return {"referral_id": referral_id, "policy_version": data["policy_version"],
            "ranked_offers": len(data["entries"]), "entries": own,
            "excluded": [x for x in data["excluded"] if x["provider_id"] == who.tenant]}


POLICY_JOURNAL = "matching-policy"
"""Journal name under which policy changes take their place in matching's input order (replay)."""


@router.get("/policy", summary="The current ranking policy")
async def get_policy(request: Request, who: Principal = Depends(require())) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as conn:
        return (await _matching(request).policy(conn)).as_dict()


@router.put("/policy", summary="Change the ranking policy (a new version; open shortlists are re-ranked)")
async def put_policy(body: PolicyBody, request: Request,
                     who: Principal = Depends(require("commissioner"))) -> dict[str, Any]:
    runtime = request.app.state.runtime
    matching = _matching(request)

    async def rerank(conn: AsyncConnection, policy: RankingPolicy, envelopes: list[Envelope]) -> None:
        if envelopes:
            await journal(conn, POLICY_JOURNAL, envelopes[0].id)
            await matching.rerank_all_open(conn, policy.current, envelopes[0].id)

    async with runtime.db.transaction() as conn:
        await lock_journal(conn)  # before the append lock, in the order consumers take them
        policy = await runtime.store.load(RankingPolicy, POLICY_STREAM, conn)
        events = policy.change(body.quality_weight, body.price_weight, body.min_quality)
        envelopes = await runtime.store.append(conn, POLICY_STREAM, policy.version, events,
                                               topic=runtime.topic("matching"))
        policy.mutate(events)
        await rerank(conn, policy, envelopes)
    return policy.current.as_dict()


@router.get("/insights", summary="Market insights by need code and month")
async def get_insights(
    request: Request,
    need: str | None = Query(None, description="only this primary need code, e.g. ASD"),
    month: str | None = Query(None, pattern=r"^\d{4}-\d{2}$", description="only this month, YYYY-MM"),
    who: Principal = Depends(require("commissioner", "auditor", "borough", "provider")),
) -> dict[str, Any]:
    """Commissioners and auditors get a per-borough breakdown; a borough its own referrals only;
    a provider the pooled figures, with no borough or child detail, and a fee median only where
    it rests on enough distinct providers' standing offers in a month that no longer changes
    (`suppressed`, `suppressed_reason` otherwise)."""
    runtime = request.app.state.runtime
    async with runtime.db.read() as conn:
        records = await views.insight_records(conn, who.tenant if who.role == "borough" else None)
    records = [r for r in records if (need is None or r.primary_need == need) and (month is None or r.month == month)]
    scope = {"borough": "borough", "provider": "market"}.get(who.role, "partnership")
    if who.role == "provider":
        rows = market_insights(records, min_providers=runtime.settings.insights_min_providers,
                               today=now_utc().date())
    else:
        rows = compute_insights(records, by_borough=who.role in READERS)
    return {"scope": scope, "rows": rows}
