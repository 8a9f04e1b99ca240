"""GET /referrals for commissioners and auditors: every borough's referrals, redacted."""
from __future__ import annotations

from tests.unit.referral.test_api import PROVIDER_A, Harness, h, settings  # noqa: F401  (fixtures)


async def test_commissioners_and_auditors_list_every_borough_redacted(h: Harness) -> None:  # noqa: F811
    mine = await h.raise_referral("croydon")
    theirs = await h.raise_referral("lambeth", child_ref="LB-0001")
    await h.invite(mine["id"], PROVIDER_A)
    offered = await h.offer(mine["id"], PROVIDER_A)
    assert offered.status_code == 201, offered.text
    for role in ("commissioner", "auditor"):
        response = await h.client.get("/referrals", headers=h.as_(role, "region"))
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        assert sorted(r["id"] for r in items) == sorted([mine["id"], theirs["id"]])
        assert {r["id"]: r["borough"] for r in items} == {mine["id"]: "croydon", theirs["id"]: "lambeth"}
        for item in items:
            assert item["redacted"] is True
            assert "child_ref" not in item and "birth_date" not in item and "preferred_provider_id" not in item
            assert item["location"] == {"district": "CR0"}
        for secret in ("CR-2026-0042", "LB-0001", "2014-05-02", "CR0 1NX", "51.372"):
            assert secret not in response.text
        croydon = next(r for r in items if r["id"] == mine["id"])
        assert [o["provider_id"] for o in croydon["offers"]] == [PROVIDER_A]
    awarded = (await h.client.get("/referrals?status=awarded", headers=h.as_("commissioner", "region"))).json()
    assert awarded["items"] == []
    # a borough still lists only its own, and a bad filter changes nothing and names its field
    listed = (await h.client.get("/referrals", headers=h.as_("borough", "croydon"))).json()["items"]
    assert [r["id"] for r in listed] == [mine["id"]]
    bad = await h.client.get("/referrals?status=lost", headers=h.as_("auditor", "region"))
    assert bad.status_code == 422 and bad.json()["field"] == "status"
    assert (await h.client.get("/referrals")).status_code == 401
