"""Wiring of the notification service: consume placematch.notifications, dispatch, serve the API."""
from __future__ import annotations

from fastapi import FastAPI

from shared.db import Database
from shared.migrations import upgrade
from shared.service import ServiceRuntime, create_service_app
from shared.settings import Settings

from . import api
from .config import NotificationSettings
from .dispatcher import Deliveries, Dispatcher
from .handlers import make_handler
from .vault import SecretVault, retire_expired_secrets, warn_of_secrets_in_clear

RETIRE_CHECK_SECONDS = 60.0


def create_app(settings: Settings | None = None) -> FastAPI:
    config = NotificationSettings.of(settings)
    vault = SecretVault(config.secrets_key, config.data_dir)

    async def migrate(db: Database) -> None:
        await upgrade(db, "notification")
        await vault.start(db)  # a key that cannot open the stored secrets stops the start here
        await warn_of_secrets_in_clear(runtime.store)

    runtime = ServiceRuntime("notification", config, migrate=migrate, answers=api.SecretShownOnce(),
                             publishes=["audit"])  # placematch.notifications.dlq comes with the consumed topic
    deliveries = Deliveries(
        runtime.store, config, audit_topic=runtime.topic("audit"), dlq_topic=runtime.topic("notifications.dlq"))
    dispatcher = Dispatcher(runtime, config, deliveries, vault)
    # a backlog of requests is scheduled 20 a transaction (the dispatcher records outcomes in
    # batches too, so it is not starved of the append lock these transactions hold); the
    # dispatcher is woken once they are committed, when the deliveries they schedule are due
    runtime.consume(["notifications"], make_handler(deliveries, dispatcher, config), batch_size=20,
                    on_commit=dispatcher.wake)

    async def dispatch(_runtime: ServiceRuntime) -> None:
        await dispatcher.run()

    async def retire(_runtime: ServiceRuntime) -> None:
        await retire_expired_secrets(vault, runtime.db, min(RETIRE_CHECK_SECONDS, config.webhook_secret_grace_seconds))

    runtime.tasks += [dispatch, retire]

    app = create_service_app(
        runtime, [api.router], title="placematch notification",
        description="Signed webhooks (Standard Webhooks) and email alerts for providers and boroughs, "
                    "with a delivery log and redelivery.",
    )
    app.state.notification_settings = config
    app.state.dispatcher = dispatcher
    app.state.vault = vault
    return app
