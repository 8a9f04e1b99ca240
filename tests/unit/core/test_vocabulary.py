"""The one vocabulary: codes as enums whose values are the wire strings, one rounding rule, one instant form."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from shared.events import Envelope
from shared.vocabulary import (
    NEED_CODES,
    Location,
    NeedCode,
    NotificationRequest,
    Recipient,
    WebhookType,
    age_in_years,
    district_of,
    format_instant,
    format_score,
    haversine_km,
    parse_instant,
    parse_score,
    two_places,
)


def test_codes_are_the_wire_strings() -> None:
    assert NeedCode.ASD == "ASD" and NEED_CODES[-2:] == ("ASD", "OTH")
    assert WebhookType("referral.invited") is WebhookType.REFERRAL_INVITED
    with pytest.raises(ValueError):
        NeedCode("asd")


@pytest.mark.parametrize(("given", "expected"), [
    ("80.005", "80.01"), ("80.004", "80.00"), (Decimal("-0.005"), "-0.01"), (80, "80.00"), ("0", "0.00")])
def test_one_rounding_rule_half_up_to_two_places(given, expected) -> None:
    assert str(two_places(given)) == expected


def test_scores_parse_floats_without_binary_noise_and_format_with_two_places() -> None:
    assert parse_score(0.1 + 0.2) == Decimal("0.30")
    assert parse_score(None) is None and parse_score("") is None
    assert format_score(Decimal("88")) == "88.00" and format_score(None) is None


def test_instants_have_one_fixed_width_utc_form() -> None:
    moment = datetime(2026, 7, 1, 18, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    assert format_instant(moment) == "2026-07-01T17:00:00.000005Z"
    assert format_instant(moment, "seconds") == "2026-07-01T17:00:00Z"
    assert format_instant(datetime(2026, 7, 1, 17)) == "2026-07-01T17:00:00.000000Z"  # naive = UTC
    assert parse_instant("2026-07-01T17:00:00Z") == datetime(2026, 7, 1, 17, tzinfo=UTC)
    assert parse_instant("2026-07-01T18:00:00+01:00") == datetime(2026, 7, 1, 17, tzinfo=UTC)
    earlier, later = datetime(2026, 1, 1, 9, 59, 59, 999999, tzinfo=UTC), datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert format_instant(earlier) < format_instant(later)


def test_envelope_times_use_the_same_form() -> None:
    envelope = Envelope(type="thing-made", subject="s", data={}, source="placematch/test")
    assert envelope.time == format_instant(parse_instant(envelope.time))


def test_age_counts_a_birthday_on_the_day() -> None:
    assert age_in_years(date(2014, 5, 2), date(2026, 5, 2)) == 12
    assert age_in_years(date(2014, 5, 2), date(2026, 5, 1)) == 11


def test_locations_districts_and_distance() -> None:
    assert district_of("cr01nx") == "CR0" and district_of("not a postcode") is None
    croydon = Location.from_data({"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099})
    riverside = Location.from_data({"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115})
    assert croydon is not None and riverside is not None
    assert croydon.km_to(riverside) == haversine_km(51.372, -0.099, 51.501, -0.115) == Decimal("14.39")
    assert croydon.km_to(Location(postcode="SE1 7PB")) is None
    assert croydon.to_data() == {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099, "district": "CR0"}
    assert Location.from_data(None) is None


def test_the_notification_request_contract_round_trips() -> None:
    request = NotificationRequest("n-1", "offer.accepted", Recipient("provider", "p-1"), None, "r-1",
                                  {"referral_id": "r-1"})
    event = request.as_event()
    assert event.type == "notification-requested"
    assert event.data["recipient"] == {"role": "provider", "tenant": "p-1"}
    assert NotificationRequest.from_data(event.data) == request
