"""Requests to URLs a tenant configured (tools, webhooks, helpdesks): the SSRF guard and `${VAR}` expansion.

Shared by the AI server (tenant tools) and the App server (integrations). No httpx here: callers pin
their request to an address `check_destination` returned, so a DNS answer cannot change between the
check and the connect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Mapping

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Resolver = Callable[[str, int], Awaitable[list[str]]]


class DestinationRefused(Exception):
    """The host resolves to a non-public address and the entry does not allow private networks."""


class DestinationUnresolved(Exception):
    """The host name did not resolve (or not in time)."""


class MissingVariable(Exception):
    """A `${VAR}` names a variable the environment does not have; `name` says which (never its value)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"environment variable {name} is not set")
        self.name = name


async def resolve_addresses(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public_address(address: str) -> bool:
    """False for loopback, link-local, private, shared, multicast, reserved and unspecified addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    blocked = ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_multicast or ip.is_reserved
    return ip.is_global and not blocked and not ip.is_unspecified


def expand_variables(template: str, environ: Mapping[str, str]) -> str:
    """Replace each `${VAR}` from `environ`.

    Raises:
        MissingVariable: a variable is not set.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise MissingVariable(name)
        return environ[name]

    return _VARIABLE.sub(replace, template)


def has_variables(template: str) -> bool:
    return _VARIABLE.search(template) is not None


async def check_destination(
    host: str, port: int, *, allow_private_network: bool, resolver: Resolver = resolve_addresses,
    timeout_s: float = 10.0,
) -> list[str]:
    """Resolve `host` and return its addresses, the first being the one to connect to.

    Raises:
        DestinationUnresolved: no address within timeout_s.
        DestinationRefused: an address is not public and `allow_private_network` is false.
    """
    try:
        async with asyncio.timeout(timeout_s):
            addresses = await resolver(host, port)
    except (OSError, TimeoutError):
        raise DestinationUnresolved(f"cannot resolve host {host}") from None
    if not addresses:
        raise DestinationUnresolved(f"cannot resolve host {host}")
    if not allow_private_network:
        refused = [a for a in addresses if not is_public_address(a)]
        if refused:
            raise DestinationRefused(f"{host} resolves to a non-public address ({refused[0]})")
    return addresses
