"""Conversations and messages through the real App server: write API, read API (contract §3)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs
from tests.tickets.harness import AppServer

CALLER = "+14155550123"


def at(seconds: float) -> str:
    """An ISO time with a non-UTC zone, so tests show the server normalises to UTC."""
    zone = datetime.now(UTC).astimezone().tzinfo
    base = datetime(2026, 11, 26, 16, 0, tzinfo=UTC).astimezone(zone)
    return (base + timedelta(seconds=seconds)).isoformat()


def open_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "tenant": "acme-support",
        "caller": CALLER,
        "started_at": "2026-11-26T17:00:00+01:00",
        "trace_id": "trace-1",
        "status": "live",
    }
    body.update(overrides)
    return body


def message_body(message_id: str, seq: int, *, role: str = "user", text: str = "hello", **extra: object) -> dict[str, object]:
    return {"message_id": message_id, "role": role, "text": text, "at": at(seq), "seq": seq, **extra}


async def read_conversation(app_server: AppServer, call_sid: str) -> dict[str, object]:
    response = await app_server.client.get("/api/conversations", params={"call_sid": call_sid})
    assert response.status_code == 200
    conversations = response.json()["conversations"]
    assert len(conversations) == 1
    conversation: dict[str, object] = conversations[0]
    return conversation


def assert_utc_iso(value: object) -> None:
    assert isinstance(value, str) and value.endswith("+00:00"), value
    assert datetime.fromisoformat(value).utcoffset() == timedelta(0)


async def test_a_live_conversation_reads_back_with_masked_caller_and_utc_times(app_server: AppServer) -> None:
    response = await app_server.client.put("/api/conversations/CA100", json=open_body())
    assert response.status_code == 201
    assert (await app_server.client.post("/api/conversations/CA100/messages", json=message_body("m1", 1))).status_code == 201
    tool = message_body(
        "m2", 2, role="tool", text="create_callback_ticket",
        name="create_callback_ticket", arguments={"reason": "refund"}, result='{"ok": true}', duration_ms=412.5,
    )
    assert (await app_server.client.post("/api/conversations/CA100/messages", json=tool)).status_code == 201

    conversation = await read_conversation(app_server, "CA100")

    assert conversation["call_sid"] == "CA100"
    assert conversation["tenant"] == "acme-support"
    assert conversation["caller"] == "+1******0123"
    assert conversation["status"] == "live"
    assert conversation["end_reason"] is None and conversation["ended_at"] is None
    assert conversation["trace_id"] == "trace-1"
    assert conversation["started_at"] == "2026-11-26T16:00:00+00:00"
    assert conversation["usage"] == {"input_tokens": 0, "output_tokens": 0}
    user, tool_message = conversation["messages"]  # type: ignore[misc]
    assert (user["role"], user["text"]) == ("user", "hello")
    assert_utc_iso(user["at"])
    assert datetime.fromisoformat(user["at"]) == datetime(2026, 11, 26, 16, 0, 1, tzinfo=UTC)
    assert {k: tool_message[k] for k in ("role", "name", "arguments", "result", "duration_ms")} == {
        "role": "tool", "name": "create_callback_ticket", "arguments": {"reason": "refund"},
        "result": '{"ok": true}', "duration_ms": 412.5,
    }


async def test_the_caller_number_is_never_stored_or_logged_in_full(app_server: AppServer) -> None:
    with capture_logs() as logs:
        await app_server.client.put("/api/conversations/CA101", json=open_body())
        response = await app_server.client.get("/api/conversations", params={"call_sid": "CA101"})
    assert CALLER not in response.text
    assert logs, "the open is logged"
    assert all(CALLER not in repr(record) for record in logs)


async def test_a_repeated_message_id_replaces_the_text_and_keeps_one_message(app_server: AppServer) -> None:
    await app_server.client.put("/api/conversations/CA102", json=open_body())
    first = await app_server.client.post(
        "/api/conversations/CA102/messages", json=message_body("a1", 1, role="assistant", text="Our store opens at nine and")
    )
    again = await app_server.client.post(
        "/api/conversations/CA102/messages", json=message_body("a1", 1, role="assistant", text="Our store opens at nine")
    )
    replay = await app_server.client.post(
        "/api/conversations/CA102/messages", json=message_body("a1", 1, role="assistant", text="Our store opens at nine")
    )

    assert (first.status_code, again.status_code, replay.status_code) == (201, 200, 200)
    messages = (await read_conversation(app_server, "CA102"))["messages"]
    assert [(m["role"], m["text"]) for m in messages] == [("assistant", "Our store opens at nine")]  # type: ignore[attr-defined]


async def test_a_tool_message_resent_with_its_result_keeps_its_arguments(app_server: AppServer) -> None:
    await app_server.client.post(
        "/api/conversations/CA103/messages",
        json=message_body("t1", 4, role="tool", text="lookup_order", name="lookup_order", arguments={"order_number": "42"}),
    )
    await app_server.client.post(
        "/api/conversations/CA103/messages",
        json=message_body("t1", 4, role="tool", text="lookup_order", result="shipped", duration_ms=80.0),
    )
    (tool,) = (await read_conversation(app_server, "CA103"))["messages"]  # type: ignore[misc]
    assert (tool["name"], tool["arguments"], tool["result"], tool["duration_ms"]) == (
        "lookup_order", {"order_number": "42"}, "shipped", 80.0,
    )


async def test_messages_read_back_in_seq_order_then_time(app_server: AppServer) -> None:
    await app_server.client.put("/api/conversations/CA104", json=open_body())
    posts = [
        {**message_body("m3", 3, text="third"), "at": at(1)},
        message_body("m1", 1, text="first"),
        {**message_body("m2b", 2, text="second, later"), "at": at(20)},
        {**message_body("m2a", 2, text="second, earlier"), "at": at(10)},
    ]
    for body in posts:
        assert (await app_server.client.post("/api/conversations/CA104/messages", json=body)).status_code == 201

    messages = (await read_conversation(app_server, "CA104"))["messages"]
    assert [m["text"] for m in messages] == ["first", "second, earlier", "second, later", "third"]  # type: ignore[attr-defined]


async def test_a_message_id_reused_with_another_role_is_a_conflict(app_server: AppServer) -> None:
    await app_server.client.post("/api/conversations/CA105/messages", json=message_body("x", 1, role="user"))
    response = await app_server.client.post(
        "/api/conversations/CA105/messages", json=message_body("x", 1, role="assistant")
    )
    assert response.status_code == 409
    assert response.json()["error"] == "message_conflict"
    assert [m["role"] for m in (await read_conversation(app_server, "CA105"))["messages"]] == ["user"]  # type: ignore[attr-defined]


async def test_messages_before_the_open_create_a_placeholder_that_the_open_fills_in(app_server: AppServer) -> None:
    await app_server.client.post("/api/conversations/CA106/messages", json=message_body("m1", 1))
    placeholder = await read_conversation(app_server, "CA106")
    assert (placeholder["tenant"], placeholder["caller"], placeholder["status"]) == (None, None, "live")
    assert placeholder["started_at"] == "2026-11-26T16:00:01+00:00"

    response = await app_server.client.put("/api/conversations/CA106", json=open_body())

    assert response.status_code == 200
    conversation = await read_conversation(app_server, "CA106")
    assert (conversation["tenant"], conversation["caller"]) == ("acme-support", "+1******0123")
    assert conversation["started_at"] == "2026-11-26T16:00:00+00:00"
    assert [m["message_id"] for m in conversation["messages"]] == ["m1"]  # type: ignore[attr-defined]


async def test_an_ended_conversation_carries_its_totals_and_stays_ended(app_server: AppServer) -> None:
    await app_server.client.put("/api/conversations/CA107", json=open_body())
    await app_server.client.post("/api/conversations/CA107/messages", json=message_body("m1", 1))
    end = {
        "end_reason": "caller_hung_up",
        "ended_at": "2026-11-26T11:02:05.500000-05:00",
        "duration_s": 125.5,
        "usage": {
            "input_tokens": 1200, "output_tokens": 800,
            "input_token_details": {"cached_tokens": 64, "audio_tokens": 900},
        },
        "turns": [{"turn": 1, "caller_stopped_ms": 0, "first_audio_ms": 640}],
        "summary": "Asked about opening hours.",
    }
    response = await app_server.client.post("/api/conversations/CA107/end", json=end)
    assert response.status_code == 200
    # A late or replayed open must not bring an ended conversation back to life.
    assert (await app_server.client.put("/api/conversations/CA107", json=open_body())).status_code == 200

    conversation = await read_conversation(app_server, "CA107")
    assert conversation["status"] == "ended"
    assert conversation["end_reason"] == "caller_hung_up"
    assert conversation["ended_at"] == "2026-11-26T16:02:05.500000+00:00"
    assert conversation["duration_s"] == 125.5
    assert conversation["usage"] == end["usage"]
    assert conversation["turns"] == end["turns"]
    assert conversation["summary"] == "Asked about opening hours."
    assert len(conversation["messages"]) == 1  # type: ignore[arg-type]


async def test_an_end_before_the_open_creates_an_ended_placeholder(app_server: AppServer) -> None:
    end = {"end_reason": "max_duration", "ended_at": "2026-11-26T16:30:00+00:00", "duration_s": 1800.0,
           "usage": {"input_tokens": 1, "output_tokens": 2}, "turns": []}
    assert (await app_server.client.post("/api/conversations/CA108/end", json=end)).status_code == 200
    conversation = await read_conversation(app_server, "CA108")
    assert (conversation["status"], conversation["started_at"]) == ("ended", "2026-11-26T16:00:00+00:00")


async def test_concurrent_posts_make_one_conversation_and_one_row_per_message_id(app_server: AppServer) -> None:
    # No open first: every request races to create the placeholder conversation too.
    bodies = [message_body(f"m{seq}", seq, text=f"text {seq}") for seq in range(40)]
    duplicates = [message_body("m7", 7, text="text 7")] * 10
    responses = await asyncio.gather(
        *(app_server.client.post("/api/conversations/CA109/messages", json=b) for b in bodies + duplicates)
    )

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 201}
    assert statuses.count(201) == 40
    all_conversations = (await app_server.client.get("/api/conversations", params={"limit": 500})).json()
    assert [c["call_sid"] for c in all_conversations["conversations"]].count("CA109") == 1
    messages = (await read_conversation(app_server, "CA109"))["messages"]
    assert [m["message_id"] for m in messages] == [f"m{seq}" for seq in range(40)]  # type: ignore[attr-defined]


async def test_unknown_call_sid_reads_as_an_empty_list(app_server: AppServer) -> None:
    response = await app_server.client.get("/api/conversations", params={"call_sid": "CA_nobody"})
    assert response.json() == {"conversations": []}


async def test_times_without_a_zone_are_refused_without_echoing_the_input(app_server: AppServer) -> None:
    body = open_body(started_at="2026-11-26T16:00:00")
    response = await app_server.client.put("/api/conversations/CA110", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert "started_at" in response.json()["detail"]
    assert CALLER not in response.text
