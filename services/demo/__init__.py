"""`placematch demo`: fill a running placematch with a realistic South London region, over HTTP.

Everything goes through the services' public APIs, exactly as borough case systems, provider
portals and the commissioning team would call them: ten boroughs, about a hundred providers
(independent and non-maintained special schools, specialist colleges, children's homes, fostering
agencies) inspected, scored and mostly approved, and a few hundred referrals with offers, declines,
awards (some justified away from the top of the shortlist), withdrawals and unfilled closures.

Determinism: every choice comes from `random.Random` seeded with `seed` (one stream for the region,
one per referral), never from a server-generated id, so the same seed sends the same requests.
Referrals run concurrently, so requests of different referrals interleave differently run to run;
within one referral the order is fixed. Dates are relative to today: the referral service refuses
an `offer_deadline` in the past, so a year of history cannot be back-dated — instead referrals are
raised now with `required_from` dates spread over the coming year.

The flow is event-driven: after a referral is raised, matching invites providers asynchronously.
The demo polls matching's eligible providers, and retries an offer answered 409 with Retry-After
(invitation not yet known at the referral service) or an award answered 409 (shortlist not yet
ranked), always with a bounded wait.

While it runs, the demo also plays a few provider portals and borough systems: it subscribes them
to webhooks pointing at a small receiver of its own, which checks every signature. The receiver
stops with the demo; later deliveries to those subscriptions fail and are retried, as for any
portal that went offline.
"""

from services.demo.client import DemoError
from services.demo.plan import ProviderPlan, ReferralPlan, plan_providers, plan_referrals
from services.demo.region import BOROUGHS
from services.demo.run import run_demo

__all__ = ["BOROUGHS", "DemoError", "ProviderPlan", "ReferralPlan", "plan_providers", "plan_referrals", "run_demo"]
