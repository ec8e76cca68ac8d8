"""Charging a finished call's minutes to its tenant, exactly once per call_sid."""

from __future__ import annotations

from fastapi import APIRouter

from switchboard.knowledge import repository
from switchboard.knowledge.billing import billable_minutes
from switchboard.knowledge.context import ContextDep, SessionDep
from switchboard.knowledge.schemas import ChargeCallRequest, ChargeCallResponse
from switchboard.logs import get_logger

router = APIRouter()
log = get_logger(__name__)


@router.post("/charge_call/")
async def charge_call(body: ChargeCallRequest, session: SessionDep, context: ContextDep) -> ChargeCallResponse:
    charge = await repository.charge_call(
        session,
        key=body.bot_profile_key,
        call_sid=body.call_sid,
        minutes=billable_minutes(body.duration_s),
        duration_s=body.duration_s,
        now=context.clock.wall(),
    )
    log.info(
        "call.charged", tenant=charge.key, call_sid=charge.call_sid, minutes=charge.minutes,
        credits_remaining=charge.credits_remaining, already_charged=charge.already_charged,
    )
    return ChargeCallResponse(
        bot_profile_key=charge.key,
        call_sid=charge.call_sid,
        minutes=charge.minutes,
        credits_remaining=charge.credits_remaining,
        already_charged=charge.already_charged,
    )
