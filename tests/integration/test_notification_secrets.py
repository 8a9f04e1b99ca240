"""Webhook signing secrets never enter an event, on real PostgreSQL (issue 12): every row of
notification's events table is searched for the secrets in clear after a create and a rotation,
and signing still verifies at a real receiver with the `standardwebhooks` package."""
from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from standardwebhooks import Webhook

from services.notification.projections import subscription_secrets
from services.notification.vault import SecretsKeyError
from shared.idempotency import idempotency_keys
from shared.schema import events
from shared.testing import auth
from tests.helpers import wait_for
from tests.support.notification import WebhookReceiver, run_receiver
from tests.unit.notification.test_vault import (
    PROVIDER,
    clear_forms,
    files_holding,
    make_settings,
    request_notification,
    running,
)

pytestmark = [pytest.mark.postgres]


async def test_no_secret_in_clear_in_any_postgresql_row_and_signing_verifies(
    fresh_database_url: str, tmp_path: Path
) -> None:
    key = Fernet.generate_key().decode()
    settings = make_settings(tmp_path, database_url=fresh_database_url, secrets_key=key)
    headers = auth(settings, *PROVIDER)
    async with run_receiver(WebhookReceiver()) as receiver, running(settings) as (app, client):
        created = await client.post("/subscriptions", headers={**headers, "Idempotency-Key": "pg-sub"},
                                    json={"url": receiver.url, "event_types": ["referral.invited"]})
        assert created.status_code == 201, created.text
        sid, first = created.json()["id"], created.json()["secret"]
        rotated = await client.post(f"/subscriptions/{sid}/rotate-secret",
                                    headers={**headers, "Idempotency-Key": "pg-rot"})
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["secret"]

        receiver.secret = second
        await request_notification(app)
        [received] = await wait_for(lambda: receiver.accepted, timeout=30)
        assert received.verified
        Webhook(first).verify(received.body, received.headers)  # the old one during the overlap

        async def delivered() -> bool:
            listed = (await client.get("/deliveries", headers=headers, params={"status": "delivered"})).json()
            return len(listed["deliveries"]) == 1

        await wait_for(delivered, timeout=30)

        forms = [f.decode() for s in (first, second) for f in clear_forms(s)]
        async with app.state.runtime.db.read() as conn:
            rows = (await conn.execute(select(events.c.type, events.c.body))).all()
            sealed = (await conn.execute(select(subscription_secrets.c.sealed))).scalars().all()
            answers = (await conn.execute(select(idempotency_keys.c.body))).scalars().all()
        assert {r.type for r in rows} >= {"subscription-created", "subscription-secret-rotated", "delivery-succeeded"}
        assert [r.type for r in rows if any(f in r.body for f in forms)] == []
        assert len(sealed) == 2 and not any(f in s for s in sealed for f in forms)
        assert len(answers) == 2 and not any(f.encode() in a for a in answers for f in forms)
    assert files_holding(tmp_path, [first, second]) == []

    with pytest.raises(SecretsKeyError, match="does not open the 2 webhook signing secret"):
        async with running(make_settings(tmp_path, database_url=fresh_database_url,
                                         secrets_key=Fernet.generate_key().decode())):
            pass
