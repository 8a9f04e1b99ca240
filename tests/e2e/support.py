"""What the end-to-end tests share: `placematch up` in a subprocess, tokens, the README's payloads."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from services import SERVICES
from shared.auth import mint_token
from shared.settings import Settings
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def free_base_port() -> int:
    """A base port N such that N+1..N+len(SERVICES)+1 are free (the services, and the console after them)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1] - 1
        if base + len(SERVICES) + 1 >= 65535:
            continue
        try:
            for offset in range(1, len(SERVICES) + 2):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {len(SERVICES) + 1} consecutive free ports")


class Stack:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.base = free_base_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "up.log"

    def url(self, service: str) -> str:
        if service == "console":  # not a service with a database: base + 6
            return f"http://127.0.0.1:{self.base + 6}"
        return f"http://127.0.0.1:{self.base + SERVICES.index(service) + 1}"

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PLACEMATCH_SMTP_HOST"}
        env |= {"PLACEMATCH_WEBHOOK_ALLOW_PRIVATE": "true", "PLACEMATCH_RELAY_POLL_SECONDS": "0.2"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--base-port", str(self.base),
             "--data-dir", str(self.data_dir)],
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
        timed_out = False
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.process.kill()
            self.process.wait()
        code, self.process = self.process.returncode, None
        assert code == 0 and not timed_out, (
            f"placematch up {'did not stop within 60 s of Ctrl-C' if timed_out else f'exited with {code}'}:\n"
            + self.log.read_text()[-4000:])


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a `placematch` command as a user would, with a wide terminal for rich's tables."""
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "250"})


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
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.status_code} {response.text}")
    return response.json()


