"""Issue 12 on real PostgreSQL: a tenant claim longer than the read model's column (101
characters) and a NUL in a path were 500s (PostgreSQL refuses the value); now the token is a 401
naming the claim and the path a 422, and nothing is recorded."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from services.referral.app import create_app
from shared.settings import Settings
from tests.helpers import forged_token
from tests.unit.referral.test_api import referral_body

pytestmark = [pytest.mark.postgres]


async def test_overlong_tenant_and_nul_path_are_refused_on_postgresql(fresh_database_url: str,
                                                                      tmp_path: Path) -> None:
    settings = Settings(database_url=fresh_database_url, data_dir=tmp_path, relay_poll_seconds=0.05)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a 500 is an answer here
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            long_tenant = {"Authorization": f"Bearer {forged_token(settings, role='borough', tenant='c' * 101)}"}
            response = await client.post("/referrals", json=referral_body(), headers=long_tenant)
            assert response.status_code == 401, response.text
            assert (response.json()["field"], response.json()["rule"]) == ("Authorization.tenant", "max_length")

            croydon = {"Authorization": f"Bearer {forged_token(settings, role='borough', tenant='croydon')}"}
            response = await client.get("/referrals/CR-1%00", headers=croydon)
            assert response.status_code == 422, response.text
            assert (response.json()["field"], response.json()["rule"]) == ("path", "nul_character")
            assert await app.state.runtime.store.read_all() == []
