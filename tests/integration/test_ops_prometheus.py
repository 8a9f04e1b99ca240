"""A real Prometheus (Debian's package) scrapes the four services of an embedded run on their own
ports; after a small load (three referrals, their invitation webhooks delivered to a real local
HTTP server) its HTTP API answers for the series the alerts and dashboards use."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.support.notification import WebhookReceiver, run_receiver
from tests.helpers import wait_for
from tests.ops_stack import approved_provider, embedded_settings, embedded_stack, raise_referral, subscribe


async def test_prometheus_scrapes_every_service_after_a_small_load(tmp_path: Path, prometheus: Any) -> None:
    async with run_receiver(WebhookReceiver()) as receiver, \
            embedded_stack(embedded_settings(tmp_path), listen=True) as stack:
        jobs = {name: [f"127.0.0.1:{port}"] for name, port in stack.ports.items()}
        server = await asyncio.to_thread(prometheus, jobs)

        async def query(expr: str) -> list[dict[str, Any]]:
            return await asyncio.to_thread(server.query, expr)  # the services answer the scrapes meanwhile

        async def value(expr: str) -> float:
            result = await query(expr)
            return float(result[0]["value"][1]) if result else 0.0

        async def all_up() -> bool:
            return {r["metric"]["job"] for r in await query("up == 1")} == set(stack.ports)

        await wait_for(all_up, timeout=60, interval=0.5, message="every service scraped")

        provider_id = await approved_provider(stack)
        receiver.secret = await subscribe(stack, provider_id, receiver.url)
        for _ in range(3):
            await raise_referral(stack)
        await wait_for(lambda: len(receiver.accepted) >= 3, timeout=60, message="three invitation webhooks")

        async def at_least(expr: str, wanted: float) -> bool:
            return await value(expr) >= wanted

        for expr, wanted in [
            ('sum(placematch_http_requests_total{job="referral",method="POST",route="/referrals",status="201"})', 3),
            ('sum(placematch_events_appended_total{job="referral",type="referral-raised"})', 3),
            ('sum(placematch_events_consumed_total{job="matching",result="handled"})', 3),
            ('sum(placematch_webhook_deliveries_total{job="notification",outcome="delivered"})', 3),
            ('sum(placematch_referral_raised_to_first_webhook_seconds_count{job="notification"})', 3),
        ]:
            await wait_for(lambda expr=expr, wanted=wanted: at_least(expr, wanted), timeout=60, interval=0.5,
                           message=expr)
        # a latency quantile from the histogram, and lag and outbox gauges of every consumer and service
        p95 = await value('histogram_quantile(0.95, sum by (le) (placematch_http_request_duration_seconds_bucket'
                          '{job="referral",route="/referrals"}))')
        assert 0 < p95 < 30
        lag = await query("placematch_consumer_lag")
        assert {r["metric"]["job"] for r in lag} >= {"referral", "matching", "notification"}
        assert {r["metric"]["job"] for r in await query("placematch_outbox_backlog")} == set(stack.ports)
        # no series carries an id: label values are route templates, types, topics, outcomes
        series = await query('{__name__=~"placematch_.+"}')
        values = {v for r in series for k, v in r["metric"].items() if k not in ("__name__", "instance", "job")}
        assert provider_id not in values and not any(provider_id in v for v in values)
