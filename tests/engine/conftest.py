"""Engine fixtures: the real models, loaded once per test session (about 3 s), and SDK event validation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from switchboard.engine.app import Engine

_SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    loaded = Engine.load()
    yield loaded
    loaded.close()


@pytest.fixture
def validate_server_event() -> Callable[[dict[str, Any]], None]:
    """Asserts an event parses as the openai SDK's GA server event of the same type."""

    def validate(event: dict[str, Any]) -> None:
        parsed = _SERVER_EVENT.validate_python(event)
        assert parsed.type == event["type"], event["type"]

    return validate
