"""Wiring of the notification service: `create_app(settings)`."""
from __future__ import annotations

import asyncio

from fastapi import FastAPI

from shared.db import Database
from shared.migrations import upgrade
from shared.service import ServiceRuntime, create_service_app
from shared.settings import Settings

from . import api, events_schema, handlers, service
from .dispatcher import Dispatcher
from .service import NotificationRuntime
from .settings import NotificationSettings
from .vault import SecretVault, warn_of_secrets_in_clear

RETIRE_CHECK_SECONDS = 60.0

DESCRIPTION = """Signed webhooks (Standard Webhooks) and email alerts for providers and boroughs, with a delivery
log and redelivery.

Consumes `placematch.notifications`; publishes delivery records to `placematch.audit` and failed
deliveries to `placematch.notifications.dlq`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    config = NotificationSettings.of(settings)
    vault = SecretVault(config.secrets_key, config.data_dir)

    async def migrate(db: Database) -> None:
        await upgrade(db, "notification")
        await vault.start(db)  # a key that cannot open the stored secrets stops the start here
        await warn_of_secrets_in_clear(runtime.store)

    async def dispatch(_runtime: ServiceRuntime) -> None:
        await dispatcher.run()

    async def retire(_runtime: ServiceRuntime) -> None:
        every = min(RETIRE_CHECK_SECONDS, config.webhook_secret_grace_seconds)
        while True:
            await service.retire_expired_secrets(runtime)
            await asyncio.sleep(every)

    # placematch.notifications.dlq comes with the consumed topic
    runtime = NotificationRuntime(config, vault, migrate=migrate, publishes=["audit"], consumes=handlers.consumers,
                                  tasks=[dispatch, retire], answers=api.SecretShownOnce())
    dispatcher = Dispatcher(runtime)
    runtime.on_wake(dispatcher.wake)

    app = create_service_app(runtime, [api.router], title="placematch notification", description=DESCRIPTION)
    events_schema.install_webhooks(app)  # issue 15: the webhook payloads as OpenAPI 3.1 `webhooks`
    app.state.dispatcher = dispatcher
    return app
