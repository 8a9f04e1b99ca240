"""Metrics and traces of the embedded run: each service's /metrics, and one trace of one referral
from `POST /referrals` to the webhook a real local HTTP server receives."""
from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.notification import WebhookReceiver, run_receiver
from shared import tracing
from tests.helpers import wait_for
from tests.ops_stack import (
    approved_provider,
    embedded_settings,
    embedded_stack,
    raise_referral,
    sample,
    settled,
    subscribe,
)


async def test_each_service_shows_its_own_metrics_by_route_template_without_ids(tmp_path: Path) -> None:
    async with run_receiver(WebhookReceiver()) as receiver, embedded_stack(embedded_settings(tmp_path)) as stack:
        provider_id = await approved_provider(stack)
        receiver.secret = await subscribe(stack, provider_id, receiver.url)
        await settled(stack)
        before = {name: (await client.get("/metrics")).text for name, client in stack.clients.items()}
        referral_id = await raise_referral(stack)
        await wait_for(lambda: receiver.accepted, timeout=30, message="the invitation webhook")
        assert (await stack.clients["referral"].get(f"/referrals/{referral_id}",
                                                    headers=stack.headers("borough", "croydon"))).status_code == 200
        assert (await stack.clients["referral"].get("/no/such/path")).status_code == 404
        refused = await stack.clients["referral"].post("/referrals", content=b'{"a": 1, "a": 2}',
                                                       headers={**stack.headers("borough", "croydon"),
                                                                "content-type": "application/json"})
        assert refused.status_code == 422
        await settled(stack)

        async def page(name: str) -> str:
            response = await stack.clients[name].get("/metrics")
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
            return response.text

        referral, matching, notification = await page("referral"), await page("matching"), await page("notification")

    def grew(name: str, text: str, metric: str, by: float = 1, **labels: str) -> None:
        old = sample(before[name], metric, **labels) or 0
        assert (sample(text, metric, **labels) or 0) - old >= by, (metric, labels)

    grew("referral", referral, "placematch_http_requests_total", method="POST", route="/referrals", status="201")
    grew("referral", referral, "placematch_http_requests_total", method="GET", route="/referrals/{referral_id}",
         status="200")
    grew("referral", referral, "placematch_http_requests_total", method="GET", route="<unmatched>", status="404")
    grew("referral", referral, "placematch_http_requests_total", method="POST", route="/referrals", status="422")
    grew("referral", referral, "placematch_http_request_duration_seconds_count", method="POST", route="/referrals")
    grew("referral", referral, "placematch_events_appended_total", type="referral-raised")
    grew("referral", referral, "placematch_events_published_total", topic="placematch.referral")
    grew("matching", matching, "placematch_events_consumed_total", consumer="matching-main",
         topic="placematch.referral", result="handled")
    grew("matching", matching, "placematch_consumer_processing_seconds_count", consumer="matching-main")
    grew("notification", notification, "placematch_webhook_attempts_total", outcome="succeeded")
    grew("notification", notification, "placematch_webhook_deliveries_total", outcome="delivered")
    grew("notification", notification, "placematch_webhook_attempt_duration_seconds_count")
    grew("notification", notification, "placematch_referral_raised_to_first_webhook_seconds_count")
    assert sample(matching, "placematch_consumer_lag", consumer="matching-main", topic="placematch.referral",
                  partition="0") == 0
    assert sample(referral, "placematch_outbox_backlog") == 0
    assert sample(referral, "placematch_outbox_oldest_age_seconds") == 0
    # each port shows its own service: no webhook series on referral's page, none of referral's routes on matching's
    assert "placematch_webhook_attempts_total" not in referral
    assert 'route="/referrals"' not in matching.replace('route="/referrals/', "")
    for text in (referral, matching, notification):
        assert referral_id not in text and provider_id not in text and "CR-2026-0042" not in text


async def test_one_trace_from_the_post_to_the_webhook_request(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    tracing.use_exporter(exporter)
    try:
        async with run_receiver(WebhookReceiver()) as receiver, embedded_stack(embedded_settings(tmp_path)) as stack:
            provider_id = await approved_provider(stack)
            receiver.secret = await subscribe(stack, provider_id, receiver.url)
            await settled(stack)
            exporter.clear()
            await raise_referral(stack)
            [received] = await wait_for(lambda: receiver.accepted, timeout=30, message="the invitation webhook")
            await settled(stack)
    finally:
        tracing.reset()
    spans = exporter.get_finished_spans()
    [post] = [s for s in spans if s.name == "HTTP POST /referrals"]
    trace_id = post.context.trace_id
    version, sent_trace, parent_span, _flags = received.headers["traceparent"].split("-")
    assert version == "00" and int(sent_trace, 16) == trace_id
    trace = sorted((s for s in spans if s.context.trace_id == trace_id), key=lambda s: s.start_time or 0)
    by_id = {s.context.span_id: s for s in trace}
    webhook = by_id[int(parent_span, 16)]
    assert webhook.name == "webhook referral.invited"
    assert webhook.resource.attributes["service.name"] == "placematch-notification"
    names = [s.name for s in trace]
    for expected in ("HTTP POST /referrals", "append referral-raised", "publish placematch.referral",
                     "consume referral-raised", "publish placematch.notifications", "consume notification-requested",
                     "webhook referral.invited"):
        assert expected in names, (expected, names)
    assert {s.resource.attributes["service.name"] for s in trace} >= {
        "placematch-referral", "placematch-matching", "placematch-notification"}
    # every span but the request's own has its parent in the same trace: one tree from the POST to the webhook
    assert all(s.parent is not None and s.parent.span_id in by_id for s in trace if s is not post)
    # the webhook's ancestry reaches the POST
    node = webhook
    while node.parent is not None:
        node = by_id[node.parent.span_id]
    assert node is post
