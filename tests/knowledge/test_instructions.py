"""Business hours and the session instructions, with literal datetimes (no clock reads)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from switchboard.knowledge.business_hours import parse_business_hours
from switchboard.knowledge.instructions import CallerContext, build_instructions, is_open_now
from switchboard.knowledge.repository import TenantProfile

NEW_YORK = ZoneInfo("America/New_York")
HOURS = {"timezone": "America/New_York", "mon-fri": "09:00-18:00", "sat": "10:00-14:00"}


def acme(hours: dict[str, str] | None = HOURS, transfer: dict[str, str] | None = None) -> TenantProfile:
    return TenantProfile(
        key="acme-support",
        company="Acme Outdoor",
        greeting="Thanks for calling Acme Outdoor, how can I help?",
        instructions="You help callers with orders, returns and store hours.",
        voice={"provider": "openai", "name": "marin", "speed": 1.0},
        transcriber="none",
        business_hours=parse_business_hours(hours) if hours is not None else None,
        transfer=transfer,
        credits=500,
    )


CALLER = CallerContext(caller_number="+15557654321", is_sip_call=False, call_sid="CA123")


def test_saturday_afternoon_after_closing_is_closed() -> None:
    hours = parse_business_hours(HOURS)
    assert not hours.is_open(datetime(2026, 11, 28, 15, 0, tzinfo=NEW_YORK))  # a Saturday
    assert hours.is_open(datetime(2026, 11, 28, 13, 59, tzinfo=NEW_YORK))
    assert not hours.is_open(datetime(2026, 11, 28, 14, 0, tzinfo=NEW_YORK))


def test_hours_are_read_in_the_tenants_time_zone() -> None:
    hours = parse_business_hours(HOURS)
    # 13:30 UTC on a Wednesday is 08:30 in New York: not open yet.
    assert not hours.is_open(datetime(2026, 11, 25, 13, 30, tzinfo=UTC))
    assert hours.is_open(datetime(2026, 11, 25, 14, 0, tzinfo=UTC))
    # Sunday is not listed: closed all day.
    assert not hours.is_open(datetime(2026, 11, 29, 12, 0, tzinfo=NEW_YORK))


def test_ranges_wrap_and_days_may_have_several_intervals() -> None:
    hours = parse_business_hours({"timezone": "Europe/Berlin", "fri-mon": "08:00-12:00, 13:00-24:00"})
    berlin = ZoneInfo("Europe/Berlin")
    assert hours.is_open(datetime(2026, 11, 29, 23, 30, tzinfo=berlin))  # Sunday
    assert not hours.is_open(datetime(2026, 11, 30, 12, 30, tzinfo=berlin))  # Monday lunch
    assert not hours.is_open(datetime(2026, 11, 25, 10, 0, tzinfo=berlin))  # Wednesday


def test_instructions_carry_tenant_company_hours_and_caller() -> None:
    text = build_instructions(acme(), datetime(2026, 11, 28, 15, 0, tzinfo=NEW_YORK), CALLER)
    assert text.startswith("You help callers with orders, returns and store hours.")
    assert "You are the phone agent of Acme Outdoor." in text
    assert "Time zone: America/New_York. Local time now: Saturday 2026-11-28 15:00." in text
    assert "Saturday: 10:00-14:00" in text
    assert "Sunday: closed" in text
    assert "The business is CLOSED right now." in text
    assert "source=PHONE\ncaller_number=+15557654321\nis_sip_call=false\ncall_sid=CA123" in text
    assert "transfer_to_human" not in text  # no transfer number configured


def test_instructions_say_open_and_offer_transfer_when_configured() -> None:
    tenant = acme(transfer={"number": "+15559990000", "caller_id": "+15551230001"})
    sip_caller = CallerContext(caller_number="+15557654321", is_sip_call=True, call_sid="CA9")
    now = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)  # Wednesday 11:00 in New York
    text = build_instructions(tenant, now, sip_caller)
    assert "The business is OPEN right now." in text
    assert "is_sip_call=true" in text
    assert "transfer_to_human" in text
    assert is_open_now(tenant, now)


def test_a_tenant_without_hours_is_open() -> None:
    tenant = acme(hours=None)
    now = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    assert is_open_now(tenant, now)
    assert "No business hours are configured" in build_instructions(tenant, now, CALLER)
