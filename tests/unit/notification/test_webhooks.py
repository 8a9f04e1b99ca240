"""One webhook attempt over a real socket: signing, outcome classification, SSRF re-check."""
from __future__ import annotations

from datetime import timedelta

import httpx

from services.notification.retries import AttemptResult
from services.notification.subscriptions import new_signing_secret
from services.notification.webhooks import send_webhook
from tests.support.notification import WebhookReceiver, run_receiver

BODY = '{"type":"referral.invited","timestamp":"2026-06-01T09:00:00Z","data":{}}'


async def attempt(receiver: WebhookReceiver, *, allow_private: bool = True, url: str | None = None):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as client:
        return await send_webhook(client, url=url or receiver.url, body=BODY, message_id="msg_1",
                                  secrets=[receiver.secret or new_signing_secret()], allow_private=allow_private,
                                  timeout_seconds=2.0)


async def test_accepted_attempt_is_verified_and_timed() -> None:
    async with run_receiver(WebhookReceiver(secret=new_signing_secret())) as receiver:
        outcome = await attempt(receiver)
    assert outcome.result is AttemptResult.SUCCEEDED and outcome.status_code == 200
    assert receiver.requests[0].verified and outcome.latency_ms >= 0 and outcome.error is None


async def test_retry_after_is_read_from_a_429() -> None:
    async with run_receiver(WebhookReceiver(secret=new_signing_secret())) as receiver:
        receiver.answer((429, {"Retry-After": "30"}))
        outcome = await attempt(receiver)
    assert outcome.result is AttemptResult.RETRYABLE and outcome.retry_after == timedelta(seconds=30)


async def test_redirects_are_not_followed() -> None:
    async with run_receiver(WebhookReceiver(secret=new_signing_secret())) as receiver:
        receiver.answer((307, {"Location": "http://169.254.169.254/"}))
        outcome = await attempt(receiver)
    assert outcome.result is AttemptResult.REJECTED and outcome.status_code == 307
    assert len(receiver.requests) == 1


async def test_connection_refused_is_retryable() -> None:
    async with run_receiver(WebhookReceiver()) as receiver:
        url = receiver.url
    outcome = await attempt(WebhookReceiver(), url=url)
    assert outcome.result is AttemptResult.RETRYABLE and outcome.status_code is None and outcome.error


async def test_private_target_is_refused_before_connecting_unless_allowed() -> None:
    async with run_receiver(WebhookReceiver(secret=new_signing_secret())) as receiver:
        outcome = await attempt(receiver, allow_private=False,
                                url=receiver.url.replace("127.0.0.1", "localhost"))
    assert outcome.result is AttemptResult.REJECTED and "non-public" in (outcome.error or "")
    assert receiver.requests == []


async def test_a_checked_address_is_the_one_connected_to(monkeypatch) -> None:
    """DNS rebinding: the request goes to the address that passed the check, under the original
    Host, so a second lookup cannot send it elsewhere. (`hooks.example` has no DNS at all here:
    the request can only arrive if it was sent to the checked address.)"""
    import http.server
    import threading

    from services.notification import webhooks as module

    seen: list[str] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            seen.append(self.headers["host"])
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    async def fake_resolve(host: str, _port: int) -> list[str]:
        assert host == "hooks.example"
        return ["127.0.0.1"]

    monkeypatch.setattr(module, "resolve", fake_resolve)
    monkeypatch.setattr(module, "check_resolved_addresses", lambda *args, **kwargs: None)
    try:
        async with httpx.AsyncClient() as client:
            outcome = await module.send_webhook(
                client, url=f"http://hooks.example:{port}/hooks", body="{}", message_id="msg_1",
                secrets=["whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], allow_private=False, timeout_seconds=5)
    finally:
        server.shutdown()
    assert outcome.status_code == 204
    assert seen == [f"hooks.example:{port}"]
