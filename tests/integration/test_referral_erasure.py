"""Erasure of the child's identity reaches everything that holds it, on SQLite and on PostgreSQL.

`child_ref` and the birth date are kept only sealed under the referral's key — in the event log,
the read model and the stored Idempotency-Key answers — and audit packs leave them out; erasure
destroys the key. After it, a retry with a key gets 409 `answer_erased`, never the details, and
neither the details (in clear or in a common encoding) nor the key are anywhere in the data
directory or in any table of the service database.
"""
from __future__ import annotations

import base64
import html as html_escape
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import quote

import pytest
from sqlalchemy import select

from services.referral.app import create_app
from services.referral.audit import render_html
from services.referral.personal import personal_keys
from services.referral.projections import referral_views
from shared.idempotency import IdempotencyMiddleware, idempotency_keys
from shared.settings import Settings
from shared.testing import service_client
from tests.helpers import wait_for
from tests.unit.core.test_idempotency import LEASE, in_progress
from tests.unit.referral.test_api import PROVIDER_A, PROVIDER_B, Harness, offer_body, referral_body

ROOT = Path(__file__).resolve().parents[2]
CHILD, BIRTH = "CR/2026-9042", "2013-11-17"
"""The child's details as raised (a `/` so that the JSON- and URL-escaped forms differ)."""
CHILD_2, BIRTH_2 = "CR/2026-9043", "2013-11-18"
"""As amended."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = request.getfixturevalue("fresh_database_url") if request.param == "postgres" else None
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    return Settings(data_dir=data_dir, database_url=url, relay_poll_seconds=0.05,
                    consumer_retry_base_seconds=0.01)


@pytest.fixture
async def h(settings: Settings) -> AsyncIterator[Harness]:
    app = create_app(settings)
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        yield Harness(app, client, settings)


def keyed(h: Harness, role: str, tenant: str, key: str) -> dict[str, str]:
    return {**h.as_(role, tenant), "Idempotency-Key": key}


def assert_erased_answer(response: Any, effect: str) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["idempotent-replayed"] == "true"
    body = response.json()
    assert body["rule"] == "answer_erased" and body["effect"] == effect, body
    for value in (CHILD, CHILD_2, BIRTH, BIRTH_2):
        assert value not in response.text


# --- the findings, one test each -------------------------------------------------------------------


async def test_a_retry_after_erasure_gets_answer_erased_not_the_childs_details(h: Harness) -> None:
    """Raise, amend and offer with keys, erase, retry each: 409 `answer_erased` naming what the
    request made (the referral, the offer), with none of the child's details, and no second effect."""
    raise_body = referral_body(child_ref=CHILD, birth_date=BIRTH)
    raised = await h.client.post("/referrals", json=raise_body, headers=keyed(h, "borough", "croydon", "r-1"))
    assert raised.status_code == 201 and raised.json()["child_ref"] == CHILD, raised.text
    rid = raised.json()["id"]
    amend = {"child_ref": CHILD_2, "birth_date": BIRTH_2}
    amended = await h.client.post(f"/referrals/{rid}/amend", json=amend,
                                  headers=keyed(h, "borough", "croydon", "a-1"))
    assert amended.status_code == 200 and amended.json()["child_ref"] == CHILD_2, amended.text
    await h.invite(rid, PROVIDER_A)
    offered = await h.client.post(f"/referrals/{rid}/offers", json=offer_body(),
                                  headers=keyed(h, "provider", PROVIDER_A, "o-1"))
    assert offered.status_code == 201, offered.text
    again = await h.client.post("/referrals", json=raise_body, headers=keyed(h, "borough", "croydon", "r-1"))
    assert again.status_code == 201 and again.json()["child_ref"] == CHILD  # sealed, opened on replay

    erased = await h.client.post(f"/referrals/{rid}/erase", headers=h.as_("borough", "croydon"))
    assert erased.status_code == 200 and erased.json()["child_ref"] is None, erased.text

    assert_erased_answer(await h.client.post("/referrals", json=raise_body,
                                             headers=keyed(h, "borough", "croydon", "r-1")), rid)
    assert_erased_answer(await h.client.post(f"/referrals/{rid}/amend", json=amend,
                                             headers=keyed(h, "borough", "croydon", "a-1")), rid)
    assert_erased_answer(await h.client.post(f"/referrals/{rid}/offers", json=offer_body(),
                                             headers=keyed(h, "provider", PROVIDER_A, "o-1")),
                         offered.json()["id"])
    listed = (await h.client.get("/referrals", headers=h.as_("borough", "croydon"))).json()["items"]
    assert [r["id"] for r in listed] == [rid] and len(listed[0]["offers"]) == 1
    assert await h.stream(rid) == ["referral-raised", "referral-amended", "offer-submitted",
                                   "personal-data-erased"]


async def test_the_view_and_stored_answers_hold_the_child_sealed_and_open_on_read(h: Harness) -> None:
    """At rest, `referral_views` and the stored answer hold sealed tokens, never the details in
    clear; the borough still reads them, the invited provider an age; after erasure, None."""
    raised = await h.client.post("/referrals", json=referral_body(child_ref=CHILD, birth_date=BIRTH),
                                 headers=keyed(h, "borough", "croydon", "r-1"))
    rid = raised.json()["id"]
    await h.invite(rid, PROVIDER_A)
    async with h.runtime.db.read() as conn:
        view = (await conn.execute(select(referral_views.c.referral).where(
            referral_views.c.referral_id == rid))).scalar_one()
        stored = json.loads(view)
        assert set(stored["child_ref"]) == {"sealed"} and set(stored["birth_date"]) == {"sealed"}, view
        assert CHILD not in view and BIRTH not in view
        answer = (await conn.execute(select(idempotency_keys).where(idempotency_keys.c.key == "r-1"))).one()
    assert CHILD.encode() not in answer.body and BIRTH.encode() not in answer.body
    assert answer.sealed_under == rid

    borough = (await h.client.get(f"/referrals/{rid}", headers=h.as_("borough", "croydon"))).json()
    assert borough["child_ref"] == CHILD and borough["birth_date"] == BIRTH
    listed = (await h.client.get("/referrals", headers=h.as_("borough", "croydon"))).json()["items"]
    assert listed[0]["child_ref"] == CHILD
    provider = (await h.client.get(f"/referrals/{rid}", headers=h.as_("provider", PROVIDER_A))).json()
    assert "child_ref" not in provider and isinstance(provider["age"], int)
    assert (await h.client.get("/referrals", headers=h.as_("provider", PROVIDER_A))).json()["items"][0]["id"] == rid

    await h.client.post(f"/referrals/{rid}/erase", headers=h.as_("borough", "croydon"))
    after = (await h.client.get(f"/referrals/{rid}", headers=h.as_("borough", "croydon"))).json()
    assert after["child_ref"] is None and after["birth_date"] is None
    assert after["age_at_start"] == borough["age_at_start"]


async def test_an_offer_whose_answer_was_lost_is_named_by_the_offers_id(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The offer took effect, its answer could not be stored: the retry's `answer_lost` names
    the offer that was made (what README promises: the id of what was created), not the referral."""
    monkeypatch.setattr(IdempotencyMiddleware, "ORPHANED_AFTER", LEASE)
    original, failures = IdempotencyMiddleware._store_answer, []

    async def flaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise ConnectionRefusedError("database went away")
        return await original(self, *args, **kwargs)

    rid = (await h.raise_referral())["id"]
    await h.invite(rid, PROVIDER_A)
    monkeypatch.setattr(IdempotencyMiddleware, "_store_answer", flaky)
    headers = keyed(h, "provider", PROVIDER_A, "lost-offer")
    first = await h.client.post(f"/referrals/{rid}/offers", json=offer_body(), headers=headers)
    assert first.status_code == 201, first.text

    async def answered() -> Any:
        response = await h.client.post(f"/referrals/{rid}/offers", json=offer_body(), headers=headers)
        return None if in_progress(response) else response
    retry = await wait_for(answered, timeout=15, interval=0.2, message="the lease to lapse")
    assert retry.status_code == 409 and retry.json()["rule"] == "answer_lost", retry.text
    assert retry.json()["effect"] == first.json()["id"] != rid
    offers = (await h.client.get(f"/referrals/{rid}/offers", headers=h.as_("borough", "croydon"))).json()["offers"]
    assert [o["id"] for o in offers] == [first.json()["id"]]


# --- a realistic history, then nothing left anywhere -----------------------------------------------


def encodings(value: str) -> dict[str, bytes]:
    """The forms in which a value could sit in a file or a table dump."""
    return {"clear": value.encode(), "json-escaped": json.dumps(value).strip('"').replace("/", "\\/").encode(),
            "url-encoded": quote(value, safe="").encode(), "html-escaped": html_escape.escape(value).encode(),
            "utf-16": value.encode("utf-16-le"), "hex": value.encode().hex().encode(),
            "base64": base64.b64encode(value.encode()).rstrip(b"=")}


def found_in(haystacks: dict[str, bytes], values: dict[str, str]) -> list[str]:
    return [f"{name} ({form}) in {where}" for where, data in haystacks.items() for name, value in values.items()
            for form, needle in encodings(value).items() if needle in data or needle.upper() in data]


def data_dir_files(data_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}


async def table_dumps(database_url: str) -> dict[str, bytes]:
    """COPY of every table of the service's PostgreSQL database (bytea comes out as hex)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(database_url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
        dumps = {}
        for table in tables:
            out = io.BytesIO()
            await conn.copy_from_table(table, output=out)
            dumps[f"table {table}"] = out.getvalue()
        return dumps
    finally:
        await conn.close()


async def test_after_a_realistic_history_erasure_leaves_nothing_to_find(settings: Settings) -> None:
    """Raise and amend with keys, invitations, offers, a decline, a ranking, an award with a key,
    evidence packs read and written into the data directory (before and after), then erasure:
    the child's details in no file of the data directory (databases with their WAL, the local
    bus's log, written packs) and in no table of the PostgreSQL database; nor the sealing key."""
    data_dir, database_url = settings.data_dir, settings.database_url

    async def at_rest() -> dict[str, bytes]:
        return await table_dumps(database_url) if database_url else data_dir_files(data_dir)

    app = create_app(settings)
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        h = Harness(app, client, settings)
        croydon, auditor = h.as_("borough", "croydon"), h.as_("auditor", "region")
        raised = await client.post("/referrals", json=referral_body(child_ref=CHILD, birth_date=BIRTH),
                                   headers=keyed(h, "borough", "croydon", "raise-1"))
        rid = raised.json()["id"]
        other = (await h.raise_referral(child_ref="CR/2026-7001"))["id"]
        amended = await client.post(f"/referrals/{rid}/amend", json={"child_ref": CHILD_2, "birth_date": BIRTH_2},
                                    headers=keyed(h, "borough", "croydon", "amend-1"))
        assert amended.status_code == 200, amended.text
        await h.invite(rid, PROVIDER_A, PROVIDER_B)
        offer = (await client.post(f"/referrals/{rid}/offers", json=offer_body(),
                                   headers=keyed(h, "provider", PROVIDER_A, "offer-1"))).json()
        declined = await client.post(f"/referrals/{rid}/decline", json={"reason": "no_capacity"},
                                     headers=keyed(h, "provider", PROVIDER_B, "decline-1"))
        assert declined.status_code == 200, declined.text
        await h.rank(rid, (offer["id"], PROVIDER_A))
        awarded = await client.post(f"/referrals/{rid}/award", json={"offer_id": offer["id"]},
                                    headers=keyed(h, "borough", "croydon", "award-1"))
        assert awarded.status_code == 200 and awarded.json()["child_ref"] == CHILD_2, awarded.text
        provider_view = (await client.get(f"/referrals/{rid}", headers=h.as_("provider", PROVIDER_A))).json()
        assert provider_view["child_ref"] == CHILD_2  # the awarded provider sees the full details

        def write_packs(suffix: str, pack: dict[str, Any]) -> None:
            (data_dir / f"pack-{suffix}.json").write_text(json.dumps(pack))
            (data_dir / f"pack-{suffix}.html").write_text(render_html(pack))
            if database_url is None:  # `placematch audit` reads the embedded stores
                written = subprocess.run(
                    [sys.executable, "-m", "services.cli", "audit", "referral", rid, "--data-dir", str(data_dir),
                     "--html", str(data_dir / f"pack-{suffix}-cli.html")],
                    cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"})
                assert written.returncode == 0, written.stdout + written.stderr
                assert offer["id"] in (data_dir / f"pack-{suffix}-cli.html").read_text()

        pack = (await client.get(f"/referrals/{rid}/audit", headers=auditor)).json()
        assert pack["award"] and pack["amendments"] and pack["declines"], pack
        write_packs("before", pack)
        async with app.state.runtime.db.read() as conn:
            key = (await conn.execute(select(personal_keys.c.key).where(
                personal_keys.c.referral_id == rid))).scalar_one()
        sealing_key = {"the sealing key": key}
        assert found_in(await at_rest(), sealing_key), "the search does not find the key while it exists"

        erased = await client.post(f"/referrals/{rid}/erase", headers=keyed(h, "borough", "croydon", "erase-1"))
        assert erased.status_code == 200 and erased.json()["child_ref"] is None, erased.text
        if database_url is None:  # gone from the files at once, the WAL included, not only once stopped
            assert found_in(await at_rest(), sealing_key) == []
        assert_erased_answer(await client.post(f"/referrals/{rid}/award", json={"offer_id": offer["id"]},
                                               headers=keyed(h, "borough", "croydon", "award-1")), rid)
        write_packs("after", (await client.get(f"/referrals/{rid}/audit", headers=croydon)).json())
        assert (await client.get(f"/referrals/{other}", headers=croydon)).json()["child_ref"] == "CR/2026-7001"
    # stopped as `placematch up` stops: the databases closed, each WAL folded in

    haystacks = data_dir_files(data_dir)
    assert {"bus.db", "pack-before.html", "pack-after.json"} <= set(haystacks), sorted(haystacks)
    if database_url:
        haystacks |= await table_dumps(database_url)
        assert rid.encode() in haystacks["table events"] and b"personal-data-erased" in haystacks["table events"]
    else:
        assert {"referral.db", "pack-before-cli.html"} <= set(haystacks), sorted(haystacks)
    assert sum(rid.encode() in data for data in haystacks.values()) >= 3  # the search reads what is there
    child = {"child_ref": CHILD, "amended child_ref": CHILD_2, "birth date": BIRTH, "amended birth date": BIRTH_2}
    assert found_in(haystacks, child | sealing_key) == []


@pytest.mark.postgres
async def test_referral_0004_seals_what_an_older_postgresql_database_holds_in_clear(fresh_database_url: str) -> None:
    from shared.db import Database
    from tests.unit.core.test_migrations import check_referral_0004

    await check_referral_0004(Database(fresh_database_url))
