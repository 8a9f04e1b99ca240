"""A placement through `placematch up`: raise, offer, award; the award opens a placement, which is
started, funded, reviewed, uplifted and ended unplanned; the evidence pack of the referral holds
its history, and `placematch replay --service placement` reproduces its views byte for byte."""
from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.support import REFERRAL, RIVERSIDE, Stack, bearer, cli, ok
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

SCHOOLS = (("Riverside School", "good", 425000), ("Oakfield Academy", "good", 520000))  # Riverside ranks top


async def award_a_referral(http: httpx.AsyncClient, stack: Stack, *, idle: tuple[str, ...] = ()) -> dict[str, Any]:
    """Two approved schools offer on one Croydon referral; the top offer is awarded. The `idle`
    schools are approved (so invited) too, but do not offer."""
    commissioner, croydon = bearer("commissioner", "region"), bearer("borough", "croydon")
    enrolment, referral, matching = stack.url("enrolment"), stack.url("referral"), stack.url("matching")
    providers = []
    for i, (name, grade, _) in enumerate([*SCHOOLS, *((n, "good", 0) for n in idle)]):
        pid = ok(await http.post(f"{enrolment}/providers", json={**RIVERSIDE, "name": name, "urn": f"20000{i}"}),
                 201)["id"]
        ok(await http.post(f"{enrolment}/providers/{pid}/inspections", headers=commissioner,
                           json={"framework": "ofsted_legacy", "overall": grade, "inspected_on": "2024-03-01"}))
        ok(await http.post(f"{enrolment}/providers/{pid}/approve", headers=commissioner))
        providers.append(pid)
    referral_id = ok(await http.post(f"{referral}/referrals", headers=croydon, json=REFERRAL), 201)["id"]
    offers = {}
    idle_ids = providers[len(SCHOOLS):]
    for pid, (_, _, fee) in zip(providers[:len(SCHOOLS)], SCHOOLS, strict=True):
        async def offer(pid: str = pid, fee: int = fee) -> str | None:
            response = await http.post(f"{referral}/referrals/{referral_id}/offers", headers=bearer("provider", pid),
                                       json={"weekly_fee_pence": fee, "start_date": "2027-09-01"})
            return None if response.status_code == 409 else ok(response, 201)["id"]
        offers[pid] = await wait_for(offer, timeout=60, message="an offer")

    async def ranked() -> list[dict[str, Any]] | None:
        body = ok(await http.get(f"{matching}/referrals/{referral_id}/shortlist", headers=croydon))
        return body["entries"] if len(body["entries"]) == 2 else None
    entries = await wait_for(ranked, timeout=60, message="both offers ranked")
    top = entries[0]

    async def award() -> Any:
        response = await http.post(f"{referral}/referrals/{referral_id}/award", headers=croydon,
                                   json={"offer_id": top["offer_id"]})
        return None if response.status_code in (409, 422) else ok(response)
    await wait_for(award, timeout=30, message="the award")
    return {"referral_id": referral_id, "providers": providers[:len(SCHOOLS)], "offers": offers, "entries": entries,
            "top": top, "idle": idle_ids}


async def opened_placement(http: httpx.AsyncClient, stack: Stack, referral_id: str, *,
                           status: str = "awarded") -> dict[str, Any]:
    async def opened() -> dict[str, Any] | None:
        found = ok(await http.get(f"{stack.url('placement')}/placements", headers=bearer("borough", "croydon"),
                                  params={"referral_id": referral_id, "status": status}))
        return found["placements"][0] if found["placements"] else None
    placement: dict[str, Any] = await wait_for(opened, timeout=60, message=f"a placement {status} for the referral")
    return placement


async def test_award_to_unplanned_ending_then_audit_and_replay(stack: Stack) -> None:
    croydon, lambeth = bearer("borough", "croydon"), bearer("borough", "lambeth")
    today = datetime.now(UTC).date()
    await stack.start()
    async with httpx.AsyncClient(timeout=15) as http:
        history = await award_a_referral(http, stack)
        referral_id, top = history["referral_id"], history["top"]
        school = bearer("provider", top["provider_id"])
        placements = f"{stack.url('placement')}/placements"

        placement = await opened_placement(http, stack, referral_id)
        pid = placement["id"]
        assert placement["provider_id"] == top["provider_id"] and placement["offer_id"] == top["offer_id"]
        assert placement["weekly_fee_pence"] == 425000 and placement["origin"] == "award"
        assert placement["outcomes"][0]["outcome"] == REFERRAL["outcomes"][0]
        assert "child_ref" not in json.dumps(placement) and REFERRAL["child_ref"] not in json.dumps(placement)
        assert (await http.get(f"{placements}/{pid}", headers=lambeth)).status_code == 404  # another borough

        started = ok(await http.post(f"{placements}/{pid}/start", headers=school,
                                     json={"started_on": today.isoformat()}))
        assert started["status"] == "active"
        funded = ok(await http.post(f"{placements}/{pid}/funding", headers=croydon, json={
            "contributions": [{"stream": "education", "weekly_pence": 300000},
                              {"stream": "social_care", "weekly_pence": 85000},
                              {"stream": "health", "weekly_pence": 40000, "icb_code": "QWE"}],
            "agreed_from": today.isoformat(), "agreed_until": (today + timedelta(days=364)).isoformat(),
            "review_due": (today + timedelta(days=182)).isoformat()}))
        assert funded["funding_balanced"] is True and funded["review_due"] == (today + timedelta(days=182)).isoformat()
        unbalanced = await http.post(f"{placements}/{pid}/funding", headers=croydon, json={
            "contributions": [{"stream": "education", "weekly_pence": 1}], "agreed_from": today.isoformat(),
            "agreed_until": (today + timedelta(days=364)).isoformat(), "review_due": today.isoformat()})
        assert unbalanced.status_code == 422 and unbalanced.json()["rule"] == "sum_to_fee", unbalanced.text

        needs = {**REFERRAL["needs_profile"], "self_regulation": 2, "emotional_health": 1}
        reviewed = ok(await http.post(f"{placements}/{pid}/reviews", headers=croydon, json={
            "reviewed_on": today.isoformat(), "continues": True,
            "next_review_due": (today + timedelta(days=90)).isoformat(),
            "outcomes": [{"outcome": REFERRAL["outcomes"][0], "progress": "progressing", "note": "four days a week"}],
            "needs_profile": needs}), 201)
        assert reviewed["distance_travelled"]["self_regulation"] == -1
        assert [n["source"] for n in reviewed["needs_over_time"]] == ["referral", "review"]

        uplift = ok(await http.post(f"{placements}/{pid}/fee-changes", headers=school, json={
            "weekly_fee_pence": 446000, "effective_from": (today + timedelta(days=120)).isoformat(),
            "reason": "Annual inflationary uplift"}), 201)
        change_id = uplift["fee_changes"][0]["change_id"]
        decided = ok(await http.post(f"{placements}/{pid}/fee-changes/{change_id}/decision", headers=croydon,
                                     json={"decision": "agreed_in_part", "weekly_fee_pence": 435000,
                                           "note": "Panel agreed the pay award, not the agency cover"}))
        assert [f["weekly_fee_pence"] for f in decided["fee_history"]] == [425000, 435000]

        ended_on = (today + timedelta(days=150)).isoformat()
        ended = ok(await http.post(f"{placements}/{pid}/end", headers=croydon, json={
            "ended_on": ended_on, "ending": "unplanned", "reason": "breakdown", "note": "Placement broke down"}))
        assert ended["status"] == "ended" and ended["ending"]["ending"] == "unplanned"
        assert ended["ending"]["days"] == 150
        again = await http.post(f"{placements}/{pid}/start", headers=school, json={"started_on": today.isoformat()})
        assert again.status_code == 409, again.text
        spend = ok(await http.get(f"{placements}/spend", headers=croydon,
                                  params={"from": today.isoformat(), "to": ended_on}))
        assert spend["total_pence"] > 0 and [b["borough"] for b in spend["by_borough"]] == ["croydon"]
        final = ok(await http.get(f"{placements}/{pid}", headers=croydon))
    stack.stop()

    audit = cli("audit", "referral", referral_id, "--data-dir", str(stack.data_dir))
    assert audit.returncode == 0, audit.stderr
    pack = json.loads(audit.stdout[: audit.stdout.rindex("}") + 1])
    [history_of] = pack["placements"]
    assert history_of["placement_id"] == pid and history_of["outcome"] == "ended"
    assert [s["type"] for s in history_of["steps"]] == [
        "placement-opened", "placement-started", "funding-agreed", "placement-reviewed", "fee-change-requested",
        "fee-change-decided", "placement-ended"]
    assert REFERRAL["child_ref"] not in audit.stdout

    replayed = cli("replay", "--data-dir", str(stack.data_dir), "--service", "placement")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "placement: every placement stream and view reproduced byte for byte" in replayed.stdout
    counted = re.search(r"events recorded: (\d+); replayed: (\d+)", replayed.stdout)
    assert counted and counted[1] == counted[2] and int(counted[1]) >= 7, replayed.stdout  # 7 steps + notifications
    from_topics = cli("replay", "--data-dir", str(stack.data_dir), "--service", "placement", "--from", "topics")
    assert from_topics.returncode == 0, from_topics.stdout + from_topics.stderr
    assert "placement: every placement stream and view reproduced byte for byte" in from_topics.stdout
    verified = cli("verify", "--data-dir", str(stack.data_dir), "--service", "placement")
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout

    # a hand-edited view row is a difference replay names
    with sqlite3.connect(stack.data_dir / "placement.db") as db:
        edited = db.execute("UPDATE placement_placements SET view = replace(view, '\"breakdown\"', '\"moved_on\"')"
                            " WHERE placement_id = ?", (pid,)).rowcount
    assert edited == 1
    tampered = cli("replay", "--data-dir", str(stack.data_dir), "--service", "placement")
    assert tampered.returncode == 1 and "view placement_placements" in tampered.stdout, tampered.stdout
    assert final["ending"]["reason"] == "breakdown"


async def test_a_collapsed_award_goes_to_the_next_offer(stack: Stack) -> None:
    """The awarded school withdraws before the start: the borough awards the next offer; referral
    records it, placement opens the next placement, matching tells the next school it was accepted."""
    croydon, auditor = bearer("borough", "croydon"), bearer("auditor", "region")
    await stack.start()
    async with httpx.AsyncClient(timeout=15) as http:
        history = await award_a_referral(http, stack)
        referral_id, top = history["referral_id"], history["top"]
        [runner_up] = [e for e in history["entries"] if e["offer_id"] != top["offer_id"]]
        first = await opened_placement(http, stack, referral_id)
        placements = f"{stack.url('placement')}/placements"

        async def collapsed() -> dict[str, Any] | None:
            response = await http.post(f"{placements}/{first['id']}/collapse", headers=croydon, json={
                "reason": "provider_withdrew", "note": "The school's residential unit closed",
                "next": "award_next_offer", "next_offer_id": runner_up["offer_id"]})
            if response.status_code == 409 and response.json().get("rule") == "shortlist_unknown":
                return None
            return ok(response)
        view = await wait_for(collapsed, timeout=30, message="the collapse")
        assert view["status"] == "collapsed" and view["collapse"]["next"] == "award_next_offer"

        second = await opened_placement(http, stack, referral_id)
        assert second["id"] != first["id"] and second["offer_id"] == runner_up["offer_id"]
        assert second["provider_id"] == runner_up["provider_id"]
        referral = ok(await http.get(f"{stack.url('referral')}/referrals/{referral_id}", headers=croydon))
        assert referral["status"] == "awarded"
        assert {o["id"]: o["status"] for o in referral["offers"]} == {
            top["offer_id"]: "collapsed", runner_up["offer_id"]: "awarded"}

        async def accepted_notified() -> dict[str, Any] | None:
            pack = ok(await http.get(f"{stack.url('referral')}/referrals/{referral_id}/audit", headers=auditor))
            told = [n["what"] for n in pack["notifications"]]
            return pack if f"Notification offer.accepted to provider {runner_up['provider_id']}" in told else None
        pack = await wait_for(accepted_notified, timeout=60, message="offer.accepted to the next school")
        assert pack["award"]["details"]["offer_id"] == runner_up["offer_id"]
        assert pack["award"]["details"]["after_collapse_of"] == top["offer_id"]
        assert "award-revoked" in [s["type"] for s in pack["timeline"]]
    stack.stop()

    audit = cli("audit", "referral", referral_id, "--data-dir", str(stack.data_dir))
    assert audit.returncode == 0, audit.stderr
    offline = json.loads(audit.stdout[: audit.stdout.rindex("}") + 1])
    assert [(p["placement_id"], p["outcome"]) for p in offline["placements"]] == [
        (first["id"], "collapsed"), (second["id"], "open")]
    replayed = cli("replay", "--data-dir", str(stack.data_dir))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "referral: every read model rebuilt identical" in replayed.stdout
    assert "placement: every placement stream and view reproduced byte for byte" in replayed.stdout
    verified = cli("verify", "--data-dir", str(stack.data_dir))
    assert verified.returncode == 0 and "BROKEN" not in verified.stdout, verified.stdout


async def test_a_collapsed_award_reopens_and_a_new_offer_is_awarded(stack: Stack) -> None:
    """The awarded school withdraws before the start and the borough reopens the referral: a school
    invited at the start (which had not offered) offers now; matching ranks it with the offer that
    stands again, without the collapsed one, and the borough awards it from that shortlist."""
    croydon = bearer("borough", "croydon")
    await stack.start()
    async with httpx.AsyncClient(timeout=15) as http:
        history = await award_a_referral(http, stack, idle=("Willow Bank School",))
        referral_id, top, [late] = history["referral_id"], history["top"], history["idle"]
        [runner_up] = [e for e in history["entries"] if e["offer_id"] != top["offer_id"]]
        first = await opened_placement(http, stack, referral_id)
        referral_url, matching = stack.url("referral"), stack.url("matching")

        async def collapsed() -> dict[str, Any] | None:
            response = await http.post(f"{stack.url('placement')}/placements/{first['id']}/collapse",
                                       headers=croydon, json={"reason": "provider_withdrew", "next": "reopen"})
            if response.status_code == 409 and response.json().get("rule") == "shortlist_unknown":
                return None
            return ok(response)
        assert (await wait_for(collapsed, timeout=30, message="the collapse"))["collapse"]["next"] == "reopen"

        async def reopened() -> dict[str, Any] | None:
            body = ok(await http.get(f"{referral_url}/referrals/{referral_id}", headers=croydon))
            return body if body["status"] == "open" else None
        referral = await wait_for(reopened, timeout=60, message="the referral reopened")
        assert {o["id"]: o["status"] for o in referral["offers"]} == {
            top["offer_id"]: "collapsed", runner_up["offer_id"]: "submitted"}

        async def offer() -> str | None:  # the cheapest: it ranks top
            response = await http.post(f"{referral_url}/referrals/{referral_id}/offers",
                                       headers=bearer("provider", late),
                                       json={"weekly_fee_pence": 400000, "start_date": "2027-09-01"})
            return None if response.status_code == 409 else ok(response, 201)["id"]
        new_offer = await wait_for(offer, timeout=60, message="a new offer on the reopened referral")

        async def ranked() -> dict[str, Any] | None:
            body = ok(await http.get(f"{matching}/referrals/{referral_id}/shortlist", headers=croydon))
            return body if any(e["offer_id"] == new_offer for e in body["entries"]) else None
        shortlist = await wait_for(ranked, timeout=60, message="the new offer ranked")
        assert [e["offer_id"] for e in shortlist["entries"]] == [new_offer, runner_up["offer_id"]]
        assert [x["offer_id"] for x in shortlist["excluded"]] == [top["offer_id"]]

        async def award() -> Any:
            response = await http.post(f"{referral_url}/referrals/{referral_id}/award", headers=croydon,
                                       json={"offer_id": new_offer})
            return None if response.status_code == 409 else ok(response)
        await wait_for(award, timeout=30, message="the award of the new offer")
        second = await opened_placement(http, stack, referral_id)
        assert second["id"] != first["id"] and (second["offer_id"], second["provider_id"]) == (new_offer, late)
        referral = ok(await http.get(f"{referral_url}/referrals/{referral_id}", headers=croydon))
        assert referral["status"] == "awarded"
        assert {o["id"]: o["status"] for o in referral["offers"]} == {
            top["offer_id"]: "collapsed", runner_up["offer_id"]: "not_selected", new_offer: "awarded"}
    stack.stop()

    replayed = cli("replay", "--data-dir", str(stack.data_dir))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "matching: every decision reproduced byte for byte" in replayed.stdout
    assert "referral: every read model rebuilt identical" in replayed.stdout
