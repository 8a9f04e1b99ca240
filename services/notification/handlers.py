"""What the notification service does with the events it consumes: `notification-requested`."""
from __future__ import annotations

from typing import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.consumers import PoisonEvent
from shared.errors import RuleViolation
from shared.events import Envelope
from shared.logs import get_logger

from . import projections
from .config import NotificationSettings
from .dispatcher import Deliveries, Dispatcher
from .domain import NotificationRequest, Subscription, parse_instant, plan_deliveries

log = get_logger("placematch.notification.handlers")

Handler = Callable[[AsyncConnection, Envelope], Awaitable[None]]


def make_handler(deliveries: Deliveries, dispatcher: Dispatcher, settings: NotificationSettings) -> Handler:
    async def handle(conn: AsyncConnection, event: Envelope) -> None:
        if event.type != "notification-requested":
            return
        try:
            request = NotificationRequest.from_event(event.data)
        except RuleViolation as bad:
            raise PoisonEvent(f"malformed notification-requested {event.id}: {bad.detail}") from bad
        at = parse_instant(event.time)
        if request.email:
            await projections.remember_email(conn, request.recipient, request.email, projections.stamp_dt(at))
        if not settings.email_enabled:
            request = NotificationRequest(**{**request.__dict__, "email": None})
        ids = await projections.subscription_ids_for(conn, request.recipient)
        subscriptions = [await deliveries.store.load(Subscription, sid, conn) for sid in ids]
        planned = plan_deliveries(request, subscriptions, email_always=settings.email_always)
        if not planned:
            log.info("notification has no channel: no webhook subscription and no email",
                        notification_id=request.notification_id, recipient=request.recipient.as_dict())
        for plan in planned:
            await deliveries.schedule(conn, request, plan, at)
        # the consumer wakes the dispatcher once this is committed (app.py: on_commit)

    return handle
