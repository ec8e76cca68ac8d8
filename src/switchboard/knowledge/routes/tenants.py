"""Tenant routing and the per-call profile (instructions, voice, transfer, credits)."""

from __future__ import annotations

from fastapi import APIRouter

from switchboard.knowledge import repository
from switchboard.knowledge.context import ContextDep, SessionDep
from switchboard.knowledge.instructions import CallerContext, build_instructions, is_open_now
from switchboard.knowledge.schemas import (
    CallProfileRequest,
    CallProfileResponse,
    ResolveTenantRequest,
    ResolveTenantResponse,
)

router = APIRouter()


@router.post("/resolve_tenant/", response_model_exclude_none=True)  # max_concurrent_calls only when set
async def resolve_tenant(
    body: ResolveTenantRequest, session: SessionDep
) -> ResolveTenantResponse:
    tenant = await repository.resolve_tenant(
        session, sip_domain=body.sip_domain, to=body.to, application_sid=body.application_sid
    )
    return ResolveTenantResponse(bot_profile_key=tenant.key, credits=tenant.credits, has_credits=tenant.has_credits,
                                 max_concurrent_calls=tenant.max_concurrent_calls)


@router.post("/call_profile/")
async def call_profile(
    body: CallProfileRequest,
    session: SessionDep,
    context: ContextDep,
) -> CallProfileResponse:
    tenant = await repository.get_tenant(session, body.bot_profile_key)
    now = context.clock.wall()
    caller = CallerContext(caller_number=body.caller_number, is_sip_call=body.is_sip_call, call_sid=body.call_sid)
    return CallProfileResponse(
        bot_profile_key=tenant.key,
        company=tenant.company,
        greeting=tenant.greeting,
        instructions=build_instructions(tenant, now, caller),
        voice=tenant.voice,
        transcriber=tenant.transcriber,
        transfer=tenant.transfer,
        credits=tenant.credits,
        has_credits=tenant.has_credits,
        is_open_now=is_open_now(tenant, now),
        timezone=tenant.business_hours.timezone if tenant.business_hours else None,
        turn_detection=tenant.turn_detection,
        keypad=tenant.keypad or {},
    )
