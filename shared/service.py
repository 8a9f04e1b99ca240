"""The runtime every service shares: database, event store, bus, outbox relay, consumers.

A service's `app.py` builds a `ServiceRuntime` (what it publishes, what it consumes, background
tasks) and hands it with its routers to `create_service_app`.
"""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from shared import asyncapi, metrics, tracing
from shared.aggregate import Aggregate
from shared.bus import Bus, make_bus
from shared.commands import Decide, Project, in_transaction, run_command
from shared.consumers import EventConsumer, Handler
from shared.db import Database
from shared.events import Envelope
from shared.idempotency import AnswerPolicy, IdempotencyMiddleware
from shared.limits import install_limits
from shared.logs import get_logger
from shared.migrations import upgrade
from shared.openapi import JSONContentMiddleware, install_contract, operation_id
from shared.preconditions import PreconditionMiddleware
from shared.relay import OutboxRelay
from shared.settings import Settings
from shared.store import EventStore
from shared.web import CorrelationMiddleware, StrictJSONMiddleware, health_router, install_problem_handlers

log = get_logger("placematch.service")
A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")


@dataclass(frozen=True)
class ConsumerSpec:
    """Consume `topics` (short names: "enrolment" -> placematch.enrolment) with `handler`."""

    topics: Sequence[str]
    handler: Handler
    name: str = "main"
    batch_size: int = 1
    """Events handled per transaction when there is a backlog (see `EventConsumer`)."""
    on_commit: Callable[[], None] | None = None
    """Runs after each transaction that handled events commits (e.g. to wake a dispatcher)."""


Task = Callable[["ServiceRuntime"], Awaitable[None]]
Consumers = Callable[["ServiceRuntime"], Sequence[ConsumerSpec]]
"""A service's `handlers.consumers(runtime)`: its consumers, built on the runtime (store, topics, settings)."""


class ServiceRuntime:
    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        publishes: Sequence[str] = (),
        consumes: Consumers | Sequence[ConsumerSpec] = (),
        tasks: Sequence[Task] = (),
        bus: Bus | None = None,
        migrate: Callable[[Database], Awaitable[None]] | None = None,
        store_class: type[EventStore] = EventStore,
        answers: AnswerPolicy | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.instance_id = str(uuid.uuid4())
        """This process's identity, e.g. for orphaned Idempotency-Key claims."""
        self.db = Database(settings.database_url_for(name))
        self.store = store_class(self.db, f"placematch/{name}")
        self.metrics = metrics.for_service(name)
        """This service's Prometheus metrics (`shared.metrics`), served at /metrics."""
        tracing.configure(settings)
        metrics.instrument_store(self.store, self.metrics)
        tracing.instrument_store(self.store, name)
        self.answers = answers or AnswerPolicy()
        """How the answers of keyed requests are kept for their retries (`shared.idempotency`)."""
        self.bus: Bus = bus or make_bus(settings)
        self.relay = OutboxRelay(self.db, self.bus, poll_seconds=settings.relay_poll_seconds, service=name,
                                 metrics=self.metrics)
        self.publishes = [settings.topic(t) for t in publishes]
        self.tasks = list(tasks)
        self.consumers: list[EventConsumer] = []
        for spec in consumes(self) if callable(consumes) else consumes:
            self.consume(spec.topics, spec.handler, spec.name, batch_size=spec.batch_size, on_commit=spec.on_commit)
        self._migrate = migrate or (lambda db: upgrade(db, name))
        self._running: list[asyncio.Task[None]] = []

    def topic(self, short: str) -> str:
        return self.settings.topic(short)

    async def command(self, cls: type[A], stream_id: str, decide: Decide[A], *, topic: str | None,
                      project: Project[A] | None = None, journal: str | None = None,
                      project_unchanged: bool = False, created: str | None = None) -> tuple[A, list[Envelope]]:
        """Run a command on one aggregate in one transaction (see `shared.commands.run_command`);
        `topic` is the short name ("referral" -> placematch.referral), None to publish nothing."""
        return await run_command(self.db, self.store, cls, stream_id, decide,
                                 topic=None if topic is None else self.topic(topic), project=project,
                                 journal=journal, project_unchanged=project_unchanged, created=created)

    async def transaction(self, work: Callable[[AsyncConnection], Awaitable[T]], *,
                          lock_journal: bool = False) -> T:
        """Run `work(conn)` in one transaction, again from the start on a concurrent append: for a
        command that loads and appends to several streams itself."""
        return await in_transaction(self.db, work, lock_journal=lock_journal)

    def consume(self, topics: Sequence[str], handler: Handler, name: str = "main", *, batch_size: int = 1,
                on_commit: Callable[[], None] | None = None) -> None:
        """Add a consumer before `start`; for handlers built on this runtime's own store.
        `batch_size` and `on_commit`: see `EventConsumer`."""
        self.consumers.append(EventConsumer(
            name=f"{self.settings.topic_prefix}{self.name}-{name}", db=self.db, bus=self.bus,
            topics=[self.topic(t) for t in topics], handler=handler,
            max_attempts=self.settings.consumer_max_attempts,
            retry_base_seconds=self.settings.consumer_retry_base_seconds, batch_size=batch_size,
            on_commit=on_commit, service=self.name, metrics=self.metrics,
        ))

    async def start(self) -> None:
        await self._migrate(self.db)
        topics = [*self.publishes, *(t for c in self.consumers for t in c.topics)]
        topics += [f"{t}.dlq" for t in topics]
        await self.bus.start(topics)
        self._running.append(asyncio.create_task(self.relay.run(), name=f"{self.name}-relay"))
        for consumer in self.consumers:
            self._running.append(asyncio.create_task(consumer.run(), name=consumer.name))
        for task in self.tasks:
            self._running.append(asyncio.create_task(self._supervised(task), name=f"{self.name}-task"))
        log.info("service started", service=self.name, database=self.db.dialect,
                 bus=type(self.bus).__name__)

    async def _supervised(self, task: Task) -> None:
        while True:
            try:
                await task(self)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task failed; restarting in 1s", service=self.name)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        relay_task = self._running[0] if self._running else None
        if relay_task is not None:
            # cancelling mid-batch would publish that batch again at the next start
            self.relay.request_stop()
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(relay_task), 5)
        for task in self._running:
            task.cancel()
        pending = (await asyncio.wait(self._running, timeout=10))[1] if self._running else set()
        if pending:
            log.warning("tasks did not stop within 10 s of cancellation; going on without them",
                        service=self.name, tasks=[t.get_name() for t in pending])
        self._running.clear()
        with contextlib.suppress(Exception):
            await self.relay.drain(timeout=5)
        await self.bus.stop()
        await self.db.dispose()

    async def consumers_ready(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            for consumer in self.consumers:
                await consumer.ready.wait()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()


def create_service_app(runtime: ServiceRuntime, routers: Sequence[APIRouter], *, title: str,
                       description: str = "") -> FastAPI:
    app = FastAPI(title=title, description=description, version="0.1.0", lifespan=runtime.lifespan,
                  generate_unique_id_function=operation_id)
    app.state.runtime = runtime
    app.state.settings = runtime.settings
    install_problem_handlers(app)
    app.state.etags = set()  # filled by install_contract from the services' schemas.py (ETAGS)
    app.add_middleware(PreconditionMiddleware, routes=app.state.etags)  # inside Idempotency-Key: replays keep ETag
    app.add_middleware(IdempotencyMiddleware, fastapi_app=app)
    app.add_middleware(StrictJSONMiddleware)  # a body it refuses never claims an Idempotency-Key
    install_limits(app, runtime.settings, runtime.db)  # in front of Idempotency-Key, which reads whole bodies
    app.add_middleware(JSONContentMiddleware)  # a body that is not JSON is 415 before anything reads it
    app.add_middleware(CorrelationMiddleware)
    app.add_middleware(tracing.TracingMiddleware, service=runtime.name)
    # outermost: every answer counts
    app.add_middleware(metrics.MetricsMiddleware, metrics=runtime.metrics, router=app.router)
    app.include_router(health_router())
    app.include_router(metrics.metrics_router())
    app.include_router(asyncapi.contracts_router())  # issue 15: /asyncapi.yaml and /schemas/...
    for router in routers:
        app.include_router(router)
    install_contract(app)
    return app
