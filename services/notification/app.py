"""Wiring of the notification service: consume placematch.notifications, dispatch, serve the API."""
from __future__ import annotations

from fastapi import FastAPI

from shared.service import ConsumerSpec, ServiceRuntime, create_service_app
from shared.settings import Settings

from . import api
from .config import NotificationSettings
from .dispatcher import Deliveries, Dispatcher
from .handlers import make_handler


def create_app(settings: Settings | None = None) -> FastAPI:
    config = NotificationSettings.of(settings)
    holder: dict[str, Dispatcher] = {}

    async def handle(conn, event):  # type: ignore[no-untyped-def]
        await holder["handler"](conn, event)  # type: ignore[operator]

    async def dispatch(runtime: ServiceRuntime) -> None:
        await holder["dispatcher"].run(runtime)

    runtime = ServiceRuntime(
        "notification", config,
        publishes=["audit", "notifications.dlq"],
        consumes=[ConsumerSpec(["notifications"], handle)],
        tasks=[dispatch],
    )
    deliveries = Deliveries(
        runtime.store, config, audit_topic=runtime.topic("audit"), dlq_topic=runtime.topic("notifications.dlq"))
    dispatcher = Dispatcher(runtime, config, deliveries)
    holder["dispatcher"] = dispatcher
    holder["handler"] = make_handler(deliveries, dispatcher, config)  # type: ignore[assignment]
    app = create_service_app(
        runtime, [api.router], title="placematch notification",
        description="Signed webhooks (Standard Webhooks) and email alerts for providers and boroughs, "
                    "with a delivery log and redelivery.",
    )
    app.state.notification_settings = config
    app.state.dispatcher = dispatcher
    app.state.deliveries = deliveries
    return app
