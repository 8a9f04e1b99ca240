"""A 500 is logged with its exception, and without the personal data or credentials around it.

The referral service runs as a real uvicorn server in a subprocess with the production logging set-up
(`configure_logging` from `PLACEMATCH_LOG_FORMAT`), its sealing step made to fail (a failing key
store): the request that fails carries a child's reference and birth date and a bearer token, all of
which sit in the local variables of the failing frames, and the exception's text holds a token and a
webhook secret. Both log formats are checked on what the process wrote to stderr.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shared.auth import mint_token
from shared.logs import REDACTED, redact_text
from shared.settings import Settings
from tests.e2e.support import REFERRAL, ROOT
from tests.helpers import wait_for

CHILD_REF = "CR-2031-7781"
BIRTH_DATE = "2015-03-17"
HOOK_SECRET = "whsec_c2VjcmV0LW9mLXRoZS1wb3J0YWw="
FAILURE = "key store unavailable"

SERVER = f"""
import sys, uvicorn
from services.referral import personal
from services.referral.app import create_app
from shared.logs import configure_logging
from shared.settings import Settings

async def failing_seal(conn, referral_id, data):
    token = sys.argv[2]
    raise RuntimeError(f"{FAILURE} (caller authorization: Bearer {{token}}, hook {HOOK_SECRET})")

personal.seal = failing_seal
settings = Settings()
configure_logging(settings.log_format, settings.log_level)
uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[1]), log_config=None, log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _stderr_of_a_500(tmp_path: Path, fmt: str) -> tuple[str, str]:
    """Run the failing referral service, POST a referral, and return (token, what it logged)."""
    port = _free_port()
    token = mint_token(Settings(), "borough", "croydon")
    env = {**os.environ, "PLACEMATCH_LOG_FORMAT": fmt, "PLACEMATCH_DATA_DIR": str(tmp_path / fmt),
           "PLACEMATCH_RELAY_POLL_SECONDS": "0.2", "COLUMNS": "200"}
    stderr = (tmp_path / f"{fmt}.log").open("w+b")
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port), token], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            async def ready() -> bool:
                assert process.poll() is None, (tmp_path / f"{fmt}.log").read_text()
                try:
                    return (await client.get("/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(ready, timeout=60, interval=0.2, message="the referral service to be ready")
            response = await client.post("/referrals",
                                         json={**REFERRAL, "child_ref": CHILD_REF, "birth_date": BIRTH_DATE},
                                         headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "log-test-1"})
        assert response.status_code == 500, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stderr.close()
    return token, (tmp_path / f"{fmt}.log").read_text()


def _assert_nothing_personal(log: str, token: str) -> None:
    for secret in (CHILD_REF, BIRTH_DATE, token, token.split(".")[1], HOOK_SECRET, HOOK_SECRET[6:]):
        assert secret not in log, f"{secret!r} is in the log:\n{log}"


async def test_a_500_in_console_format_has_a_plain_traceback_without_locals_or_secrets(tmp_path: Path) -> None:
    token, log = await _stderr_of_a_500(tmp_path, "console")

    assert "unhandled error" in log and "error_type=RuntimeError" in log
    assert "Traceback (most recent call last)" in log
    assert f"RuntimeError: {FAILURE}" in log
    assert "failing_seal" in log  # the frames are there, their local variables are not
    assert f"whsec_{REDACTED}" in log
    _assert_nothing_personal(log, token)


async def test_a_500_in_json_format_keeps_the_exception_structured_without_secrets(tmp_path: Path) -> None:
    token, log = await _stderr_of_a_500(tmp_path, "json")

    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    unhandled = [line for line in lines if line["event"] == "unhandled error"]
    assert len(unhandled) == 1, log
    entry = unhandled[0]
    assert entry["level"] == "error" and entry["error_type"] == "RuntimeError" and entry["path"] == "/referrals"
    assert entry["correlation_id"]
    (exception,) = entry["exception"]
    assert exception["exc_type"] == "RuntimeError"
    assert exception["exc_value"].startswith(FAILURE)
    assert "failing_seal" in [frame["name"] for frame in exception["frames"]]
    assert not any("locals" in frame for frame in exception["frames"])
    _assert_nothing_personal(log, token)


@pytest.mark.parametrize("text, kept", [
    ("Authorization: Bearer abc.def-ghi", "Authorization"),
    ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln here", "here"),
    ("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw rotated", "rotated"),
    ("key 3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= kept", "kept"),
    ("ReferralIn(child_ref='CR-1', birth_date='2014-05-02', gender='male')", "gender='male'"),
    ('{"child_ref": "CR-1", "primary_need": "ASD"}', '"primary_need": "ASD"'),
    ("INSERT ...\n[parameters: ('CR-1', '2014-05-02')]\n(Background on this error at: x)", "Background"),
    ("(sqlite3.IntegrityError) UNIQUE\n[SQL: INSERT ...]\n[parameters: (b'{\"child_ref\":\"CR-1\",\"birth",
     "[SQL: INSERT"),
])
def test_redact_text_removes_credentials_and_personal_values(text: str, kept: str) -> None:
    redacted = redact_text(text)

    assert REDACTED in redacted and kept in redacted
    for secret in ("abc.def-ghi", "eyJzdWIiOiJ4In0", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "3q2-7wAAAA", "CR-1",
                   "2014-05-02"):
        assert secret not in redacted
