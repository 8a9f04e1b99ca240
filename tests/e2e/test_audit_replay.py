"""Audit and replay on a real history made through `placematch up`: decisions reproduce byte for
byte, a changed weight shows up as differences, a hand-edited row is caught, the evidence pack
holds every step, and erased child details are gone everywhere while replay still matches."""
from __future__ import annotations

import http.server
import json
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.support import REFERRAL, RIVERSIDE, Stack, bearer, cli, ok
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    server.shutdown()


SCHOOLS = [("Riverside School", 80, "good"), ("Oakfield Academy", 100, "outstanding"),
           ("Hillcrest College", 50, "requires_improvement")]
FEES = {"Riverside School": 425000, "Oakfield Academy": 520000, "Hillcrest College": 300000}


async def make_history(http: httpx.AsyncClient, stack: Stack, hook_url: str) -> dict[str, Any]:
    commissioner, croydon = bearer("commissioner", "region"), bearer("borough", "croydon")
    enrolment, referral, matching, notification = (
        stack.url(s) for s in ("enrolment", "referral", "matching", "notification"))
    ok(await http.post(f"{notification}/subscriptions", headers=croydon,
                       json={"url": hook_url, "event_types": ["shortlist.updated"]}), 201)
    providers: dict[str, str] = {}
    for i, (name, _, grade) in enumerate(SCHOOLS):
        application = {**RIVERSIDE, "name": name, "urn": f"10000{i}"}
        pid = ok(await http.post(f"{enrolment}/providers", json=application), 201)["id"]
        ok(await http.post(f"{enrolment}/providers/{pid}/inspections", headers=commissioner,
                           json={"framework": "ofsted_legacy", "overall": grade, "inspected_on": "2024-03-01"}))
        ok(await http.post(f"{enrolment}/providers/{pid}/approve", headers=commissioner))
        providers[name] = pid
    referrals = []
    for n in range(3):  # with Idempotency-Keys, as a case system sends them: their answers are stored
        rid = ok(await http.post(f"{referral}/referrals", headers={**croydon, "Idempotency-Key": f"raise-{n}"},
                                 json={**REFERRAL, "child_ref": f"CR-2026-90{n}7"}), 201)["id"]
        referrals.append(rid)
    ok(await http.post(f"{referral}/referrals/{referrals[0]}/amend", headers={**croydon, "Idempotency-Key": "amend-0"},
                       json={"child_ref": "CR/2026-9008"}))
    offers: dict[tuple[str, str], str] = {}
    for rid in referrals:
        for name, pid in providers.items():
            async def offer(rid: str = rid, name: str = name, pid: str = pid) -> str | None:
                response = await http.post(f"{referral}/referrals/{rid}/offers", headers=bearer("provider", pid),
                                           json={"weekly_fee_pence": FEES[name], "start_date": "2027-09-01"})
                return None if response.status_code == 409 else ok(response, 201)["id"]
            offers[(rid, name)] = await wait_for(offer, timeout=60, message=f"offer from {name}")

    async def ranked(rid: str) -> dict[str, Any] | None:
        body = ok(await http.get(f"{matching}/referrals/{rid}/shortlist", headers=croydon))
        return body if len(body["entries"]) == 3 else None
    shortlists = {rid: await wait_for(lambda rid=rid: ranked(rid), timeout=60) for rid in referrals}
    # an award against the ranking needs a justification; one on the ranking does not
    override = referrals[0]
    not_top = next(e for e in shortlists[override]["entries"] if e["rank"] == 3)
    refused = await http.post(f"{referral}/referrals/{override}/award", headers=croydon,
                              json={"offer_id": not_top["offer_id"]})
    assert refused.status_code in (409, 422), refused.text
    justification = "Parental preference; tribunal order of 2026-06-12"

    async def award(rid: str, offer_id: str, why: str | None) -> Any:
        response = await http.post(f"{referral}/referrals/{rid}/award", headers=croydon,
                                   json={"offer_id": offer_id, **({"justification": why} if why else {})})
        return None if response.status_code == 409 else ok(response)
    await wait_for(lambda: award(override, not_top["offer_id"], justification), timeout=30)
    top = shortlists[referrals[1]]["entries"][0]["offer_id"]
    await wait_for(lambda: award(referrals[1], top, None), timeout=30)
    # and a policy change mid-history, which re-ranks what is still open
    ok(await http.put(f"{matching}/policy", headers=commissioner,
                      json={"quality_weight": "0.50", "price_weight": "0.50"}))
    return {"providers": providers, "referrals": referrals, "override": override, "justification": justification,
            "not_top": not_top}


async def test_replay_verify_audit_and_erasure(stack: Stack, receiver: str) -> None:
    croydon, auditor = bearer("borough", "croydon"), bearer("auditor", "region")
    await stack.start()
    async with httpx.AsyncClient(timeout=15) as http:
        history = await make_history(http, stack, receiver)
        override, erased = history["override"], history["referrals"][0]
        referral = stack.url("referral")

        # the evidence pack over HTTP, once matching's and notification's records have arrived
        async def pack_complete() -> dict[str, Any] | None:
            pack = ok(await http.get(f"{referral}/referrals/{override}/audit", headers=auditor))
            return pack if pack["award"] and pack["shortlists"] and pack["deliveries"] else None
        pack = await wait_for(pack_complete, timeout=60, message="a complete evidence pack")
        assert pack["justification"] == history["justification"]
        assert len(pack["invitations"]) >= 1 and any(i["details"]["invited"] for i in pack["invitations"])
        assert len([o for o in pack["offers"] if o["type"] == "offer-submitted"]) == 3
        assert all(s["details"]["policy_version"] >= 1 for s in pack["shortlists"])
        assert any(d["details"]["status"] == "delivered" for d in pack["deliveries"])
        assert pack["award"]["details"]["top_ranked_offer_id"] != history["not_top"]["offer_id"]
        other = await http.get(f"{referral}/referrals/{override}/audit", headers=bearer("borough", "lambeth"))
        assert other.status_code == 404

        # erasure: the child's identity goes, the rest of the record stays
        child_ref, raised_as = "CR/2026-9008", "CR-2026-9007"  # as amended, as raised
        before = ok(await http.get(f"{referral}/referrals/{erased}", headers=croydon))
        assert before["child_ref"] == child_ref
        html_before = stack.data_dir / "pack-before-erasure.html"
        written = cli("audit", "referral", erased, "--data-dir", str(stack.data_dir), "--html", str(html_before))
        assert written.returncode == 0, written.stderr
        after = ok(await http.post(f"{referral}/referrals/{erased}/erase", headers=croydon))
        assert after["child_ref"] is None and after["birth_date"] is None and after["status"] == "awarded"
        assert after["age_at_start"] == before["age_at_start"]
        pack_after = ok(await http.get(f"{referral}/referrals/{erased}/audit", headers=auditor))
        assert child_ref not in json.dumps(pack_after) and "2014-05-02" not in json.dumps(pack_after)
        assert pack_after["justification"] == history["justification"]
        retried = await http.post(f"{referral}/referrals", headers={**croydon, "Idempotency-Key": "raise-0"},
                                  json={**REFERRAL, "child_ref": raised_as})
        assert retried.status_code == 409 and retried.json()["rule"] == "answer_erased", retried.text
        assert retried.json()["effect"] == erased and raised_as not in retried.text
    stack.stop()

    verified = cli("verify", "--data-dir", str(stack.data_dir))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    replayed = cli("replay", "--data-dir", str(stack.data_dir))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "every decision reproduced byte for byte" in replayed.stdout
    assert "referral: every read model rebuilt identical" in replayed.stdout
    # the same from the bus's topics (here the embedded bus), in the order of matching's journal
    journal = f"sqlite+aiosqlite:///{stack.data_dir / 'matching.db'}"
    from_topics = cli("replay", "--data-dir", str(stack.data_dir), "--from", "topics", "--journal", journal)
    assert from_topics.returncode == 0, from_topics.stdout + from_topics.stderr
    assert "matching's journal" in from_topics.stdout
    assert "every decision reproduced byte for byte" in from_topics.stdout
    assert "referral:" not in from_topics.stdout
    what_if = cli("replay", "--data-dir", str(stack.data_dir), "--quality-weight", "0.90", "--price-weight", "0.10")
    assert what_if.returncode == 1 and "decisions differ" in what_if.stdout, what_if.stdout + what_if.stderr

    html = stack.data_dir / "pack.html"
    audit = cli("audit", "referral", override, "--data-dir", str(stack.data_dir), "--html", str(html))
    assert audit.returncode == 0, audit.stderr
    offline = json.loads(audit.stdout[: audit.stdout.rindex("}") + 1])
    assert offline["justification"] == history["justification"] and len(offline["shortlists"]) >= 1
    assert history["justification"] in html.read_text()

    # nothing of the erased child in any file of the data directory: every service's database
    # and WAL, the local bus's log, the mail drop, the log, the packs written (before and after)
    files = {str(p.relative_to(stack.data_dir)): p.read_bytes() for p in stack.data_dir.rglob("*") if p.is_file()}
    assert {"referral.db", "bus.db", "up.log", "pack-before-erasure.html"} <= set(files)
    assert any(name.startswith("mail/") for name in files), sorted(files)
    for value in (child_ref, raised_as, "2014-05-02"):  # the birth date: no referral's is kept in clear
        for form in {value, json.dumps(value)[1:-1].replace("/", "\\/"), quote(value, safe=""), value.encode().hex()}:
            holding = [name for name, data in files.items() if form.encode() in data]
            assert holding == [], f"{value!r} (as {form!r}) is still in {holding}"

    # a hand-edited event row is caught and named
    with sqlite3.connect(stack.data_dir / "referral.db") as db:
        position, body = db.execute(
            "SELECT position, body FROM events WHERE type = 'placement-awarded' LIMIT 1").fetchone()
        db.execute("UPDATE events SET body = ? WHERE position = ?", (body.replace("Parental", "Officer"), position))
    tampered = cli("verify", "--data-dir", str(stack.data_dir), "--service", "referral")
    assert tampered.returncode == 1 and f"position {position}" in tampered.stdout, tampered.stdout
