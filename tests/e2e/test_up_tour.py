"""`placematch up` as a user runs it: the README's tour over HTTP, then a restart keeps the state."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from shared.auth import mint_token
from shared.settings import SERVICES, Settings
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def free_base_port() -> int:
    """A base port N such that N+1..N+4 are free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1] - 1
        if base + 4 >= 65535:
            continue
        try:
            for offset in range(1, 5):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError("no four consecutive free ports")


class Stack:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.base = free_base_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "up.log"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.base + SERVICES.index(service) + 1}"

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PLACEMATCH_SMTP_HOST"}
        env |= {"PLACEMATCH_WEBHOOK_ALLOW_PRIVATE": "true", "PLACEMATCH_RELAY_POLL_SECONDS": "0.2"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "up", "--base-port", str(self.base), "--data-dir", str(self.data_dir)],
            cwd=ROOT, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

        async def all_healthy() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
            async with httpx.AsyncClient(timeout=2) as client:
                for service in SERVICES:
                    try:
                        if (await client.get(self.url(service) + "/ready")).status_code != 200:
                            return False
                    except httpx.TransportError:
                        return False
            return True

        await wait_for(all_healthy, timeout=90, interval=0.2, message="placematch up to be ready")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.returncode == 0, self.log.read_text()[-3000:]
        self.process = None


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path / "var")
    stack.data_dir.mkdir()
    yield stack
    if stack.process is not None and stack.process.poll() is None:
        stack.process.kill()
        stack.process.wait()


def bearer(role: str, tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(Settings(), role, tenant)}"}


RIVERSIDE = {
    "name": "Riverside School", "urn": "100001", "kind": "independent_special_school",
    "lots": ["ASD", "SEMH"], "age_min": 5, "age_max": 19, "genders": ["female", "male"],
    "placement_types": ["day", "residential_38"], "capacity": 4,
    "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115},
    "boroughs_served": [], "contact_email": "admissions@riverside.example"}
REFERRAL = {
    "child_ref": "CR-2026-0042", "birth_date": "2014-05-02", "gender": "male",
    "primary_need": "ASD", "secondary_needs": ["SLCN"], "placement_type": "day",
    "required_from": "2027-09-01", "location": {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099},
    "max_travel_km": 30, "offer_deadline": "2027-07-01T17:00:00Z", "preferred_provider_id": None,
    "needs_profile": {"physical_health": 0, "emotional_health": 2, "relationships": 1, "risk_taking": 0,
                      "learning_disability": 2, "educational_progress": 2, "self_regulation": 3,
                      "community_engagement": 1, "self_care": 1, "goals_and_aspirations": 1, "voice": 2,
                      "identity": 1},
    "outcomes": ["Attend school full time by spring term"]}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
    return response.json()


async def test_readme_tour_then_restart_keeps_state(stack: Stack) -> None:
    commissioner, croydon = bearer("commissioner", "region"), bearer("borough", "croydon")
    await stack.start()
    async with httpx.AsyncClient(timeout=10) as http:
        enrolment, referral, matching = stack.url("enrolment"), stack.url("referral"), stack.url("matching")
        # 1. apply, inspect, approve
        provider_id = ok(await http.post(f"{enrolment}/providers", json=RIVERSIDE), 201)["id"]
        ok(await http.post(f"{enrolment}/providers/{provider_id}/inspections", headers=commissioner,
                           json={"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"}))
        approved = ok(await http.post(f"{enrolment}/providers/{provider_id}/approve", headers=commissioner))
        assert approved["status"] == "approved"
        # 2. raise a referral; matching invites the school
        referral_id = ok(await http.post(f"{referral}/referrals", headers=croydon, json=REFERRAL), 201)["id"]

        async def invited() -> bool:
            body = ok(await http.get(f"{matching}/referrals/{referral_id}/eligible-providers", headers=croydon))
            return provider_id in [p["provider_id"] for p in body["providers"]]
        await wait_for(invited, timeout=30, message="the school to be invited")

        def invitation_mailed() -> bool:  # `placematch up` keeps email in <data-dir>/mail
            return any("admissions@riverside.example" in p.read_text(errors="replace")
                       for p in (stack.data_dir / "mail").glob("*.eml"))
        await wait_for(invitation_mailed, timeout=30, message="the invitation email")
        # 3. the school sees a redacted referral and offers (409 + Retry-After until the invitation lands)
        school = bearer("provider", provider_id)
        seen = ok(await http.get(f"{referral}/referrals/{referral_id}", headers=school))
        assert "child_ref" not in seen and "birth_date" not in seen

        async def offer() -> dict[str, Any] | None:
            response = await http.post(f"{referral}/referrals/{referral_id}/offers", headers=school,
                                       json={"weekly_fee_pence": 425000, "start_date": "2027-09-01", "notes": "ASD unit"})
            if response.status_code == 409:
                assert "retry-after" in response.headers
                return None
            return ok(response, 201)
        offer_id = (await wait_for(offer, timeout=30, message="the offer to be accepted"))["id"]
        # 4. the shortlist, then the award of the top offer (no justification needed)

        async def shortlisted() -> dict[str, Any] | None:
            body = ok(await http.get(f"{matching}/referrals/{referral_id}/shortlist", headers=croydon))
            return body if body["entries"] else None
        shortlist = await wait_for(shortlisted, timeout=30, message="a shortlist")
        assert shortlist["entries"][0] | {} == shortlist["entries"][0]
        assert shortlist["entries"][0]["offer_id"] == offer_id
        assert shortlist["entries"][0]["quality"] == "80.00" and shortlist["entries"][0]["price"] == "100.00"
        assert shortlist["entries"][0]["score"] == "88.00"

        async def awarded() -> dict[str, Any] | None:
            response = await http.post(f"{referral}/referrals/{referral_id}/award", headers=croydon,
                                       json={"offer_id": offer_id})
            if response.status_code == 422 and "justification" in response.text:
                return None  # the shortlist has not reached the referral service yet
            return ok(response)
        await wait_for(awarded, timeout=30, message="the award")
        before = ok(await http.get(f"{referral}/referrals/{referral_id}", headers=croydon))
        assert before["status"] == "awarded"

    stack.stop()
    await stack.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            after = ok(await http.get(f"{stack.url('referral')}/referrals/{referral_id}", headers=croydon))
            assert after == before
            provider = ok(await http.get(f"{stack.url('enrolment')}/providers/{provider_id}", headers=commissioner))
            assert provider["status"] == "approved" and provider["quality_score"] == "80.00"
            shortlist_after = ok(await http.get(f"{stack.url('matching')}/referrals/{referral_id}/shortlist",
                                                headers=croydon))
            assert shortlist_after["entries"] == shortlist["entries"]
    finally:
        stack.stop()
    assert (stack.data_dir / "referral.db").exists() and (stack.data_dir / "bus.db").exists()
