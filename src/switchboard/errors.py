"""The project's exception tree. Adapters translate third-party exceptions into these.

    SwitchboardError
    ├── UpstreamError(service, retryable)
    │   ├── UpstreamTimeout
    │   ├── UpstreamUnavailable
    │   └── UpstreamProtocolError
    ├── TenantNotFound
    ├── CallerGone            the caller's stream closed or sent `stop`
    ├── CallEnded(reason)     raised inside a call's TaskGroup to end it
    └── ToolCallFailed(tool, retryable)
"""

from __future__ import annotations


class SwitchboardError(Exception):
    pass


class UpstreamError(SwitchboardError):
    def __init__(self, service: str, detail: str = "", *, retryable: bool) -> None:
        super().__init__(f"{service}: {detail}" if detail else service)
        self.service = service
        self.retryable = retryable


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamProtocolError(UpstreamError):
    pass


class TenantNotFound(SwitchboardError):
    pass


class CallerGone(SwitchboardError):
    pass


class CallEnded(SwitchboardError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ToolCallFailed(SwitchboardError):
    def __init__(self, tool: str, detail: str = "", *, retryable: bool = False) -> None:
        super().__init__(f"{tool}: {detail}" if detail else tool)
        self.tool = tool
        self.retryable = retryable
