"""Issue 15: a client generated from each service's OpenAPI document, by a generator nobody here
wrote (`openapi-python-client`), runs the README's tour against `placematch up`.

The generator reads the document each running service serves (`/openapi.json`); the generated
packages are imported and used as an integrator would: typed request models (`ReferralIn`,
`OfferIn`, `AwardIn`), the bearer token through `AuthenticatedClient`, and problem answers parsed as
the shared `Problem` model.
"""
from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services import SERVICES
from shared.auth import mint_token
from shared.settings import Settings
from tests.e2e.support import REFERRAL, RIVERSIDE, Stack
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e
GENERATOR = Path(sys.executable).with_name("openapi-python-client")


def generate(document: Path, package: str, into: Path) -> None:
    done = subprocess.run([str(GENERATOR), "generate", "--path", str(document), "--output-path",
                           str(into / package), "--meta", "none"], capture_output=True, text=True, timeout=120,
                          env={"PATH": str(GENERATOR.parent)})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Warning" not in output and "Unable to" not in output, output  # every schema understood


@contextlib.contextmanager
def generated_clients(stack: Stack, tmp_path: Path) -> Iterator[dict[str, Any]]:
    out = tmp_path / "generated"
    out.mkdir()
    for service in SERVICES:
        document = tmp_path / f"{service}.json"
        document.write_bytes(httpx.get(f"{stack.url(service)}/openapi.json", timeout=10).content)
        generate(document, f"pm_{service}_client", out)
    sys.path.insert(0, str(out))
    try:
        yield {service: importlib.import_module(f"pm_{service}_client") for service in SERVICES}
    finally:
        sys.path.remove(str(out))
        for name in list(sys.modules):
            if name.startswith(tuple(f"pm_{s}_client" for s in SERVICES)):
                del sys.modules[name]


def _op(package: Any, tag: str, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.api.{tag}.{name}")


def _field(parsed: Any, name: str) -> Any:
    """A field of a parsed answer: an attribute of a typed model (an enum as its value), or the item
    of an untyped one (a model whose schema is an open object)."""
    if hasattr(parsed, "additional_properties") and name in parsed.additional_properties:
        return parsed[name]
    value = getattr(parsed, name)
    return getattr(value, "value", value)


def _model(package: Any, name: str) -> Any:
    return getattr(importlib.import_module(f"{package.__name__}.models"), name)


async def test_readme_tour_through_generated_clients(stack: Stack, tmp_path: Path) -> None:
    await stack.start()
    with generated_clients(stack, tmp_path) as clients:
        await tour(stack, clients["enrolment"], clients["referral"], clients["matching"])


async def tour(stack: Stack, enrolment: Any, referral: Any, matching: Any) -> None:

    def authed(package: Any, service: str, role: str, tenant: str) -> Any:
        return package.AuthenticatedClient(base_url=stack.url(service), token=mint_token(Settings(), role, tenant),
                                           timeout=httpx.Timeout(10))

    # 1. apply (open), inspect, approve
    applied = await _op(enrolment, "providers", "apply_to_join").asyncio_detailed(
        client=enrolment.Client(base_url=stack.url("enrolment")),
        body=_model(enrolment, "ApplicationIn").from_dict(RIVERSIDE))
    assert applied.status_code == 201, applied.content
    assert type(applied.parsed).__name__ == "ProviderView"  # the typed model of the document
    provider_id = _field(applied.parsed, "id")
    commissioner = authed(enrolment, "enrolment", "commissioner", "region")
    inspected = await _op(enrolment, "providers", "record_inspection").asyncio_detailed(
        provider_id, client=commissioner, body=_model(enrolment, "InspectionIn").from_dict(
            {"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"}))
    assert inspected.status_code == 200, inspected.content
    approved = await _op(enrolment, "providers", "approve_provider").asyncio_detailed(provider_id, client=commissioner)
    assert approved.status_code == 200 and _field(approved.parsed, "status") == "approved", approved.content

    # a problem comes back as the shared Problem model
    refused = await _op(enrolment, "providers", "approve_provider").asyncio_detailed(
        provider_id, client=authed(enrolment, "enrolment", "borough", "croydon"))
    assert refused.status_code == 403
    assert isinstance(refused.parsed, _model(enrolment, "Problem")) and refused.parsed.field == "Authorization"

    # 2. raise a referral; matching invites the school
    croydon = authed(referral, "referral", "borough", "croydon")
    raised = await _op(referral, "referrals", "raise_referral").asyncio_detailed(
        client=croydon, body=_model(referral, "ReferralIn").from_dict(REFERRAL))
    assert raised.status_code == 201, raised.content
    referral_id = _field(raised.parsed, "id")
    croydon_matching = authed(matching, "matching", "borough", "croydon")

    async def invited() -> bool:
        listing = _op(matching, "matching", "list_eligible_providers")
        answer = await listing.asyncio_detailed(referral_id, client=croydon_matching)
        return answer.status_code == 200 and provider_id in [p["provider_id"] for p in _field(answer.parsed, "providers")]

    await wait_for(invited, timeout=60, message="the school to be invited")

    # 3. the school offers (409 with Retry-After until its invitation reaches the referral service)
    school = authed(referral, "referral", "provider", provider_id)
    offer_body = _model(referral, "OfferIn").from_dict(
        {"weekly_fee_pence": 425000, "start_date": "2027-09-01", "notes": "ASD unit"})

    async def offered() -> Any:
        answer = await _op(referral, "referrals", "submit_offer").asyncio_detailed(referral_id, client=school,
                                                                                    body=offer_body)
        if answer.status_code == 409:
            assert "retry-after" in answer.headers
            return None
        assert answer.status_code == 201, answer.content
        return answer.parsed

    offer_id = _field(await wait_for(offered, timeout=60, message="the offer"), "id")

    # 4. the shortlist ranks it first; the borough awards it
    async def shortlisted() -> Any:
        answer = await _op(matching, "matching", "get_shortlist").asyncio_detailed(referral_id, client=croydon_matching)
        return answer.parsed if answer.status_code == 200 and _field(answer.parsed, "entries") else None

    shortlist = await wait_for(shortlisted, timeout=60, message="a shortlist")
    assert _field(shortlist, "entries")[0]["offer_id"] == offer_id

    async def awarded() -> Any:
        answer = await _op(referral, "referrals", "award_offer").asyncio_detailed(
            referral_id, client=croydon, body=_model(referral, "AwardIn").from_dict({"offer_id": offer_id}))
        if answer.status_code == 422 and "justification" in answer.content.decode():
            return None  # the shortlist has not reached the referral service yet
        assert answer.status_code == 200, answer.content
        return answer.parsed

    await wait_for(awarded, timeout=60, message="the award")
    seen = await _op(referral, "referrals", "get_referral").asyncio_detailed(referral_id, client=croydon)
    assert seen.status_code == 200 and _field(seen.parsed, "status") == "awarded"
