"""Typed settings per service, read once at start-up from the environment (contract §2).

A missing or malformed setting stops start-up with one line naming it (`SettingsError`).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard.openai_models import DEFAULT_REALTIME_MODEL, DEFAULT_TRANSCRIPTION_MODEL


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it."""


_S = TypeVar("_S", bound=BaseSettings)


def _generated_token() -> str:
    return "local-" + secrets.token_urlsafe(24)


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    switchboard_service_token: str = Field(default_factory=_generated_token, alias="SWITCHBOARD_SERVICE_TOKEN")
    switchboard_log_format: Literal["json", "console"] = Field(default="json", alias="SWITCHBOARD_LOG_FORMAT")
    switchboard_log_level: str = Field(default="INFO", alias="SWITCHBOARD_LOG_LEVEL")
    # development keeps pii_ fields in logs; anything else drops them.
    switchboard_environment: str = Field(default="production", alias="SWITCHBOARD_ENVIRONMENT")


class VoiceSettings(_Base):
    openai_api_key: str | None = Field(default=None, alias="OPENAI_API_KEY")
    switchboard_engine_url: str = Field(default="ws://127.0.0.1:8083/v1/realtime", alias="SWITCHBOARD_ENGINE_URL")
    openai_realtime_url: str = Field(default="wss://api.openai.com/v1/realtime", alias="OPENAI_REALTIME_URL")
    openai_realtime_model: str = Field(default=DEFAULT_REALTIME_MODEL, alias="OPENAI_REALTIME_MODEL")
    twilio_account_sid: str | None = Field(default=None, alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: str | None = Field(default=None, alias="TWILIO_AUTH_TOKEN")
    twilio_api_base_url: str = Field(default="https://api.twilio.com", alias="TWILIO_API_BASE_URL")
    twilio_validate_signatures: bool = Field(default=True, alias="TWILIO_VALIDATE_SIGNATURES")
    # Twilio Webhooks-Rule SharedKey secrets by key id, `KS123:secret1,KS456:secret2` (two while a key is
    # rotated): a request whose X-Twilio-Webhooks-Signature-Settings names one is signed with it and SHA-256.
    twilio_webhook_shared_keys: str | None = Field(default=None, alias="TWILIO_WEBHOOK_SHARED_KEYS", repr=False)
    public_base_url: str | None = Field(default=None, alias="PUBLIC_BASE_URL")
    elevenlabs_api_key: str | None = Field(default=None, alias="ELEVENLABS_API_KEY")
    elevenlabs_base_url: str = Field(default="https://api.elevenlabs.io", alias="ELEVENLABS_BASE_URL")
    cartesia_api_key: str | None = Field(default=None, alias="CARTESIA_API_KEY")
    cartesia_base_url: str = Field(default="https://api.cartesia.ai", alias="CARTESIA_BASE_URL")
    ai_server_url: str = Field(default="http://127.0.0.1:8081", alias="AI_SERVER_URL")
    app_server_url: str = Field(default="http://127.0.0.1:8082", alias="APP_SERVER_URL")
    # Where people reach the App server's dashboard; each call's Opik trace links to /ui/calls/{call_sid}
    # under it. Unset: APP_SERVER_URL (right when the voice server reaches the App server at its public URL).
    app_public_url: str | None = Field(default=None, alias="SWITCHBOARD_APP_PUBLIC_URL")
    inactivity_prompt_s: float = Field(default=30.0, gt=0, alias="SWITCHBOARD_INACTIVITY_PROMPT_S")
    inactivity_hangup_s: float = Field(default=30.0, gt=0, alias="SWITCHBOARD_INACTIVITY_HANGUP_S")
    max_call_s: float = Field(default=1800.0, gt=0, alias="SWITCHBOARD_MAX_CALL_S")
    wrap_up_s: float = Field(default=60.0, ge=0, alias="SWITCHBOARD_WRAP_UP_S")
    thinking_delay_ms: float = Field(default=500.0, ge=0, alias="SWITCHBOARD_THINKING_DELAY_MS")
    thinking_interval_s: float = Field(default=3.0, gt=0, alias="SWITCHBOARD_THINKING_INTERVAL_S")
    dtmf_pause_ms: float = Field(default=2000.0, gt=0, alias="SWITCHBOARD_DTMF_PAUSE_MS")
    tool_timeout_s: float = Field(default=15.0, gt=0, alias="SWITCHBOARD_TOOL_TIMEOUT_S")
    drain_timeout_s: float = Field(default=1860.0, ge=0, alias="SWITCHBOARD_DRAIN_TIMEOUT_S")
    # Not in the contract; our own knobs.
    playback_lead_ms: int = Field(default=300, ge=40, alias="SWITCHBOARD_PLAYBACK_LEAD_MS")
    mark_interval_ms: float = Field(default=100.0, ge=0, alias="SWITCHBOARD_MARK_INTERVAL_MS")
    preopen_claim_timeout_s: float = Field(default=10.0, gt=0, alias="SWITCHBOARD_PREOPEN_CLAIM_TIMEOUT_S")
    realtime_connect_timeout_s: float = Field(default=10.0, gt=0, alias="SWITCHBOARD_REALTIME_CONNECT_TIMEOUT_S")
    http_timeout_s: float = Field(default=5.0, gt=0, alias="SWITCHBOARD_HTTP_TIMEOUT_S")
    close_timeout_s: float = Field(default=2.0, gt=0, alias="SWITCHBOARD_CLOSE_TIMEOUT_S")
    stream_start_timeout_s: float = Field(default=10.0, gt=0, alias="SWITCHBOARD_STREAM_START_TIMEOUT_S")
    max_frame_bytes: int = Field(default=64 * 1024, gt=0, alias="SWITCHBOARD_MAX_FRAME_BYTES")
    outbox_dir: str = Field(default="./var/outbox", alias="SWITCHBOARD_OUTBOX_DIR")
    max_calls: int = Field(default=200, ge=1, alias="SWITCHBOARD_MAX_CALLS")
    transcription_timeout_s: float = Field(default=20.0, gt=0, alias="SWITCHBOARD_TRANSCRIPTION_TIMEOUT_S")
    model_reconnect_window_s: float = Field(default=5.0, ge=0, alias="SWITCHBOARD_MODEL_RECONNECT_WINDOW_S")
    model_session_max_s: float = Field(default=3300.0, gt=0, alias="SWITCHBOARD_MODEL_SESSION_MAX_S")
    # The Realtime session's own input transcription, for tenants with `transcriber: openai`.
    transcription_model: str = Field(default=DEFAULT_TRANSCRIPTION_MODEL, min_length=1,
                                     alias="SWITCHBOARD_TRANSCRIPTION_MODEL")
    # Scale-out (contract §2, §7): shared state, this replica's name, how long a stream URL is valid.
    switchboard_state_url: str | None = Field(default=None, alias="SWITCHBOARD_STATE_URL")
    instance_id: str = Field(default_factory=socket.gethostname, alias="SWITCHBOARD_INSTANCE_ID")
    stream_url_ttl_s: float = Field(default=60.0, gt=0, alias="SWITCHBOARD_STREAM_URL_TTL_S")
    # Our own: how often a replica renews its calls' leases and looks for a lost replica's calls.
    state_heartbeat_s: float = Field(default=5.0, gt=0, alias="SWITCHBOARD_STATE_HEARTBEAT_S")

    @field_validator("switchboard_state_url")
    @classmethod
    def _state_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must be a postgresql+asyncpg:// URL (or sqlite+aiosqlite:// for one process)")
        return value or None

    @field_validator("twilio_webhook_shared_keys")
    @classmethod
    def _shared_keys(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        _parse_shared_keys(value)
        return value

    @field_validator("instance_id")
    @classmethod
    def _instance_id(cls, value: str) -> str:
        # It is a path segment of the stream URL and a label an edge routes on.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
            raise ValueError("must be 1-63 characters of letters, digits, '.', '_' or '-'")
        return value

    @property
    def webhook_shared_keys(self) -> dict[str, str]:
        """TWILIO_WEBHOOK_SHARED_KEYS as {key id: secret}; empty when unset."""
        return _parse_shared_keys(self.twilio_webhook_shared_keys) if self.twilio_webhook_shared_keys else {}

    @property
    def uses_local_engine(self) -> bool:
        return not self.openai_api_key

    @property
    def realtime_url(self) -> str:
        return self.switchboard_engine_url if self.uses_local_engine else self.openai_realtime_url

    @property
    def dashboard_base_url(self) -> str:
        """The App server's public base URL, for links to the dashboard."""
        return (self.app_public_url or self.app_server_url).rstrip("/")


# The header names a key as `key=<id>,algorithm=...`: an id can't hold a comma, `=` or a blank.
_SHARED_KEY_ID = re.compile(r"[^\s,=:]{1,128}")


def _parse_shared_keys(value: str) -> dict[str, str]:
    """`KS123:secret1,KS456:secret2` -> {"KS123": "secret1", ...}; blanks around entries are ignored.

    Raises:
        ValueError: naming the bad entry by position (and key id, once there is one), never a secret.
    """
    keys: dict[str, str] = {}
    for position, entry in enumerate(value.split(","), start=1):
        key_id, separator, secret = entry.strip().partition(":")
        if not separator:
            raise ValueError(f"entry {position} is not <key id>:<secret>")
        if not _SHARED_KEY_ID.fullmatch(key_id):
            raise ValueError(f"entry {position} has no usable key id (1-128 characters, no blank, ',', '=' or ':')")
        if not secret:
            raise ValueError(f"entry {position} (key id {key_id}) has an empty secret")
        if key_id in keys:
            raise ValueError(f"key id {key_id} appears twice")
        keys[key_id] = secret
    return keys


class AISettings(_Base):
    ai_database_url: str = Field(default="sqlite+aiosqlite:///./var/ai.db", alias="AI_DATABASE_URL")


class AppSettings(_Base):
    app_database_url: str = Field(default="sqlite+aiosqlite:///./var/app.db", alias="APP_DATABASE_URL")
    # Integrations (contract §9): tenants' integrations come from the AI server, polled with an ETag.
    ai_server_url: str = Field(default="http://127.0.0.1:8081", alias="AI_SERVER_URL")
    integrations_refresh_s: float = Field(default=5.0, gt=0, alias="SWITCHBOARD_INTEGRATIONS_REFRESH_S")
    # Where people reach this App server; helpdesk tickets link to /ui/calls/{call_sid} under it.
    app_public_url: str = Field(default="http://127.0.0.1:8082", alias="SWITCHBOARD_APP_PUBLIC_URL")
    delivery_poll_s: float = Field(default=1.0, gt=0, alias="SWITCHBOARD_DELIVERY_POLL_S")
    delivery_timeout_s: float = Field(default=15.0, gt=0, le=60, alias="SWITCHBOARD_DELIVERY_TIMEOUT_S")
    # A claimed delivery whose worker died is retried after this; longer than any one attempt can take.
    delivery_lease_s: float = Field(default=60.0, gt=0, alias="SWITCHBOARD_DELIVERY_LEASE_S")
    delivery_concurrency: int = Field(default=16, ge=1, le=200, alias="SWITCHBOARD_DELIVERY_CONCURRENCY")
    delivery_retry_window_s: float = Field(default=26 * 3600.0, gt=0, alias="SWITCHBOARD_DELIVERY_RETRY_WINDOW_S")
    # Finished deliveries (delivered or given up) and their events are deleted this long after they
    # finished; pending ones never are. Helpdesk deliveries stay: they hold the ticket's `external` link.
    delivery_retention_days: int = Field(default=30, gt=0, alias="SWITCHBOARD_DELIVERY_RETENTION_DAYS")
    # 0: a callback ticket reaches the helpdesks at once (with the transcript so far). More: its helpdesk
    # copy waits for the call's end (to carry the whole summary), at most this long.
    helpdesk_wait_for_end_s: float = Field(default=0.0, ge=0, le=7200, alias="SWITCHBOARD_HELPDESK_WAIT_FOR_END_S")
    # Signs dashboard session cookies; every App server of a deployment must share it (contract §2).
    session_secret: str = Field(default_factory=_generated_token, min_length=16, alias="SWITCHBOARD_SESSION_SECRET")
    session_ttl_s: float = Field(default=12 * 3600.0, gt=0, alias="SWITCHBOARD_SESSION_TTL_S")
    # Proxies (IP addresses or networks, comma-separated; `*` for any) whose X-Forwarded-Proto and
    # X-Forwarded-For are believed: a TLS-terminating load balancer makes the request https (Secure
    # cookies) and names the client (sign-in rate limit). Anyone else's forwarded headers are ignored.
    trusted_proxies: str = Field(default="127.0.0.1", alias="SWITCHBOARD_TRUSTED_PROXIES")

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        for item in (part.strip() for part in value.split(",")):
            if item in ("", "*"):
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value
    # The model a call's usage is priced as (the voice server's own variable).
    openai_realtime_model: str = Field(default="gpt-realtime", alias="OPENAI_REALTIME_MODEL")
    # Opik's own variables: the dashboard links each call to its trace when they say where Opik is.
    opik_url_override: str | None = Field(default=None, alias="OPIK_URL_OVERRIDE")
    opik_api_key: str | None = Field(default=None, alias="OPIK_API_KEY")
    opik_workspace: str | None = Field(default=None, alias="OPIK_WORKSPACE")


def load_settings(cls: type[_S], **overrides: object) -> _S:
    """Read settings once; on error raise SettingsError naming the first bad variable.

    Raises:
        SettingsError: a required setting is missing or one is malformed.
    """
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else cls.__name__
        field = cls.model_fields.get(name)
        env_name = field.alias if field is not None and field.alias else name.upper()
        raise SettingsError(f"setting {env_name} is invalid: {first['msg']}") from None


def ensure_sqlite_folder(database_url: str) -> None:
    """Create the folder of a relative SQLite file URL (./var/...) so the default works out of the box."""
    prefix = "sqlite+aiosqlite:///"
    if database_url.startswith(prefix):
        path = database_url[len(prefix):]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
