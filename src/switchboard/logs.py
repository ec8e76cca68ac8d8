"""Structured JSON logging: setup, per-call context, phone masking and the redaction processor.

Messages are fixed event names; data goes in fields. Nothing here may let a secret or a full phone
number reach a log line: the redaction processor masks E.164 numbers anywhere in a record, drops
fields whose names say they hold secrets, and drops `pii_` fields outside development.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

_PHONE = re.compile(r"\+\d{6,15}")
_SIP_USER = re.compile(r"(sip:)(\+?\d{6,15})(@)")
_SECRET_KEYS = ("token", "secret", "password", "api_key", "apikey", "authorization", "signature", "auth")
_SECRET_VALUE = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-]+)")

_registered_secrets: set[str] = set()


def mask_phone(number: str | None) -> str:
    """Keep the country prefix and the last four digits: `+14155550123` -> `+1******0123`."""
    if not number:
        return ""
    digits = number.lstrip("+")
    if len(digits) <= 4:
        return "*" * len(digits)
    head = "+" + digits[0] if number.startswith("+") else digits[0]
    return head + "*" * (len(digits) - 5) + digits[-4:]


def register_secret(value: str | None) -> None:
    """Remember a configured secret so the redaction processor removes it from any field."""
    if value and len(value) >= 6:
        _registered_secrets.add(value)


def _scrub_text(text: str) -> str:
    for secret in _registered_secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    text = _SECRET_VALUE.sub("[redacted]", text)
    text = _SIP_USER.sub(lambda m: m.group(1) + mask_phone(m.group(2)) + m.group(3), text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, dict):
        return {k: ("[redacted]" if _is_secret_key(k) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _is_secret_key(key: object) -> bool:
    name = str(key).lower()
    return any(part in name for part in _SECRET_KEYS) and not name.endswith(("_count", "_ms", "_s"))


class RedactionProcessor:
    """structlog processor: drop pii_ fields outside development, redact secrets, mask phone numbers."""

    def __init__(self, keep_pii: bool) -> None:
        self.keep_pii = keep_pii

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key.startswith("pii_") and not self.keep_pii:
                del event_dict[key]
            elif _is_secret_key(key):
                event_dict[key] = "[redacted]"
            else:
                event_dict[key] = _scrub(event_dict[key])
        return event_dict


def configure_logging(
    log_format: str = "json", level: str = "INFO", environment: str = "production",
    secrets: Iterable[str | None] = (),
) -> None:
    """Configure structlog over stdlib logging; call once per process."""
    for secret in secrets:
        register_secret(secret)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _merge_call_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        RedactionProcessor(keep_pii=environment == "development"),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping().get(level.upper(), 20)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(message)s")


# One mutable dict per call, shared by every task of the call: ids learnt later (the stream_sid
# arrives after the model task started) reach the log lines of tasks created earlier.
_CALL_IDS: ContextVar[dict[str, str] | None] = ContextVar("switchboard_call_ids", default=None)


def start_call_context(**ids: str | None) -> None:
    """Give the current task (and the tasks it creates from now on) a fresh set of call ids."""
    _CALL_IDS.set({k: v for k, v in ids.items() if v})


def bind_call_context(**ids: str | None) -> None:
    """Add call ids (call_sid, stream_sid, tenant) to every log line of the current call's tasks."""
    current = _CALL_IDS.get()
    if current is None:
        current = {}
        _CALL_IDS.set(current)
    current.update({k: v for k, v in ids.items() if v})


def _merge_call_ids(logger: object, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ids = _CALL_IDS.get()
    if ids:
        for key, value in ids.items():
            event_dict.setdefault(key, value)
    return event_dict


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
