"""Helpers for tests of services: run an app's lifespan and talk to it over ASGI."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from shared.auth import mint_token
from shared.settings import Settings


@contextlib.asynccontextmanager
async def service_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app (migrations, relay, consumers) and give an httpx client bound to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def auth(settings: Settings, role: str, tenant: str) -> dict[str, str]:
    """Authorization header for a token of `role` and `tenant`."""
    return {"Authorization": f"Bearer {mint_token(settings, role, tenant)}"}
