"""The demo driven: enrol the region, raise and work the referrals, oversee; `run_demo` ties it together."""
from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.demo.client import HTTP_CONCURRENCY, Api, DemoError, Unexpected, WebhookReceiver, poll_until, problem_rule
from services.demo.placements import Placements
from services.demo.plan import ProviderPlan, ReferralPlan, plan_providers, plan_referrals, round_fee, weighted
from services.demo.region import (
    BOROUGHS,
    DECLINE_NOTES,
    DECLINE_REASONS,
    FEE_BANDS,
    JUSTIFICATIONS,
    OFFER_NOTES,
    WITHDRAW_REASONS,
)
from services.demo.report import COUNT_ROWS, counts_table
from shared.auth import mint_token
from shared.settings import Settings

REFERRAL_FLOWS = 24
"""Referrals being worked at once (most of a flow's time is spent waiting on events)."""


class Demo:
    def __init__(self, api: Api, seed: int, settings: Settings, progress: Progress, today: date) -> None:
        self.api = api
        self.seed = seed
        self.settings = settings
        self.progress = progress
        self.today = today
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.commissioner = mint_token(settings, "commissioner", "region")
        self.borough_tokens = {code: mint_token(settings, "borough", code) for code in BOROUGHS}
        self._provider_tokens: dict[str, str] = {}
        self.providers: list[ProviderPlan] = []
        self.by_id: dict[str, ProviderPlan] = {}
        self.standing_offers: Counter[int] = Counter()  # provider index -> offers on referrals left open
        self.receiver = WebhookReceiver()
        self.placements = Placements(api, seed, today, self.counts)

    def provider_token(self, provider_id: str) -> str:
        if provider_id not in self._provider_tokens:
            self._provider_tokens[provider_id] = mint_token(self.settings, "provider", provider_id)
        return self._provider_tokens[provider_id]

    # ---- phase 1: enrolment

    async def preflight(self, plans: list[ProviderPlan]) -> None:
        """Refuse to fill a system that already holds this seed's region (its URNs)."""
        urns = {p.urn for p in plans}
        offset = 0
        while True:
            page = await self.api.call("GET", "enrolment", "/providers", self.commissioner,
                                       params={"limit": 1000, "offset": offset})
            clash = sorted(urns & {str(item.get("urn")) for item in page["items"]})
            if clash:
                raise DemoError(f"this system already holds the demo region of seed {self.seed} (URN {clash[0]} "
                                "is enrolled): use another --seed, or start placematch with an empty --data-dir")
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return

    async def enrol(self, plans: list[ProviderPlan]) -> None:
        self.providers = plans
        task = self.progress.add_task("Enrolling providers", total=len(plans))

        async def one(plan: ProviderPlan) -> None:
            await self.enrol_one(plan)
            self.progress.advance(task)

        async with asyncio.TaskGroup() as group:
            for plan in plans:
                group.create_task(one(plan))
        self.by_id = {p.id: p for p in plans if p.id}

    async def enrol_one(self, plan: ProviderPlan) -> None:
        api, token = self.api, self.commissioner
        response = await api.send("POST", "enrolment", "/providers", None, plan.application(),
                                  key=f"provider:{plan.urn}")
        if response.status_code == 409 and problem_rule(response) == "duplicate_urn":
            raise DemoError(f"provider URN {plan.urn} is already enrolled: this system already holds the demo "
                            f"region for seed {self.seed}; use another --seed or an empty --data-dir")
        if response.status_code != 201:
            raise Unexpected("POST", "enrolment/providers", response)
        plan.id = response.json()["id"]
        self.counts["providers_applied"] += 1
        for n, inspection in enumerate(plan.inspections):
            await api.call("POST", "enrolment", f"/providers/{plan.id}/inspections", token, inspection,
                           key=f"inspection:{plan.urn}:{n}")
            self.counts["inspections"] += 1
        for n, outcomes in enumerate(plan.outcomes):
            await api.call("POST", "enrolment", f"/providers/{plan.id}/outcomes", token, outcomes,
                           key=f"outcomes:{plan.urn}:{n}")
            self.counts["outcomes_recorded"] += 1
        if plan.decision == "approve":
            await api.call("POST", "enrolment", f"/providers/{plan.id}/approve", token,
                           {"reason": "Accreditation complete: DBS, insurance, finance and safeguarding checked"},
                           key=f"approve:{plan.urn}")
            self.counts["providers_approved"] += 1
        elif plan.decision == "reject":
            await api.call("POST", "enrolment", f"/providers/{plan.id}/reject", token,
                           {"reason": plan.reject_reason}, key=f"reject:{plan.urn}")
            self.counts["providers_rejected"] += 1
        else:
            self.counts["providers_pending"] += 1

    # ---- phase 2: portals subscribe to webhooks

    async def subscribe(self, watched: list[ProviderPlan]) -> None:
        base = await self.receiver.start()
        provider_types = ["referral.invited", "shortlist.updated", "offer.accepted", "offer.not_selected",
                          "provider.suspended"]
        borough_types = ["referral.no_eligible_providers", "shortlist.updated", "referral.closed_unfilled"]
        subscribers = [(p.id, "provider", provider_types, p.email) for p in watched if p.id] + [
            (code, "borough", borough_types, f"placements@{code}.gov.example") for code in ("croydon", "lambeth")]
        for slot, (tenant, role, types, email) in enumerate(subscribers):
            token = self.provider_token(tenant) if role == "provider" else self.borough_tokens[tenant]
            created = await self.api.call("POST", "notification", "/subscriptions", token,
                                          {"url": f"{base}/hooks/{slot}", "event_types": types,
                                           "contact_email": email}, key=f"subscription:{slot}")
            self.receiver.secrets[str(slot)] = created["secret"]
            self.counts["subscriptions"] += 1

    # ---- phase 3: referrals

    async def run_referrals(self, plans: list[ReferralPlan]) -> None:
        task = self.progress.add_task("Referrals, offers and awards", total=len(plans))
        if not plans:
            return
        approved = sum(1 for p in self.providers if p.decision == "approve")
        # The first referral goes alone: once matching has evaluated it against every approved
        # provider, matching has seen every approval, and later referrals meet the full directory.
        await self.guarded(plans[0], barrier=approved)
        self.progress.advance(task)
        flows = asyncio.Semaphore(REFERRAL_FLOWS)

        async def one(plan: ReferralPlan) -> None:
            async with flows:
                await self.guarded(plan)
            self.progress.advance(task)

        await asyncio.gather(*(one(p) for p in plans[1:]))

    async def guarded(self, plan: ReferralPlan, barrier: int | None = None) -> None:
        try:
            await self.referral_flow(plan, barrier)
        except (DemoError, httpx.HTTPError) as error:
            self.counts["errors"] += 1
            self.errors.append(f"referral #{plan.index} ({plan.borough}, {plan.scenario}): {error}")

    async def invited(self, referral_id: str, token: str, barrier: int | None) -> list[str]:
        async def probe() -> list[dict[str, Any]] | None:
            response = await self.api.send("GET", "matching", f"/referrals/{referral_id}/eligible-providers", token,
                                           params={"all": "true"})
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise Unexpected("GET", f"matching/referrals/{referral_id}/eligible-providers", response)
            providers = response.json()["providers"]
            if barrier is not None and len(providers) < barrier:
                return None
            return list(providers)

        results = await poll_until(probe, f"matching to evaluate referral {referral_id}")
        return [r["provider_id"] for r in results if r.get("invited")]

    async def referral_flow(self, plan: ReferralPlan, barrier: int | None = None) -> None:
        api = self.api
        rng = random.Random(f"{self.seed}:referral:{plan.index}")
        token = self.borough_tokens[plan.borough]
        body = dict(plan.body)
        if plan.preferred is not None:
            body["preferred_provider_id"] = self.providers[plan.preferred].id
        created = await api.call("POST", "referral", "/referrals", token, body, key=f"referral:{plan.index}")
        rid = plan.id = created["id"]
        self.counts["referrals_raised"] += 1
        invited_ids = await self.invited(rid, token, barrier)
        invited = sorted((self.by_id[i] for i in invited_ids if i in self.by_id), key=lambda p: p.index)
        self.counts["invitations"] += len(invited)

        if plan.amend:
            changes: dict[str, Any] = {"outcomes": [*body["outcomes"], "Review placement at six weeks with family"]}
            if body["max_travel_km"] is not None:
                changes["max_travel_km"] = body["max_travel_km"] + 10
            await api.call("POST", "referral", f"/referrals/{rid}/amend", token, changes, key=f"amend:{plan.index}")
            self.counts["referrals_amended"] += 1

        if not invited and plan.scenario != "withdraw":
            await api.call("POST", "referral", f"/referrals/{rid}/close", token, key=f"close:{plan.index}")
            self.counts["referrals_no_eligible"] += 1
            self.counts["referrals_closed_unfilled"] += 1
            return

        if invited:
            await self.invitations_known(rid, invited[0])
        offers: dict[str, ProviderPlan] = {}
        silent: list[ProviderPlan] = []
        for provider in invited:
            roll, decline_roll, fee_roll, note_roll = rng.random(), rng.random(), rng.random(), rng.random()
            preferred = plan.preferred == provider.index
            if plan.scenario == "close":
                action = "decline" if decline_roll < 0.6 else "silent"
            elif preferred or (len(offers) < 6 and roll < 0.5):
                action = "offer"
            else:
                action = "decline" if decline_roll < 0.3 else "silent"
            if action == "offer":
                offer_id = await self.offer(plan, rid, provider, fee_roll, note_roll)
                offers[offer_id] = provider
            elif action == "decline":
                await self.decline(plan, rid, provider, rng)
            else:
                silent.append(provider)
        # Awards need an offer, and a justified award an alternative to the top one.
        wanted = (2 if plan.justify else 1) if plan.scenario in ("award", "open") else 0
        for provider in silent[:max(0, wanted - len(offers))]:
            offers[await self.offer(plan, rid, provider, rng.random(), rng.random())] = provider
        if plan.scenario in ("award", "open") and not offers:  # every invited provider declined
            await api.call("POST", "referral", f"/referrals/{rid}/close", token, key=f"close:{plan.index}")
            self.counts["referrals_closed_unfilled"] += 1
            return

        if len(offers) > 2 and rng.random() < 0.25:
            offer_id = sorted(offers, key=lambda o: offers[o].index)[-1]
            provider = offers.pop(offer_id)
            await api.call("POST", "referral", f"/referrals/{rid}/offers/{offer_id}/withdraw",
                           self.provider_token(provider.id or ""),
                           {"reason": "Place taken by a child from another local authority"},
                           key=f"withdraw-offer:{plan.index}")
            self.counts["offers_withdrawn"] += 1

        if plan.scenario == "withdraw":
            await api.call("POST", "referral", f"/referrals/{rid}/withdraw", token,
                           {"reason": rng.choice(WITHDRAW_REASONS)}, key=f"withdraw:{plan.index}")
            self.counts["referrals_withdrawn"] += 1
        elif plan.scenario == "close":
            await api.call("POST", "referral", f"/referrals/{rid}/close", token, key=f"close:{plan.index}")
            self.counts["referrals_closed_unfilled"] += 1
        elif plan.scenario == "open":
            self.counts["referrals_open"] += 1
            for provider in offers.values():
                self.standing_offers[provider.index] += 1
        else:
            await self.award(plan, rid, token, offers, rng)

    async def invitations_known(self, rid: str, provider: ProviderPlan) -> None:
        """Wait until the referral service has learned the invitations (an invited provider can read
        the referral): cheaper for everyone than offers answered 409 invitation_pending."""
        token = self.provider_token(provider.id or "")

        async def probe() -> bool | None:
            response = await self.api.send("GET", "referral", f"/referrals/{rid}", token)
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise Unexpected("GET", f"referral/referrals/{rid}", response)
            return True

        await poll_until(probe, f"the referral service to learn who is invited to {rid}")

    async def offer(self, plan: ReferralPlan, rid: str, provider: ProviderPlan, fee_roll: float,
                    note_roll: float) -> str:
        ptype = plan.body["placement_type"]
        intensity = sum(plan.body["needs_profile"].values()) / 36  # 0..1
        base = provider.base_fees.get(ptype) or sum(FEE_BANDS[ptype]) // 2
        fee = round_fee(base * (0.9 + 0.2 * intensity) * (0.92 + 0.18 * fee_roll), FEE_BANDS[ptype])
        start = date.fromisoformat(plan.body["required_from"])
        if fee_roll > 0.85:
            start += timedelta(days=14)
        group = "residential" if ptype.startswith("residential") else ptype
        notes = OFFER_NOTES[group][int(note_roll * len(OFFER_NOTES[group]))]
        created = await self.api.call_when_ready(
            "POST", "referral", f"/referrals/{rid}/offers", self.provider_token(provider.id or ""),
            {"weekly_fee_pence": fee, "start_date": start.isoformat(), "notes": notes},
            key=f"offer:{plan.index}:{provider.index}", retry_rules=("invitation_pending",))
        self.counts["offers"] += 1
        return str(created["id"])

    async def decline(self, plan: ReferralPlan, rid: str, provider: ProviderPlan, rng: random.Random) -> None:
        reason = weighted(rng, DECLINE_REASONS)
        body: dict[str, Any] = {"reason": reason}
        if reason == "other":
            body["note"] = rng.choice(DECLINE_NOTES)
        await self.api.call_when_ready(
            "POST", "referral", f"/referrals/{rid}/decline", self.provider_token(provider.id or ""), body,
            key=f"decline:{plan.index}:{provider.index}", retry_rules=("invitation_pending",))
        self.counts["declines"] += 1

    async def award(self, plan: ReferralPlan, rid: str, token: str, offers: dict[str, ProviderPlan],
                    rng: random.Random) -> None:
        standing = set(offers)

        async def ranked() -> list[dict[str, Any]] | None:
            data = await self.api.call("GET", "matching", f"/referrals/{rid}/shortlist", token)
            # Current when it ranks only standing offers and leaves none out (withdrawn ones are
            # listed as excluded) - the rule the referral service applies before an award.
            ranked = {e["offer_id"] for e in data["entries"]}
            excluded = {x["offer_id"] for x in data["excluded"]}
            return list(data["entries"]) if ranked and ranked <= standing <= ranked | excluded else None

        entries = await poll_until(ranked, f"the shortlist of referral {rid} to rank {len(standing)} offers")
        top = entries[0]
        chosen, justification = top, None
        preferred_id = self.providers[plan.preferred].id if plan.preferred is not None else None
        preferred_entry = next((e for e in entries if e["provider_id"] == preferred_id), None)
        if preferred_entry is not None and preferred_entry is not top:
            chosen = preferred_entry
            justification = (f"Parental preference for {self.by_id[preferred_entry['provider_id']].name}, "
                             "named in the EHCP after the family's visit")
        elif len(entries) > 1 and plan.justify:
            chosen = entries[1 if len(entries) == 2 or rng.random() < 0.7 else 2]
            justification = rng.choice(JUSTIFICATIONS)
        body: dict[str, Any] = {"offer_id": chosen["offer_id"]}
        if justification:
            body["justification"] = justification
        await self.api.call_when_ready("POST", "referral", f"/referrals/{rid}/award", token, body,
                                       key=f"award:{plan.index}", retry_rules=("shortlist_pending",),
                                       first_delay=0.5, max_delay=2.0)
        self.counts["referrals_awarded"] += 1
        if justification:
            self.counts["awards_with_justification"] += 1
        # the placement the award opens: start, funding, review, uplift, ending
        await self.placements.after_award(plan.index, rid, token,
                                          self.provider_token(str(chosen["provider_id"])))

    # ---- phase 4: the commissioners act on providers

    async def oversee(self, watched: list[ProviderPlan]) -> None:
        """Suspensions (one at once for safeguarding, one automatic after an inadequate inspection),
        a suspension lifted, and profile changes. Done after the referrals so that open shortlists
        show the suspended providers' offers excluded."""
        task = self.progress.add_task("Suspensions and updates", total=5)
        api, token = self.api, self.commissioner
        approved = [p for p in self.providers if p.decision == "approve" and p.id]
        # The providers with most offers on referrals still open, so their shortlists change.
        chosen: list[ProviderPlan | None] = [
            *sorted(approved, key=lambda p: (-self.standing_offers[p.index], p.index)), None, None, None]
        manual, automatic, temporary = chosen[:3]
        if manual is not None:
            await api.call("POST", "enrolment", f"/providers/{manual.id}/suspend", token,
                           {"reason": "Safeguarding concern referred to the LADO; suspended pending investigation"},
                           key=f"suspend:{manual.urn}")
            self.counts["providers_suspended"] += 1
            self.counts["providers_approved"] -= 1
        self.progress.advance(task)
        if automatic is not None:
            await api.call("POST", "enrolment", f"/providers/{automatic.id}/inspections", token,
                           {"framework": "ofsted_legacy", "overall": "inadequate",
                            "inspected_on": (self.today - timedelta(days=2)).isoformat()},
                           key=f"inspection:{automatic.urn}:inadequate")
            self.counts["inspections"] += 1
            self.counts["providers_suspended"] += 1
            self.counts["providers_approved"] -= 1
        self.progress.advance(task)
        if temporary is not None:
            await api.call("POST", "enrolment", f"/providers/{temporary.id}/suspend", token,
                           {"reason": "Employer's liability insurance certificate lapsed"},
                           key=f"suspend:{temporary.urn}")
            await api.call("POST", "enrolment", f"/providers/{temporary.id}/reinstate", token,
                           {"reason": "Renewed insurance certificate received and checked"},
                           key=f"reinstate:{temporary.urn}")
            self.counts["providers_reinstated"] += 1
        self.progress.advance(task)
        # A provider portal reports it is full; the commissioners widen another's area.
        full = next((p for p in approved if p not in (manual, automatic, temporary) and p.capacity > 0), None)
        if full is not None:
            await api.call("PATCH", "enrolment", f"/providers/{full.id}", self.provider_token(full.id or ""),
                           {"capacity": 0}, key=f"full:{full.urn}")
            self.counts["provider_updates"] += 1
        self.progress.advance(task)
        widened = next((p for p in approved if p.boroughs_served and p not in (manual, automatic)), None)
        if widened is not None:
            await api.call("PATCH", "enrolment", f"/providers/{widened.id}", token, {"boroughs_served": []},
                           key=f"widen:{widened.urn}")
            self.counts["provider_updates"] += 1
        self.progress.advance(task)


def _watched(plans: list[ProviderPlan]) -> list[ProviderPlan]:
    """The providers whose portals take webhooks: the first approved of each kind."""
    seen: dict[str, ProviderPlan] = {}
    for plan in plans:
        if plan.decision == "approve" and plan.kind not in seen:
            seen[plan.kind] = plan
    return list(seen.values())



async def run_demo(base_url: Callable[[str], str], *, seed: int = 7, referrals: int = 300, providers: int = 100,
                   console: Console | None = None) -> dict[str, int]:
    """Fill the running system behind `base_url` (service name -> "http://host:port") with a region.

    Returns the counts of what was done (also printed as a table). Raises `DemoError` when the
    region cannot be set up (e.g. the system already holds the providers of this seed); a
    referral that fails is counted under `errors` and described on the console, and the rest go on.
    """
    console = console or Console()
    settings = Settings()
    today = datetime.now(UTC).date()
    started = time.monotonic()
    provider_plans = plan_providers(seed, providers, today)
    referral_plans = plan_referrals(seed, referrals, provider_plans, today)
    limits = httpx.Limits(max_connections=HTTP_CONCURRENCY * 2, max_keepalive_connections=HTTP_CONCURRENCY * 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:
        api = Api(client, base_url, seed)
        for service in ("enrolment", "referral", "matching", "notification", "placement"):
            try:
                await api.call("GET", service, "/health", None)
            except httpx.HTTPError as error:
                raise DemoError(f"{service} does not answer at {base_url(service)}: is `placematch up` "
                                f"running? ({error!r})") from error
        columns = (TextColumn("{task.description:<30}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            demo = Demo(api, seed, settings, progress, today)
            try:
                await demo.preflight(provider_plans)
                await demo.enrol(provider_plans)
                watched = _watched(provider_plans)
                await demo.subscribe(watched)
                await demo.run_referrals(referral_plans)
                await demo.oversee(watched)
                try:
                    await demo.placements.off_framework(demo.borough_tokens, max(1, referrals // 30))
                    demo.counts.update(await demo.placements.figures(demo.commissioner))
                except (DemoError, httpx.HTTPError) as error:
                    demo.counts["errors"] += 1
                    demo.errors.append(f"placements: {error}")
                await asyncio.sleep(1.0)  # let the last notifications reach the portals
            finally:
                await demo.receiver.stop()
    demo.counts["webhooks_received"] = demo.receiver.verified
    if demo.receiver.rejected:
        demo.counts["webhooks_bad_signature"] = demo.receiver.rejected
    for line in demo.errors[:10]:
        console.print(f"[red]{line}[/]")
    if len(demo.errors) > 10:
        console.print(f"[red]… and {len(demo.errors) - 10} more[/]")
    counts = {key: int(demo.counts.get(key, 0)) for key, _ in COUNT_ROWS}
    counts.update({k: int(v) for k, v in demo.counts.items() if k not in counts})
    console.print(counts_table(counts, time.monotonic() - started, api.requests))
    return counts
