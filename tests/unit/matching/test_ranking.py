"""Ranking: hand-computed expectations, ties, suspension, quality gate, policy versions."""
from __future__ import annotations

import json
import random
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.matching.eligibility import ProviderFacts
from services.matching.ranking import DEFAULT_POLICY, Offer, Policy, RankingPolicy, rank
from shared.errors import RuleViolation


def provider(pid: str, quality: str | None, status: str = "approved") -> ProviderFacts:
    return ProviderFacts(provider_id=pid, status=status, quality_score=None if quality is None else Decimal(quality))


PROVIDERS = {"A": provider("A", "80"), "B": provider("B", "90"), "C": provider("C", "60")}
OFFERS = [
    Offer("oA", "A", 425000, "2026-05-02T10:00:00Z", 1),
    Offer("oB", "B", 500000, "2026-05-02T11:00:00Z", 2),
    Offer("oC", "C", 400000, "2026-05-02T12:00:00Z", 3),
]


def table(shortlist) -> list[tuple]:  # type: ignore[no-untyped-def]
    return [(e.rank, e.offer.offer_id, str(e.quality), str(e.price), str(e.score)) for e in shortlist.entries]


def test_design_example_single_offer() -> None:
    data = rank([Offer("o1", "A", 425000, "2026-05-02T10:00:00Z")], PROVIDERS).as_data("r", "croydon")
    assert data["entries"] == [{"rank": 1, "offer_id": "o1", "provider_id": "A", "weekly_fee_pence": 425000,
                                "quality": "80.00", "price": "100.00", "score": "88.00"}]
    assert data["policy_version"] == 1 and data["excluded"] == []


def test_hand_computed_three_offers() -> None:
    # lowest fee 400000.  A: price 100*400000/425000 = 94.1176 -> 94.12; 0.6*80 + 0.4*94.12 = 85.648 -> 85.65
    # B: price 80.00; 54 + 32 = 86.00.  C: price 100.00; 36 + 40 = 76.00
    assert table(rank(OFFERS, PROVIDERS)) == [
        (1, "oB", "90.00", "80.00", "86.00"),
        (2, "oA", "80.00", "94.12", "85.65"),
        (3, "oC", "60.00", "100.00", "76.00"),
    ]


def test_score_rounds_half_up_from_rounded_components() -> None:
    # lowest 100000; this fee 160000 -> price 62.50; quality 70.25: 0.6*70.25 + 0.4*62.5 = 42.15 + 25 = 67.15
    # quality 70.03: 42.018 + 25 = 67.018 -> 67.02 ; quality 70.01: 42.006 + 25 -> 67.01
    providers = {"X": provider("X", "70.25"), "Y": provider("Y", "99"), "Z": provider("Z", "70.03")}
    offers = [Offer("ox", "X", 160000, "t1"), Offer("oy", "Y", 100000, "t2"), Offer("oz", "Z", 160000, "t3")]
    rows = {e.offer.offer_id: (str(e.price), str(e.score)) for e in rank(offers, providers).entries}
    assert rows["ox"] == ("62.50", "67.15")
    assert rows["oz"] == ("62.50", "67.02")
    # 100*100000/300000 = 33.333.. -> 33.33 ; 100*2/3 style half-up: 100*100000/160001 = 62.4996 -> 62.50
    offers = [Offer("oy", "Y", 100000, "t2"), Offer("ox", "X", 160001, "t1")]
    assert {e.offer.offer_id: str(e.price) for e in rank(offers, providers).entries}["ox"] == "62.50"


def test_tie_goes_to_the_earlier_offer() -> None:
    providers = {"A": provider("A", "80"), "B": provider("B", "80")}
    early = Offer("o-late-id", "B", 300000, "2026-05-01T09:00:00Z", 2)
    late = Offer("o-early-id", "A", 300000, "2026-05-01T10:00:00Z", 1)
    entries = rank([late, early], providers).entries
    assert [e.offer.offer_id for e in entries] == ["o-late-id", "o-early-id"]
    assert entries[0].score == entries[1].score


def test_suspended_provider_drops_out_and_prices_are_recomputed() -> None:
    providers = dict(PROVIDERS, C=provider("C", "60", status="suspended"))
    shortlist = rank(OFFERS, providers)
    # lowest now A's 425000: A 0.6*80+40 = 88.00; B price 85.00: 54+34 = 88.00 -> tie, A offered first
    assert table(shortlist) == [(1, "oA", "80.00", "100.00", "88.00"), (2, "oB", "90.00", "85.00", "88.00")]
    assert [(o.offer_id, why) for o, why in shortlist.excluded] == [("oC", "provider_suspended")]


def test_withdrawn_and_unknown_provider_offers_are_excluded() -> None:
    offers = [replace(OFFERS[0], withdrawn=True), OFFERS[1], Offer("oZ", "Z", 1, "2026-05-03T00:00:00Z", 4)]
    shortlist = rank(offers, PROVIDERS)
    assert table(shortlist) == [(1, "oB", "90.00", "100.00", "94.00")]
    assert [(o.offer_id, why) for o, why in shortlist.excluded] == [("oA", "offer_withdrawn"), ("oZ",
        "provider_unknown")]


def test_quality_gate_excludes_low_quality_providers() -> None:
    policy = Policy(version=3, min_quality=Decimal("70.00"))
    shortlist = rank(OFFERS, PROVIDERS, policy)
    assert [e.offer.offer_id for e in shortlist.entries] == ["oA", "oB"]
    assert [(o.offer_id, why) for o, why in shortlist.excluded] == [("oC", "below_quality_gate")]
    assert shortlist.as_data("r", "b")["policy_version"] == 3


def test_unscored_provider_counts_as_zero_quality() -> None:
    shortlist = rank([Offer("o", "U", 1000, "t")], {"U": provider("U", None)})
    assert table(shortlist) == [(1, "o", "0.00", "100.00", "40.00")]
    gated = rank([Offer("o", "U", 1000, "t")], {"U": provider("U", None)}, Policy(2, min_quality=Decimal("0.01")))
    assert not gated.entries


def test_policy_weights_change_the_order() -> None:
    price_only = Policy(version=2, quality_weight=Decimal("0.00"), price_weight=Decimal("1.00"))
    assert [e.offer.offer_id for e in rank(OFFERS, PROVIDERS, price_only).entries] == ["oC", "oA", "oB"]


def test_no_offers_gives_empty_shortlist() -> None:
    assert rank([], PROVIDERS).as_data("r", "b") == {
        "referral_id": "r", "borough": "b", "policy_version": 1, "entries": [], "excluded": []}


def test_same_inputs_give_byte_identical_output() -> None:
    first = json.dumps(rank(OFFERS, PROVIDERS).as_data("r", "b")).encode()
    again = json.dumps(rank(list(reversed(OFFERS)), dict(reversed(PROVIDERS.items()))).as_data("r", "b")).encode()
    assert first == again


# --- the policy aggregate -------------------------------------------------------------------

def test_default_policy_is_version_one() -> None:
    assert RankingPolicy().current == DEFAULT_POLICY
    assert DEFAULT_POLICY.as_dict() == {"version": 1, "quality_weight": "0.60", "price_weight": "0.40",
        "min_quality": None}


def test_policy_change_is_an_event_with_the_next_version() -> None:
    policy = RankingPolicy()
    events = policy.change("0.7", 0.3, "50")
    assert [e.type for e in events] == ["policy-changed"]
    assert events[0].data == {"version": 2, "quality_weight": "0.70", "price_weight": "0.30", "min_quality": "50.00"}
    policy.mutate(events)
    assert policy.current.version == 2 and policy.current.min_quality == Decimal("50.00")
    policy.mutate(policy.change("0.60", "0.40"))
    assert policy.current.version == 3 and policy.current.min_quality is None
    replayed = RankingPolicy.replay("policy", [("policy-changed", events[0].data)])
    assert replayed.current.version == 2 and replayed.version == 1


@pytest.mark.parametrize("qw,pw,gate,field,rule", [
    ("0.7", "0.4", None, "price_weight", "weights_sum_to_one"),
    ("1.5", "-0.5", None, "quality_weight", "range"),
    ("0.333", "0.667", None, "quality_weight", "two_decimal_places"),
    ("abc", "0.4", None, "quality_weight", "type"),
    (None, "0.4", None, "quality_weight", "type"),
    ("NaN", "0.4", None, "quality_weight", "type"),
    ("0.6", "0.4", "101", "min_quality", "range"),
    ("0.6", "0.4", True, "min_quality", "type"),
])
def test_policy_change_refusals_name_field_and_rule(qw: object, pw: object, gate: object, field: str,
    rule: str) -> None:
    with pytest.raises(RuleViolation) as err:
        RankingPolicy().change(qw, pw, gate)
    assert (err.value.field, err.value.rule) == (field, rule)


# --- property: arrival order does not matter except for ties ----------------------------------

offer_specs = st.lists(
    st.tuples(
        st.sampled_from(["P1", "P2", "P3", "P4", "P5"]),
        st.integers(min_value=1, max_value=2_000_000),
        st.integers(min_value=0, max_value=5),  # few distinct instants so ties really happen
    ),
    min_size=0, max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(specs=offer_specs, qualities=st.lists(st.integers(0, 10000), min_size=5, max_size=5),
       seed=st.integers(0, 2**32 - 1), gate=st.none() | st.integers(0, 100))
def test_ranking_is_independent_of_arrival_order_except_ties(
    specs: list[tuple[str, int, int]], qualities: list[int], seed: int, gate: int | None
) -> None:
    providers = {f"P{i + 1}": provider(f"P{i + 1}", str(Decimal(q) / 100)) for i, q in enumerate(qualities)}
    offers = [Offer(f"o{i}", pid, fee, f"2026-05-01T10:0{t}:00Z") for i, (pid, fee, t) in enumerate(specs)]
    policy = Policy(version=1, min_quality=None if gate is None else Decimal(gate))
    shuffled = offers[:]
    random.Random(seed).shuffle(shuffled)
    a = rank([replace(o, arrival=i) for i, o in enumerate(offers)], providers, policy)
    b = rank([replace(o, arrival=i) for i, o in enumerate(shuffled)], providers, policy)
    # the same scores in the same order, the same exclusions
    assert [e.score for e in a.entries] == [e.score for e in b.entries]
    assert {(o.offer_id, r) for o, r in a.excluded} == {(o.offer_id, r) for o, r in b.excluded}
    assert {e.offer.offer_id: (e.quality, e.price, e.score) for e in a.entries} == \
        {e.offer.offer_id: (e.quality, e.price, e.score) for e in b.entries}
    # an offer's rank changes only when it ties with another on score and submission instant
    keys = [(e.score, e.offer.submitted_at) for e in a.entries]
    for ea, eb in zip(a.entries, b.entries, strict=True):
        if keys.count((ea.score, ea.offer.submitted_at)) == 1:
            assert ea.offer.offer_id == eb.offer.offer_id
    # ranks are 1..n and scores never increase down the list
    assert [e.rank for e in a.entries] == list(range(1, len(a.entries) + 1))
    assert all(x.score >= y.score for x, y in zip(a.entries, a.entries[1:], strict=False))
