"""Tracing with OpenTelemetry: one trace from an HTTP request through every event it causes.

Off by default: until `configure` finds `PLACEMATCH_OTLP_ENDPOINT` (or the standard
`OTEL_EXPORTER_OTLP_ENDPOINT`), or a test hands it an exporter (`use_exporter`), every helper
here returns at once and the envelopes carry no trace context.

When on, each service has its own `TracerProvider` (resource `service.name=placematch-<service>`,
so in the embedded run the four services stay apart in one process) and spans are made for each
HTTP request (`HTTP <method> <route template>`), each append (`append <types>`), each publish by
the relay (`publish <topic>`), each consumed event (`consume <topic>`) and each webhook delivery
(`webhook <type>`). The context travels in the CloudEvents distributed-tracing extension: an event
appended inside a span carries `traceparent` (and `tracestate`) attributes, the relay publishes
them with the event, a consumer continues that trace, and a webhook request carries a
`traceparent` header (W3C Trace Context).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_PROPAGATOR = TraceContextTextMapPropagator()
_providers: dict[str, Any] = {}
_exporters: list[Any] = []
"""Span exporters every service's provider sends to (OTLP from the settings, or a test's)."""
_enabled = False


def enabled() -> bool:
    return _enabled


def endpoint_of(settings: Any) -> str | None:
    return getattr(settings, "otlp_endpoint", None) or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None


def configure(settings: Any) -> None:
    """Turn tracing on when an OTLP endpoint is configured (once per process; later calls no-ops)."""
    global _enabled
    endpoint = endpoint_of(settings)
    if endpoint is None or _enabled:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    base = endpoint.rstrip("/")
    traces = base if base.endswith("/v1/traces") else f"{base}/v1/traces"
    _exporters.append(("batch", OTLPSpanExporter(endpoint=traces)))
    _enabled = True


def use_exporter(exporter: Any) -> None:
    """Send every service's spans to `exporter` as they end (tests: an `InMemorySpanExporter`)."""
    global _enabled
    _exporters.append(("simple", exporter))
    for provider in _providers.values():
        _add_processor(provider, "simple", exporter)
    _enabled = True


def flush(timeout_millis: int = 10_000) -> None:
    """Send every span ended so far (e.g. before a command exits)."""
    for provider in _providers.values():
        provider.force_flush(timeout_millis)


def reset() -> None:
    """Back to off (tests): providers are shut down and forgotten."""
    global _enabled
    for provider in _providers.values():
        with contextlib.suppress(Exception):
            provider.shutdown()
    _providers.clear()
    _exporters.clear()
    _enabled = False


def _add_processor(provider: Any, kind: str, exporter: Any) -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider.add_span_processor(SimpleSpanProcessor(exporter) if kind == "simple" else BatchSpanProcessor(exporter))


def tracer(service: str) -> trace.Tracer:
    """The tracer of `service` (a no-op one while tracing is off)."""
    if not _enabled:
        return trace.NoOpTracer()
    provider = _providers.get(service)
    if provider is None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider(resource=Resource.create({"service.name": f"placematch-{service}"}))
        for kind, exporter in _exporters:
            _add_processor(provider, kind, exporter)
        _providers[service] = provider
    return provider.get_tracer("placematch")


def service_of_source(source: str) -> str:
    return source.rpartition("/")[2] or source


# --------------------------------------------------------------------------- context on the wire


def current_traceparent() -> str | None:
    """`traceparent` of the span in progress, for an event created now (None when off or outside a span)."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def current_tracestate() -> str | None:
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("tracestate") or None


def context_of(traceparent: str | None, tracestate: str | None = None) -> otel_context.Context | None:
    """The remote parent a `traceparent` (and `tracestate`) names; None when absent or malformed."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent, **({"tracestate": tracestate} if tracestate else {})}
    extracted = _PROPAGATOR.extract(carrier)
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add `traceparent` / `tracestate` of the current span to outgoing HTTP headers (no-op when off)."""
    if _enabled:
        _PROPAGATOR.inject(headers)
    return headers


async def httpx_request_hook(request: Any) -> None:
    """httpx event hook: every request the client sends carries the current trace context."""
    if _enabled:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        for name, value in carrier.items():
            request.headers[name] = value


# --------------------------------------------------------------------------- spans


@contextlib.contextmanager
def span(service: str, name: str, *, kind: SpanKind = SpanKind.INTERNAL, parent: otel_context.Context | None = None,
         attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A span of `service` around the block (nothing at all while tracing is off); an exception
    leaving the block marks it as an error."""
    if not _enabled:
        yield None
        return
    with tracer(service).start_as_current_span(name, context=parent, kind=kind,
                                               attributes=dict(attributes or {})) as current:
        yield current


def consuming(service: str, consumer: str, envelope: Any, topic: str | None = None) -> Any:
    """The span of one consumed event, continuing the trace its `traceparent` names."""
    if not _enabled:
        return contextlib.nullcontext()
    parent = context_of(getattr(envelope, "traceparent", None), getattr(envelope, "tracestate", None))
    return span(service, f"consume {topic or envelope.type}", kind=SpanKind.CONSUMER, parent=parent, attributes={
        "messaging.operation": "process", "messaging.destination.name": topic or "",
        "messaging.consumer.group.name": consumer, "cloudevents.event_type": envelope.type,
        "cloudevents.event_id": envelope.id})


@contextlib.contextmanager
def publishing(service: str, rows: Any) -> Iterator[None]:
    """One PRODUCER span per published outbox row, child of the context its event was created in."""
    if not _enabled:
        yield
        return
    import orjson

    spans = []
    for row in rows:
        try:
            doc = orjson.loads(row.payload)
        except orjson.JSONDecodeError:
            doc = {}
        parent = context_of(doc.get("traceparent"), doc.get("tracestate"))
        spans.append(tracer(service).start_span(f"publish {row.topic}", context=parent, kind=SpanKind.PRODUCER,
                                                attributes={"messaging.destination.name": row.topic,
                                                            "cloudevents.event_type": str(doc.get("type", "")),
                                                            "cloudevents.event_id": str(doc.get("id", ""))}))
    try:
        yield
    except BaseException as error:
        for s in spans:
            s.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        for s in spans:
            s.end()


def instrument_store(store: Any, service: str) -> None:
    """Wrap `store.append_many` of a service's live store in an `append` span (events appended
    inside it carry that span as their `traceparent`). The store class itself is untouched."""
    inner = store.append_many

    async def append_many(conn: Any, batches: Any, **kwargs: Any) -> Any:
        if not _enabled:
            return await inner(conn, batches, **kwargs)
        types = sorted({e.type for b in batches for e in b[2]})
        with span(service, f"append {','.join(types)[:120]}", attributes={"placematch.events": sum(
                len(b[2]) for b in batches)}):
            return await inner(conn, batches, **kwargs)

    store.append_many = append_many


class TracingMiddleware:
    """A SERVER span per HTTP request, named by the route template (never the raw path), continuing
    a `traceparent` the caller sent."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _enabled:
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []
                   if k in (b"traceparent", b"tracestate")}
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        status = {"code": 500}

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        with tracer(self.service).start_as_current_span(
                f"HTTP {scope['method']}", context=parent, kind=SpanKind.SERVER,
                attributes={"http.request.method": scope["method"]}) as current:
            try:
                await self.app(scope, receive, send_status)
            finally:
                from shared.metrics import route_of

                route = route_of(scope)
                current.update_name(f"HTTP {scope['method']} {route}")
                current.set_attribute("http.route", route)
                current.set_attribute("http.response.status_code", status["code"])
                if status["code"] >= 500:
                    current.set_status(Status(StatusCode.ERROR))
