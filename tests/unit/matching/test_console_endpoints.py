"""The figures the console's pages need: policy history, a what-if preview, time to place, fee quartiles."""
from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import pytest

from services.matching.app import create_app
from services.matching.insights import ReferralRecord, fee_quartiles, time_to_place
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.helpers import wait_for
from tests.unit.matching.test_api import PROFILE, REFERRAL, env, feed


@pytest.fixture
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(data_dir=tmp_path, relay_poll_seconds=0.05, consumer_retry_base_seconds=0.01)


def offer(offer_id: str, provider_id: str, fee: int) -> dict[str, Any]:
    return {"offer_id": offer_id, "provider_id": provider_id, "weekly_fee_pence": fee, "start_date": "2026-09-01",
            "notes": "", "submitted_at": "2026-05-02T10:00:00Z"}


async def test_policy_history_preview_and_figures_over_http(settings: Settings) -> None:
    app = create_app(settings)
    p1, p2, rid = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    commissioner, croydon = auth(settings, "commissioner", "region"), auth(settings, "borough", "croydon")
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        await feed(app, settings,
                   env("provider-approved", p1, {**PROFILE, "quality_score": "80.00"}, "enrolment"),
                   env("provider-approved", p2, {**PROFILE, "quality_score": "90.00"}, "enrolment"),
                   env("referral-raised", rid, REFERRAL, "referral"),
                   env("offer-submitted", rid, offer("o1", p1, 425000), "referral"),
                   env("offer-submitted", rid, offer("o2", p2, 500000), "referral"))

        async def ranked() -> dict[str, Any] | None:
            response = await client.get(f"/referrals/{rid}/shortlist", headers=croydon)
            return response.json() if response.status_code == 200 and len(response.json()["entries"]) == 2 else None
        before = await wait_for(ranked)
        assert [e["offer_id"] for e in before["entries"]] == ["o1", "o2"]

        # history: the default, then a change with when and by whom
        history = await client.get("/policy/history", headers=commissioner)
        assert history.status_code == 200
        assert [i["version"] for i in history.json()["items"]] == [1]
        changed = await client.put("/policy", headers=commissioner,
                                   json={"quality_weight": "0.50", "price_weight": "0.50"})
        assert changed.status_code == 200, changed.text
        items = (await client.get("/policy/history", headers=auth(settings, "auditor", "region"))).json()["items"]
        assert [(i["version"], i["quality_weight"], i["price_weight"]) for i in items] == [
            (2, "0.50", "0.50"), (1, "0.60", "0.40")]
        assert items[0]["changed_at"] and items[0]["actor"] and items[1]["changed_at"] is None
        for who in (croydon, auth(settings, "provider", p1)):
            assert (await client.get("/policy/history", headers=who)).status_code == 403
        assert (await client.get("/policy/history")).status_code == 401

        # preview: quality-heavy weights put o2 first, and nothing changes
        async def reranked() -> dict[str, Any] | None:
            body = (await client.get(f"/referrals/{rid}/shortlist", headers=croydon)).json()
            return body if body["policy_version"] == 2 else None
        current = await wait_for(reranked)
        proposal = {"referral_id": rid, "quality_weight": "0.90", "price_weight": "0.10"}
        preview = await client.post("/policy/preview", headers=commissioner, json=proposal)
        assert preview.status_code == 200, preview.text
        body = preview.json()
        # o2: 0.9*90 + 0.1*85 = 89.50 ; o1: 0.9*80 + 0.1*100 = 82.00
        assert [(e["offer_id"], e["score"], e["rank"], e["current_rank"]) for e in body["entries"]] == [
            ("o2", "89.50", 1, 2), ("o1", "82.00", 2, 1)]
        assert body["current_policy"]["version"] == 2
        assert body["proposed_policy"] == {"quality_weight": "0.90", "price_weight": "0.10", "min_quality": None}
        gated = (await client.post("/policy/preview", headers=commissioner,
                                   json={**proposal, "min_quality": "85.00"})).json()
        assert [e["offer_id"] for e in gated["entries"]] == ["o2"]
        assert [x["offer_id"] for x in gated["excluded"]] == ["o1"]
        assert (await client.get(f"/referrals/{rid}/shortlist", headers=croydon)).json() == current
        assert (await client.get("/policy", headers=commissioner)).json()["version"] == 2
        assert len((await client.get("/policy/history", headers=commissioner)).json()["items"]) == 2
        # refusals: bad weights name field and rule; other roles; an unknown referral
        bad = await client.post("/policy/preview", headers=commissioner, json={**proposal, "price_weight": "0.20"})
        assert bad.status_code == 422
        assert (bad.json()["field"], bad.json()["rule"]) == ("price_weight", "weights_sum_to_one")
        for who in (croydon, auth(settings, "provider", p1)):
            assert (await client.post("/policy/preview", headers=who, json=proposal)).status_code == 403
        missing = await client.post("/policy/preview", headers=commissioner,
                                    json={**proposal, "referral_id": str(uuid.uuid4())})
        assert missing.status_code == 404

        # an award: time to place counts it for the partnership and its borough, not another borough
        await feed(app, settings, env("placement-awarded", rid, {
            "offer_id": "o1", "provider_id": p1, "weekly_fee_pence": 425000, "justification": "near home",
            "top_ranked_offer_id": "o1", "not_selected": [{"offer_id": "o2", "provider_id": p2}],
            "borough": "croydon", "awarded_at": "2026-05-11T09:00:00Z"}, "referral"))

        async def placed() -> dict[str, Any] | None:
            body = (await client.get("/insights/time-to-place", headers=commissioner)).json()
            return body if body["awards"] == 1 else None
        distribution = await wait_for(placed)
        assert distribution["scope"] == "partnership" and distribution["median_days"] == "10.00"
        assert {b["label"]: b["awards"] for b in distribution["buckets"]} == {
            "0-7": 0, "8-14": 1, "15-28": 0, "29-56": 0, "57+": 0}
        assert (await client.get("/insights/time-to-place", headers=croydon)).json()["awards"] == 1
        lambeth = auth(settings, "borough", "lambeth")
        assert (await client.get("/insights/time-to-place", headers=lambeth)).json()["awards"] == 0
        assert (await client.get("/insights/time-to-place?need=SEMH", headers=commissioner)).json()["awards"] == 0
        bad_need = await client.get("/insights/time-to-place?need=XYZ", headers=commissioner)
        assert bad_need.status_code == 422 and bad_need.json()["field"] == "need"

        # fees: two providers are a small cell, suppressed for everyone; a borough reads only its own
        fees = (await client.get("/insights/fees", headers=commissioner)).json()
        assert fees["rows"] == [{"need": "ASD", "providers": 2, "offers": 2, "lower_quartile_pence": None,
                                 "median_pence": None, "upper_quartile_pence": None, "suppressed": True,
                                 "suppressed_reason": "too_few_providers"}]
        assert (await client.get("/insights/fees", headers=lambeth)).json()["rows"] == []
        provider_view = (await client.get("/insights/fees", headers=auth(settings, "provider", p1))).json()
        assert provider_view["scope"] == "market" and "425000" not in str(provider_view)
        assert (await client.get("/insights/fees")).status_code == 401


def record(n: int, need: str = "ASD", *, fees: dict[str, int], raised: str = "2026-03-02T09:00:00Z",
           awarded: str | None = None, status: str = "awarded") -> ReferralRecord:
    return ReferralRecord(referral_id=f"r{n}", borough="croydon", primary_need=need, raised_at=raised, offers=fees,
                          awarded_fee=min(fees.values()) if awarded else None, awarded_at=awarded, status=status)


def test_time_to_place_buckets_each_award_by_days_from_raised() -> None:
    records = [record(1, fees={"a": 1}, awarded="2026-03-09T10:00:00Z"),   # 7 days
               record(2, fees={"a": 1}, awarded="2026-03-10T10:00:00Z"),   # 8
               record(3, fees={"a": 1}, awarded="2026-05-30T10:00:00Z"),   # 89
               record(4, fees={"a": 1}, status="open")]                    # not placed: not counted
    result = time_to_place(records)
    assert result["awards"] == 3 and result["median_days"] == "8.00"
    assert [b["awards"] for b in result["buckets"]] == [1, 1, 0, 0, 1]
    assert time_to_place([]) == {**time_to_place([]), "awards": 0, "median_days": None}


def test_fee_quartiles_suppress_small_cells_and_pool_for_providers() -> None:
    five = {f"p{i}": 100000 + 10000 * i for i in range(5)}   # 100000 .. 140000
    records = [record(1, fees=five), record(2, "SEMH", fees={"p0": 90000, "p1": 95000})]
    rows = {r["need"]: r for r in fee_quartiles(records, min_providers=5, pooled=False, today=date(2026, 6, 1))}
    assert (rows["ASD"]["lower_quartile_pence"], rows["ASD"]["median_pence"],
            rows["ASD"]["upper_quartile_pence"]) == (110000, 120000, 130000)
    assert rows["SEMH"]["suppressed"] and rows["SEMH"]["median_pence"] is None
    # pooled: a month still open (or within its grace) publishes nothing, so no figure moves
    open_month = fee_quartiles(records, min_providers=5, pooled=True, today=date(2026, 4, 3))
    assert open_month == []
    final = {r["need"]: r for r in fee_quartiles(records, min_providers=5, pooled=True, today=date(2026, 6, 1))}
    assert final["ASD"]["median_pence"] == 120000 and final["SEMH"]["suppressed"]
    # a provider with several fees counts once (its median), so it cannot pad a cell
    padded = [record(1, fees={"p0": 100000}), record(2, fees={"p0": 300000}), record(3, fees={"p0": 500000}),
              record(4, fees={"p1": 200000})]
    assert fee_quartiles(padded, min_providers=2, pooled=True, today=date(2026, 6, 1))[0]["offers"] == 4
    assert fee_quartiles(padded, min_providers=3, pooled=True, today=date(2026, 6, 1))[0]["suppressed"]
