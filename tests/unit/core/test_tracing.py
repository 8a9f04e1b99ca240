"""Tracing is off by default (no spans, no trace attributes on events) and, with an OTLP endpoint
configured, sends spans over OTLP/HTTP to it (here a real local HTTP server standing in for a collector)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import NoOpTracer

from shared import tracing
from shared.events import Envelope
from shared.settings import Settings


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's API
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, self.headers["content-type"], body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        tracing.reset()


def test_off_by_default_nothing_is_traced() -> None:
    tracing.reset()
    assert not tracing.enabled()
    tracing.configure(Settings())
    assert not tracing.enabled() and isinstance(tracing.tracer("referral"), NoOpTracer)
    with tracing.span("referral", "anything") as span:
        assert span is None
        envelope = Envelope(type="referral-raised", subject="r-1", data={}, source="placematch/referral")
    assert envelope.traceparent is None and "traceparent" not in envelope.to_dict()
    assert tracing.inject_headers({}) == {}


def test_spans_go_over_otlp_to_the_configured_endpoint(collector: tuple[str, list[tuple[str, str, bytes]]]) -> None:
    url, received = collector
    tracing.configure(Settings(otlp_endpoint=url))
    assert tracing.enabled()
    with tracing.span("referral", "HTTP POST /referrals"):
        envelope = Envelope(type="referral-raised", subject="r-1", data={}, source="placematch/referral")
        headers = tracing.inject_headers({})
    assert envelope.traceparent is not None and envelope.to_dict()["traceparent"] == headers["traceparent"]
    assert Envelope.from_json(envelope.to_json()).traceparent == envelope.traceparent
    tracing.flush()
    [(path, content_type, body)] = received
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    [resource] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
    assert service == "placematch-referral"
    [span] = [s for scope in resource.scope_spans for s in scope.spans]
    assert span.name == "HTTP POST /referrals"
    assert span.trace_id.hex() == envelope.traceparent.split("-")[1]
