"""Session instructions for the model: the tenant's instructions plus company, hours and caller context.

Pure: `now` is passed in. The caller's full number is model context (a callback ticket needs it);
it goes to the model and never to a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from switchboard.knowledge.repository import TenantProfile


@dataclass(frozen=True, slots=True)
class CallerContext:
    caller_number: str
    is_sip_call: bool
    call_sid: str


def is_open_now(tenant: TenantProfile, now: datetime) -> bool:
    """Open when `now` is inside the tenant's business hours; a tenant without hours is always open."""
    return tenant.business_hours is None or tenant.business_hours.is_open(now)


def keypad_instructions(tenant: TenantProfile) -> str:
    """Tell the model the caller can type digits, and how typed keys reach it."""
    text = (
        "# Keypad\n"
        "The caller can also type digits on their phone keypad. Typed keys reach you as a caller message "
        "starting with \"(typed on the phone keypad)\", followed by the keys in order. When you need a number "
        "(an order number, a date, an account number), you may offer: \"you can also type it on your keypad\"."
    )
    shortcuts = [f"pressing {key} on its own transfers the caller to a person"
                 for key, action in sorted((tenant.keypad or {}).items()) if action == "transfer"]
    if shortcuts:
        text += " On this line, " + "; ".join(shortcuts) + "."
    return text


def build_instructions(tenant: TenantProfile, now: datetime, caller: CallerContext) -> str:
    """The `instructions` of the model session for one call to `tenant` at `now` (timezone-aware)."""
    sections: list[str] = []
    if tenant.instructions.strip():
        sections.append(tenant.instructions.strip())

    sections.append(
        "# Company\n"
        f"You are the phone agent of {tenant.company}. You are speaking with a caller on the phone: keep "
        "answers short and conversational, one or two sentences, and do not use lists, markdown or emoji. "
        f"Use the get_knowledge tool for facts about {tenant.company} instead of guessing. If you cannot "
        "help, offer a callback (create_callback_ticket)"
        + (" or a transfer to a person (transfer_to_human)." if tenant.transfer else ".")
        + " When the caller is done, say goodbye and use end_call."
    )

    sections.append(keypad_instructions(tenant))

    hours = tenant.business_hours
    if hours is None:
        sections.append("# Business hours\nNo business hours are configured; treat the business as open.")
    else:
        local = hours.local_time(now)
        state = "OPEN" if hours.is_open(now) else "CLOSED"
        sections.append(
            "# Business hours\n"
            f"Time zone: {hours.timezone}. Local time now: {local:%A %Y-%m-%d %H:%M}.\n"
            + "\n".join(hours.describe_week())
            + f"\nThe business is {state} right now."
        )

    sections.append(
        "# Caller\n"
        "source=PHONE\n"
        f"caller_number={caller.caller_number}\n"
        f"is_sip_call={'true' if caller.is_sip_call else 'false'}\n"
        f"call_sid={caller.call_sid}\n"
        "When creating a callback ticket, offer to use the caller's number above unless they give another one."
    )
    return "\n\n".join(sections)
