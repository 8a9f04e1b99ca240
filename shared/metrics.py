"""Prometheus metrics of a service, served at `/metrics`.

Each service has its own registry (`for_service`), so in the embedded run, where the four
services share one process, each port's `/metrics` shows only its own service. Names follow the
Prometheus conventions (`placematch_..._total` counters, `_seconds` durations); labels take
bounded values only (route templates, status codes, event types, topics, consumer names,
outcomes) — never a referral, provider or subscription id, and no personal data.

What is counted as it happens: HTTP requests and their latency (`MetricsMiddleware`), events
appended (`instrument_store`), events consumed, their processing time and dead letters
(`shared.consumers`), events published by the relay. What is read on each scrape (`refresh`):
the outbox backlog and the age of its oldest row, consumer lag per topic and partition.
Service-specific metrics (notification's webhooks and emails) register on `registry_for(name)`.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import after_commit

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "<unmatched>"
_registries: dict[str, CollectorRegistry] = {}
_services: dict[str, ServiceMetrics] = {}


def registry_for(service: str) -> CollectorRegistry:
    """The registry `/metrics` of `service` shows (one per service name in this process)."""
    registry = _registries.get(service)
    if registry is None:
        registry = _registries[service] = CollectorRegistry(auto_describe=True)
    return registry


class ServiceMetrics:
    """The core's metrics of one service."""

    def __init__(self, service: str) -> None:
        r = registry_for(service)
        self.service = service
        self.http_requests = Counter("placematch_http_requests_total", "HTTP requests answered, by route "
                                     "template and status code.", ["method", "route", "status"], registry=r)
        self.http_latency = Histogram("placematch_http_request_duration_seconds", "Time to answer an HTTP request.",
                                      ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.events_appended = Counter("placematch_events_appended_total", "Events appended to the service's store.",
                                       ["type"], registry=r)
        self.events_published = Counter("placematch_events_published_total", "Events the outbox relay published.",
                                        ["topic"], registry=r)
        self.outbox_backlog = Gauge("placematch_outbox_backlog", "Events in the outbox not yet published.",
                                    registry=r)
        self.outbox_oldest = Gauge("placematch_outbox_oldest_age_seconds", "Age of the oldest unpublished event "
                                   "(0 when the outbox is empty): the relay's lag.", registry=r)
        self.events_consumed = Counter("placematch_events_consumed_total", "Events a consumer took in, by result "
                                       "(handled, duplicate).", ["consumer", "topic", "result"], registry=r)
        self.processing = Histogram("placematch_consumer_processing_seconds", "Time to handle a consumed event (or "
                                    "batch) and commit it.", ["consumer"], buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("placematch_consumer_lag", "Events on a topic partition the consumer has not "
                                  "committed yet (end offset - committed offset).", ["consumer", "topic", "partition"],
                                  registry=r)
        self.dead_lettered = Counter("placematch_dead_lettered_total", "Events a consumer gave up on and sent to "
                                     "<topic>.dlq.", ["consumer", "topic"], registry=r)
        self.scrape_errors = Counter("placematch_metrics_refresh_errors_total", "Scrape-time reads (outbox, lag) "
                                     "that failed.", ["what"], registry=r)


def for_service(service: str) -> ServiceMetrics:
    found = _services.get(service)
    if found is None:
        found = _services[service] = ServiceMetrics(service)
    return found


# --------------------------------------------------------------------------- HTTP


def route_of(scope: Scope, router: Any = None) -> str:
    """The route template (`/referrals/{referral_id}`) a request matched — or, refused before routing
    (413, 429, strict JSON's 422), would have matched; `<unmatched>` otherwise."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        router = router or scope.get("router") or getattr(scope.get("app"), "router", None)
        path = _template(getattr(router, "routes", ()), scope, "")
    return path or UNMATCHED


def _template(routes: Any, scope: Scope, prefix: str) -> str | None:
    """Search the routes, descending into included routers (FastAPI wraps them; their prefix is
    in their include context)."""
    for candidate in routes:
        inner = getattr(candidate, "original_router", None)
        if inner is not None:
            context = getattr(candidate, "include_context", None)
            found = _template(inner.routes, scope, prefix + (getattr(context, "prefix", "") or ""))
            if found:
                return found
            continue
        if not hasattr(candidate, "path"):
            continue
        if prefix and not str(scope.get("path", "")).startswith(prefix):
            continue
        probe = {**scope, "path": str(scope.get("path", ""))[len(prefix):]} if prefix else scope
        match, _ = candidate.matches(probe)
        if match is Match.FULL:
            return prefix + candidate.path
    return None


class MetricsMiddleware:
    """Counts every answered request by method, route template and status, with its latency;
    outermost, so the answers of the body cap, rate limits and strict JSON count too."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, router: Any = None) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route, method = route_of(scope, self.router), scope["method"]
            if route != "/metrics":
                self.metrics.http_requests.labels(method, route, str(status["code"])).inc()
                self.metrics.http_latency.labels(method, route).observe(time.perf_counter() - started)


# --------------------------------------------------------------------------- stores, relay, consumers


def instrument_store(store: Any, metrics: ServiceMetrics) -> None:
    """Count the events `store.append_many` appends, by type, when their transaction commits (wrapping
    the instance's method)."""
    inner = store.append_many

    async def append_many(conn: Any, batches: Any, **kwargs: Any) -> Any:
        recorded = await inner(conn, batches, **kwargs)
        types = [envelope.type for envelope in recorded]

        def count() -> None:  # once committed: a transaction retried after a conflict counts once
            for type_ in types:
                metrics.events_appended.labels(type_).inc()

        after_commit(conn, count)
        return recorded

    store.append_many = append_many


def published(metrics: ServiceMetrics | None, rows: Sequence[Any]) -> None:
    if metrics is not None:
        for row in rows:
            metrics.events_published.labels(row.topic).inc()


def consumed(metrics: ServiceMetrics | None, consumer: str, topic: str, *, handled: int, duplicates: int,
             seconds: float) -> None:
    if metrics is None:
        return
    if handled:
        metrics.events_consumed.labels(consumer, topic, "handled").inc(handled)
    if duplicates:
        metrics.events_consumed.labels(consumer, topic, "duplicate").inc(duplicates)
    metrics.processing.labels(consumer).observe(seconds)


def dead_lettered(metrics: ServiceMetrics | None, consumer: str, topic: str) -> None:
    if metrics is not None:
        metrics.dead_lettered.labels(consumer, topic).inc()


# --------------------------------------------------------------------------- read on scrape


async def outbox_state(db: Any) -> tuple[int, float]:
    """(rows in the outbox, age in seconds of the oldest one's event)."""
    from sqlalchemy import func, select

    from shared.events import loads
    from shared.schema import events, outbox
    from shared.vocabulary import parse_instant

    async with db.read() as conn:
        count, first = (await conn.execute(select(func.count(), func.min(outbox.c.position)))).one()
        if not count:
            return 0, 0.0
        when = (await conn.execute(select(events.c.time).where(events.c.position == first))).scalar()
        if when is None:  # an outbox row whose event is elsewhere: read its payload
            payload = (await conn.execute(select(outbox.c.payload).where(outbox.c.position == first))).scalar()
            when = loads(payload).get("time") if payload else None
    age = time.time() - parse_instant(when).timestamp() if when else 0.0
    return int(count), max(0.0, age)


async def consumer_lag(consumer: Any) -> list[tuple[str, int, int]]:
    """(topic, partition, lag) of one running consumer, from its bus: Kafka's committed vs end
    offsets of the partitions assigned to it; the local bus's log beyond the group's offset."""
    subscription = getattr(consumer, "subscription", None)
    if subscription is None:
        return []
    kafka = getattr(subscription, "_consumer", None)
    if kafka is not None:
        from aiokafka import TopicPartition

        assigned = sorted(kafka.assignment(), key=lambda tp: (tp.topic, tp.partition))
        if not assigned:
            return []
        ends = await kafka.end_offsets(assigned)
        out = []
        for tp in assigned:
            committed = await kafka.committed(TopicPartition(tp.topic, tp.partition))
            out.append((tp.topic, tp.partition, max(0, ends[tp] - (committed or 0))))
        return out
    return await _local_lag(subscription)


async def _local_lag(subscription: Any) -> list[tuple[str, int, int]]:
    from sqlalchemy import func, select

    from shared.bus import _log, _offsets

    db = subscription.bus.db
    if db is None:
        return []
    async with db.read() as conn:
        committed = dict((await conn.execute(select(_offsets.c.topic, _offsets.c.offset)
                                             .where(_offsets.c.group == subscription.group))).all())
        out = []
        for topic in subscription.topics:
            behind = (await conn.execute(select(func.count()).where(
                _log.c.topic == topic, _log.c.offset > committed.get(topic, 0)))).scalar_one()
            out.append((topic, 0, int(behind)))
    return out


async def refresh(runtime: Any) -> None:
    """Read what is measured on scrape: outbox backlog and age, consumer lag. A failing read is
    counted and leaves the last values in place; it never fails the scrape."""
    metrics: ServiceMetrics = runtime.metrics

    async def guarded(what: str, read: Callable[[], Awaitable[None]]) -> None:
        try:
            async with asyncio.timeout(5):
                await read()
        except Exception:  # noqa: BLE001 - a scrape shows the rest
            metrics.scrape_errors.labels(what).inc()

    async def outbox() -> None:
        count, age = await outbox_state(runtime.db)
        metrics.outbox_backlog.set(count)
        metrics.outbox_oldest.set(age)

    async def lag() -> None:
        for consumer in runtime.consumers:
            for topic, partition, behind in await consumer_lag(consumer):
                metrics.consumer_lag.labels(consumer.name, topic, str(partition)).set(behind)

    await guarded("outbox", outbox)
    await guarded("consumer_lag", lag)


def metrics_router() -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        runtime = request.app.state.runtime
        await refresh(runtime)
        return Response(generate_latest(registry_for(runtime.name)), media_type=CONTENT_TYPE_LATEST)

    return router
