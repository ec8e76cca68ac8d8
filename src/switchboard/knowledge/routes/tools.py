"""The tools a call may use, and running a tenant tool (or get_knowledge) on the model's behalf."""

from __future__ import annotations

import time

from fastapi import APIRouter
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from switchboard.knowledge import repository
from switchboard.knowledge.builtin_tools import BUILTIN_TOOLS
from switchboard.knowledge.context import ContextDep, SessionDep
from switchboard.knowledge.errors import InvalidToolArguments, ToolCallFailed, ToolNotFound
from switchboard.knowledge.knowledge_search import format_hits_for_model, search_knowledge
from switchboard.knowledge.schemas import (
    ExecuteToolRequest,
    ExecuteToolResponse,
    TenantKeyRequest,
    ToolSchema,
    ToolsResponse,
)
from switchboard.knowledge.tool_http import call_http_tool
from switchboard.logs import get_logger

router = APIRouter()
log = get_logger(__name__)
_BUILTINS = {tool["name"]: tool for tool in BUILTIN_TOOLS}


@router.post("/get_available_tools/")
async def get_available_tools(body: TenantKeyRequest, session: SessionDep) -> ToolsResponse:
    own = await repository.list_tools(session, body.bot_profile_key)
    tools = [ToolSchema(**tool) for tool in BUILTIN_TOOLS]
    tools += [ToolSchema(name=t.name, description=t.description, parameters=t.parameters) for t in own]
    return ToolsResponse(tools=tools)


def _validate_arguments(name: str, schema: dict[str, object], arguments: dict[str, object]) -> None:
    error = best_match(Draft202012Validator(schema).iter_errors(arguments))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "arguments"
        raise InvalidToolArguments(f"{name}: {where}: {error.message}")


@router.post("/execute_tool/")
async def execute_tool(
    body: ExecuteToolRequest,
    session: SessionDep,
    context: ContextDep,
) -> ExecuteToolResponse:
    started = time.perf_counter()
    if body.name in _BUILTINS:
        await repository.get_tenant(session, body.bot_profile_key)
        _validate_arguments(body.name, _BUILTINS[body.name]["parameters"], body.arguments)
        if body.name != "get_knowledge":
            raise ToolNotFound(f"{body.name} is performed by the voice server, not executed here")
        embedder = await context.wait_for_embedder()
        hits = await search_knowledge(session, embedder, body.bot_profile_key, str(body.arguments["query"]), 3)
        return ExecuteToolResponse(
            ok=True, status_code=None, result=format_hits_for_model(hits), error=None,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    tool = await repository.get_tool(session, body.bot_profile_key, body.name)
    # Release the database connection before a network wait that may last timeout_s.
    await session.close()
    _validate_arguments(tool.name, tool.parameters, body.arguments)
    assert context.http_client is not None
    log.debug("tool_call.started", tool=tool.name, tenant=body.bot_profile_key, pii_arguments=body.arguments)
    try:
        response = await call_http_tool(context.http_client, tool, body.arguments, context.environ)
    except ToolCallFailed as exc:
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        context.metrics.tool_calls.labels(outcome="failed").inc()
        log.warning(
            "tool_call.failed", tool=tool.name, tenant=body.bot_profile_key, call_sid=body.call_sid,
            reason=exc.detail, retryable=exc.retryable, duration_ms=duration_ms,
        )
        return ExecuteToolResponse(
            ok=False, status_code=None, result="", error=exc.detail, duration_ms=duration_ms
        )
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    outcome = "ok" if response.is_success else "http_error"
    context.metrics.tool_calls.labels(outcome=outcome).inc()
    log.info(
        "tool_call.finished", tool=tool.name, tenant=body.bot_profile_key, call_sid=body.call_sid,
        status_code=response.status_code, duration_ms=duration_ms, outcome=outcome,
    )
    return ExecuteToolResponse(
        ok=response.is_success,
        status_code=response.status_code,
        result=response.body,
        error=None if response.is_success else f"the tool answered HTTP {response.status_code}",
        duration_ms=duration_ms,
    )
