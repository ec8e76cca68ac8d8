"""Request and response bodies of the internal API (docs/internal-api.md). Pydantic lives only here, at the edge."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ResolveTenantRequest(_Body):
    sip_domain: str | None = None
    to: str | None = None
    application_sid: str | None = None


class ResolveTenantResponse(BaseModel):
    bot_profile_key: str
    credits: int
    has_credits: bool
    max_concurrent_calls: int | None = None


class CallProfileRequest(_Body):
    bot_profile_key: str
    caller_number: str = ""
    is_sip_call: bool = False
    call_sid: str = ""


class CallProfileResponse(BaseModel):
    bot_profile_key: str
    company: str
    greeting: str
    instructions: str
    voice: dict[str, Any]
    transcriber: str
    transfer: dict[str, Any] | None
    credits: int
    has_credits: bool
    is_open_now: bool
    timezone: str | None = None
    turn_detection: dict[str, Any] | None = None
    keypad: dict[str, str] = {}


class TenantKeyRequest(_Body):
    bot_profile_key: str


class ToolSchema(BaseModel):
    type: str = "function"
    name: str
    description: str
    parameters: dict[str, Any]


class ToolsResponse(BaseModel):
    tools: list[ToolSchema]


class SearchRequest(_Body):
    bot_profile_key: str
    query: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(default=3, ge=1, le=20)


class SearchResult(BaseModel):
    title: str
    text: str
    source: str
    score: float


class SearchResponse(BaseModel):
    results: list[SearchResult]


class ExecuteToolRequest(_Body):
    bot_profile_key: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    call_sid: str = ""


class ExecuteToolResponse(BaseModel):
    ok: bool
    status_code: int | None
    result: str
    error: str | None
    duration_ms: float | None = None


class ChargeCallRequest(_Body):
    bot_profile_key: str
    call_sid: str = Field(min_length=1, max_length=64)
    # A day bounds it: Twilio ends a call after at most 24 hours.
    duration_s: float = Field(ge=0, le=86_400, allow_inf_nan=False)


class ChargeCallResponse(BaseModel):
    bot_profile_key: str
    call_sid: str
    minutes: int
    credits_remaining: int
    already_charged: bool
