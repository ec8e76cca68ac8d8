"""The tenant file of contract §4: YAML -> validated `TenantSpec`s, or one error line naming tenant and key.

Pure apart from reading YAML text: knowledge files are only named here (`documents.py` reads them).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from switchboard.knowledge.business_hours import BusinessHours, BusinessHoursError, parse_business_hours
from switchboard.knowledge.errors import TenantFileError

BUILTIN_TOOL_NAMES = ("get_knowledge", "transfer_to_human", "create_callback_ticket", "end_call")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_TENANT_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KNOWLEDGE_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf")


def _e164(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML reads +15551230001 unquoted as an integer and drops the "+".
        raise ValueError(f"{value} is not an E.164 number (quote it: \"+{value}\")")
    if isinstance(value, str) and not _E164.match(value):
        raise ValueError(f"'{value}' is not an E.164 number")
    return value


E164 = Annotated[str, BeforeValidator(_e164)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenAIVoice(_Strict):
    provider: Literal["openai"]
    name: str = Field(min_length=1)
    speed: float = Field(default=1.0, ge=0.25, le=1.5)


class ElevenLabsVoice(_Strict):
    provider: Literal["elevenlabs"]
    voice_id: str = Field(min_length=1)
    model: str = Field(min_length=1)
    speed: float = Field(default=1.0, ge=0.7, le=1.2)


class Transfer(_Strict):
    number: E164
    caller_id: E164
    # `<Dial timeout>`: Twilio allows 5-600 s (and adds about 5 s); unset means Switchboard's default, 20.
    timeout_s: int | None = Field(default=None, ge=5, le=600)


class ServerVad(_Strict):
    """OpenAI Realtime `server_vad`; keys left out take the provider's defaults."""

    type: Literal["server_vad"]
    threshold: float = Field(default=0.9, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0, le=5_000)
    silence_duration_ms: int = Field(default=500, ge=0, le=10_000)
    idle_timeout_ms: int | None = Field(default=None, ge=5_000, le=30_000)


class SemanticVad(_Strict):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


def _keypad_keys(value: object) -> object:
    # YAML reads an unquoted 0 as an integer key.
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v for k, v in value.items()}
    return value


KEYPAD_KEYS = "0123456789*#"


class KnowledgeSource(_Strict):
    """A file (`path`, relative to the tenant file's folder) or an inline document (`text` + `title`)."""

    path: str | None = None
    text: str | None = None
    title: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> KnowledgeSource:
        if (self.path is None) == (self.text is None):
            raise ValueError("give either path or text (with title)")
        if self.text is not None and not self.title:
            raise ValueError("an inline text needs a title")
        if self.path is not None and not self.path.lower().endswith(_KNOWLEDGE_SUFFIXES):
            raise ValueError(f"'{self.path}' is not a supported file type ({', '.join(_KNOWLEDGE_SUFFIXES)})")
        return self

    @property
    def source(self) -> str:
        """A stable identity for the document within its tenant."""
        return self.path if self.path is not None else f"inline:{self.title}"


class ToolHttp(_Strict):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    url: str
    # Stored as written: ${VAR} is expanded from the AI server's environment only when the tool runs.
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    allow_private_network: bool = False

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value


class ToolSpec(_Strict):
    name: str
    description: str = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    http: ToolHttp

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TOOL_NAME.match(value):
            raise ValueError(f"'{value}' is not a tool name (letters, digits, _ and -, at most 64)")
        if value in BUILTIN_TOOL_NAMES:
            raise ValueError(f"'{value}' is a built-in tool name")
        return value

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        if value.get("type") != "object":
            raise ValueError("must be a JSON schema with type: object")
        return value


WEBHOOK_EVENTS = ("call.ended", "ticket.created")
_VARIABLE_ONLY = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
_SUBDOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"'{value}' is not an http(s) URL")
    return value


def _credential(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty (use a ${VAR} from the App server's environment)")
    return value


def _webhook_secret(value: str) -> str:
    """`${VAR}` (checked when sending), or a literal `whsec_<base64>` as the Standard Webhooks spec shows it."""
    if _VARIABLE_ONLY.match(value):
        return value
    if not value.startswith("whsec_"):
        raise ValueError("must be whsec_<base64> or a ${VAR} holding one")
    try:
        raw = base64.b64decode(value.removeprefix("whsec_") + "==", validate=False)
    except binascii.Error:
        raise ValueError("the part after whsec_ is not base64") from None
    if not raw:
        raise ValueError("the part after whsec_ is empty")
    return value


class WebhookSpec(_Strict):
    """A Standard Webhooks endpoint. `secret` (whsec_...) is a ${VAR} expanded by the App server when sending."""

    url: str
    secret: str
    events: list[Literal["call.ended", "ticket.created"]] = Field(min_length=1)
    allow_private_network: bool = False

    _url = field_validator("url")(lambda cls, value: _http_url(value))
    _secret = field_validator("secret")(lambda cls, value: _webhook_secret(value))


class FreshdeskSpec(_Strict):
    domain: str
    api_key: str
    base_url: str | None = None  # default https://{domain}.freshdesk.com
    allow_private_network: bool = False

    _api_key = field_validator("api_key")(lambda cls, value: _credential(value))

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower().removesuffix(".freshdesk.com")
        if not _SUBDOMAIN.match(value):
            raise ValueError(f"'{value}' is not a Freshdesk domain (the part before .freshdesk.com)")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value).rstrip("/")


class ZendeskSpec(_Strict):
    subdomain: str
    email: str = Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")
    api_token: str
    base_url: str | None = None  # default https://{subdomain}.zendesk.com
    allow_private_network: bool = False

    _api_token = field_validator("api_token")(lambda cls, value: _credential(value))

    @field_validator("subdomain")
    @classmethod
    def _subdomain(cls, value: str) -> str:
        value = value.strip().lower().removesuffix(".zendesk.com")
        if not _SUBDOMAIN.match(value):
            raise ValueError(f"'{value}' is not a Zendesk subdomain (the part before .zendesk.com)")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value).rstrip("/")


class IntegrationsSpec(_Strict):
    """Contract §4 `integrations:`, run by the App server (contract §9)."""

    webhooks: list[WebhookSpec] = Field(default_factory=list)
    freshdesk: FreshdeskSpec | None = None
    zendesk: ZendeskSpec | None = None

    @field_validator("webhooks")
    @classmethod
    def _unique_urls(cls, value: list[WebhookSpec]) -> list[WebhookSpec]:
        seen: set[str] = set()
        for webhook in value:
            if webhook.url in seen:
                raise ValueError(f"'{webhook.url}' is listed twice")
            seen.add(webhook.url)
        return value


class TenantSpec(_Strict):
    key: str
    company: str = Field(min_length=1)
    numbers: list[E164] = Field(default_factory=list)
    sip_domains: list[str] = Field(default_factory=list)
    application_sids: list[str] = Field(default_factory=list)
    greeting: str = Field(min_length=1)
    instructions: str = ""
    voice: Annotated[OpenAIVoice | ElevenLabsVoice, Field(discriminator="provider")] = OpenAIVoice(
        provider="openai", name="marin"
    )
    # `openai`: the Realtime session's own input transcription (contract §4 names none|cartesia|elevenlabs).
    transcriber: Literal["none", "cartesia", "elevenlabs", "openai"] = "none"
    business_hours: dict[str, Any] | None = None
    transfer: Transfer | None = None
    credits: int = Field(ge=0)
    turn_detection: TurnDetection | None = None
    keypad: Annotated[dict[str, Literal["transfer"]], BeforeValidator(_keypad_keys)] = Field(default_factory=dict)
    # Across all voice servers; the next caller hears a busy message. None: no limit.
    max_concurrent_calls: int | None = Field(default=None, ge=1)
    knowledge: list[KnowledgeSource] = Field(default_factory=list)
    tools: list[ToolSpec] = Field(default_factory=list)
    integrations: IntegrationsSpec | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not _TENANT_KEY.match(value):
            raise ValueError(f"'{value}' is not a tenant key (lower-case letters, digits, _ and -)")
        return value

    @field_validator("keypad")
    @classmethod
    def _keypad(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if len(key) != 1 or key not in KEYPAD_KEYS:
                raise ValueError(f"'{key}' is not a keypad key (0-9, * or #)")
        return value

    @model_validator(mode="after")
    def _keypad_transfer_needs_a_number(self) -> TenantSpec:
        for key, action in self.keypad.items():
            if action == "transfer" and self.transfer is None:
                raise ValueError(f"keypad.{key}: transfer needs the tenant's transfer number (transfer: {{number: ...}})")
        return self

    def turn_detection_as_given(self) -> dict[str, Any] | None:
        """The tenant's turn_detection with only the keys it wrote (the rest are the provider's defaults)."""
        if self.turn_detection is None:
            return None
        return self.turn_detection.model_dump(mode="json", exclude_unset=True) | {"type": self.turn_detection.type}

    @field_validator("sip_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [domain.strip().lower() for domain in value]

    def hours(self) -> BusinessHours | None:
        return parse_business_hours(self.business_hours) if self.business_hours is not None else None


class _TenantFile(_Strict):
    tenants: list[dict[str, Any]]


def _where(loc: tuple[int | str, ...]) -> str:
    # Drop the discriminator tag pydantic puts in the path of a tagged union (voice.openai.name).
    tags = {"voice": ("openai", "elevenlabs"), "turn_detection": ("server_vad", "semantic_vad")}
    parts = [str(p) for i, p in enumerate(loc) if not (i > 0 and p in tags.get(str(loc[i - 1]), ()))]
    return ".".join(parts)


def _first_error(exc: ValidationError) -> Any:
    errors = exc.errors()
    # An unknown key usually explains the other errors (a misspelt key is also a missing one).
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def _message(error: Any) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{_where(loc)}'"
    if kind == "missing":
        return f"missing key '{_where(loc)}'"
    msg = str(error["msg"]).removeprefix("Value error, ")
    if kind == "union_tag_invalid":
        msg = ("type must be server_vad or semantic_vad" if loc and loc[0] == "turn_detection"
               else "provider must be openai or elevenlabs")
    return f"{_where(loc)}: {msg}" if loc else msg


def _validate_tenant(raw: object, label: str) -> TenantSpec:
    if not isinstance(raw, dict):
        raise TenantFileError(f"{label}: must be a mapping")
    try:
        spec = TenantSpec.model_validate(raw)
    except ValidationError as exc:
        raise TenantFileError(f"{label}: {_message(_first_error(exc))}") from None
    try:
        spec.hours()
    except BusinessHoursError as exc:
        key = f"business_hours.{exc.key}" if exc.key else "business_hours"
        raise TenantFileError(f"{label}: {key}: {exc}") from None
    return spec


def _check_unique(spec: TenantSpec, label: str) -> None:
    for field in ("numbers", "sip_domains", "application_sids"):
        seen: set[str] = set()
        for index, value in enumerate(getattr(spec, field)):
            if value in seen:
                raise TenantFileError(f"{label}: {field}.{index}: '{value}' is listed twice")
            seen.add(value)
    sources: set[str] = set()
    for index, source in enumerate(spec.knowledge):
        if source.source in sources:
            key = "path" if source.path is not None else "title"
            raise TenantFileError(f"{label}: knowledge.{index}.{key}: '{source.path or source.title}' is listed twice")
        sources.add(source.source)
    names: set[str] = set()
    for index, tool in enumerate(spec.tools):
        if tool.name in names:
            raise TenantFileError(f"{label}: tools.{index}.name: '{tool.name}' is listed twice")
        names.add(tool.name)


# `key: ${VAR}` inside a flow mapping (`{api_key: ${KEY}}`, as contract §4 writes it) is not valid YAML:
# `{` is a flow indicator. Such a bare reference is quoted, and only when the file fails to parse as is.
_BARE_VARIABLE = re.compile(r"(:[ \t]+)(\$\{[A-Za-z_][A-Za-z0-9_]*\})(?=[ \t]*[,}\]\n#]|[ \t]*$)", re.MULTILINE)


def _load_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as first_error:
        quoted = _BARE_VARIABLE.sub(lambda m: f'{m.group(1)}"{m.group(2)}"', text)
        if quoted == text:
            raise
        try:
            return yaml.safe_load(quoted)
        except yaml.YAMLError:
            raise first_error from None


def parse_tenant_file(text: str) -> list[TenantSpec]:
    """Validate a whole tenant file; a route (number, SIP domain, application SID) may belong to one tenant only.

    Raises:
        TenantFileError: one line, e.g. `tenant 'acme-support': numbers.0: '555' is not an E.164 number`.
    """
    try:
        document = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise TenantFileError(f"tenant file: YAML error{where}: {problem}") from None
    try:
        tenant_file = _TenantFile.model_validate(document)
    except ValidationError as exc:
        raise TenantFileError(f"tenant file: {_message(_first_error(exc))}") from None

    specs: list[TenantSpec] = []
    owners: dict[tuple[str, str], str] = {}
    for index, raw in enumerate(tenant_file.tenants):
        key = raw.get("key") if isinstance(raw, dict) else None
        label = f"tenant '{key}'" if isinstance(key, str) else f"tenant #{index + 1}"
        spec = _validate_tenant(raw, label)
        if any(other.key == spec.key for other in specs):
            raise TenantFileError(f"{label}: key: '{spec.key}' is defined twice in this file")
        _check_unique(spec, label)
        for field in ("numbers", "sip_domains", "application_sids"):
            for route_index, value in enumerate(getattr(spec, field)):
                owner = owners.setdefault((field, value), spec.key)
                if owner != spec.key:
                    raise TenantFileError(
                        f"{label}: {field}.{route_index}: '{value}' is already routed to tenant '{owner}'"
                    )
        specs.append(spec)
    return specs
