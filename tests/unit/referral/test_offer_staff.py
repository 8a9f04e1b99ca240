"""Which staff member of a provider made (and withdrew) each offer (issue 17): the envelope's
`actorid` on the offer views, never a name, and never another provider's offers."""
from __future__ import annotations

import json
from typing import Any

from services.referral.replay import replay_referral
from shared.auth import mint_token
from shared.schema import events as events_table
from tests.unit.referral.test_api import (  # noqa: F401 - the fixtures `settings` and `h`
    PROVIDER_A,
    PROVIDER_B,
    Harness,
    h,
    offer_body,
    settings,
)


def staff(harness: Harness, provider: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(harness.settings, 'provider', provider, sub=sub)}"}


def by_id(offers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in offers}


async def test_each_offer_shows_the_staff_member_who_made_it_to_its_provider_and_the_borough(h: Harness) -> None:  # noqa: F811
    rid = (await h.raise_referral())["id"]
    await h.invite(rid, PROVIDER_A, PROVIDER_B)
    alice, bob, rival = staff(h, PROVIDER_A, "staff-alice"), staff(h, PROVIDER_A, "staff-bob"), \
        staff(h, PROVIDER_B, "staff-rival")

    first = await h.client.post(f"/referrals/{rid}/offers", json=offer_body(), headers=alice)
    assert first.status_code == 201, first.text
    assert first.json()["submitted_by"] == "staff-alice" and first.json()["withdrawn_by"] is None
    withdrawn = await h.client.post(f"/referrals/{rid}/offers/{first.json()['id']}/withdraw",
                                    json={"reason": "staffing"}, headers=bob)
    assert withdrawn.status_code == 200, withdrawn.text
    assert (withdrawn.json()["submitted_by"], withdrawn.json()["withdrawn_by"]) == ("staff-alice", "staff-bob")
    second = await h.client.post(f"/referrals/{rid}/offers", json=offer_body(weekly_fee_pence=410000), headers=bob)
    assert second.status_code == 201 and second.json()["submitted_by"] == "staff-bob"
    theirs = await h.client.post(f"/referrals/{rid}/offers", json=offer_body(weekly_fee_pence=399999), headers=rival)
    assert theirs.status_code == 201 and theirs.json()["submitted_by"] == "staff-rival"
    a1, a2, b1 = first.json()["id"], second.json()["id"], theirs.json()["id"]

    expected = {a1: ("staff-alice", "staff-bob"), a2: ("staff-bob", None), b1: ("staff-rival", None)}
    for path in (f"/referrals/{rid}/offers", f"/referrals/{rid}"):
        borough = by_id((await h.client.get(path, headers=h.as_("borough", "croydon"))).json()["offers"])
        assert {i: (o["submitted_by"], o["withdrawn_by"]) for i, o in borough.items()} == expected
        own = by_id((await h.client.get(path, headers=alice)).json()["offers"])
        assert {i: o["submitted_by"] for i, o in own.items()} == {a1: "staff-alice", a2: "staff-bob"}
        other = await h.client.get(path, headers=rival)
        assert set(by_id(other.json()["offers"])) == {b1}
        assert a1 not in other.text and a2 not in other.text and "staff-alice" not in other.text \
            and "staff-bob" not in other.text
    listed = (await h.client.get("/referrals", headers=h.as_("borough", "croydon"))).json()["items"]
    assert {i: o["submitted_by"] for i, o in by_id(listed[0]["offers"]).items()} == {
        i: s for i, (s, _) in expected.items()}

    # a command's answer names them as reading the referral does
    await h.rank(rid, (b1, PROVIDER_B), (a2, PROVIDER_A))
    awarded = await h.client.post(f"/referrals/{rid}/award", json={"offer_id": b1},
                                  headers=h.as_("borough", "croydon"))
    assert awarded.status_code == 200, awarded.text
    assert {i: (o["submitted_by"], o["withdrawn_by"]) for i, o in by_id(awarded.json()["offers"]).items()} == expected

    # the person is the envelope's `actorid`: not in any event's data
    async with h.runtime.db.read() as conn:
        bodies = [json.loads(r.body) for r in await conn.execute(
            events_table.select().where(events_table.c.stream_id == rid))]
    offered = {b["data"]["offer_id"]: b.get("actorid") for b in bodies if b["type"] == "offer-submitted"}
    assert offered == {a1: "staff-alice", a2: "staff-bob", b1: "staff-rival"}
    assert all("staff-" not in json.dumps(b["data"]) for b in bodies)

    # and a replay of the referral's stream rebuilds them row for row (the consumed events were fed
    # on the bus here, not recorded by other services: their tables are not rebuilt in this test)
    report = await replay_referral(h.settings.data_dir, h.settings.data_dir / "rebuilt-referral.db")
    assert report.referrals == 1
    assert not {d.table for d in report.differences} & {"referral_offers", "referral_views"}, report.differences
