"""A stand-in for the cluster's DNS (CoreDNS with `endpoint_pod_names`) as the chart's headless voice Service
makes it look: an SRV record listing the ready voice pods, and one A record per pod named after the pod.

Enough for HAProxy's `resolvers` (server-template over SRV, do-resolve of one pod's name); every other name
is NXDOMAIN. A test removes a pod (it became unready or went away) with `remove()`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL_S = 1


@dataclass
class ClusterDns:
    service_fqdn: str  # e.g. switchboard-voice-pods.switchboard.svc.cluster.local
    port: int  # the pods' port, published in the SRV records
    pods: dict[str, str] = field(default_factory=dict)  # pod name -> IPv4
    queries: list[tuple[str, str]] = field(default_factory=list)
    _transport: asyncio.DatagramTransport | None = None

    @property
    def srv_name(self) -> str:
        return f"_http._tcp.{self.service_fqdn}."

    def pod_fqdn(self, pod: str) -> str:
        return f"{pod}.{self.service_fqdn}."

    def remove(self, pod: str) -> None:
        self.pods.pop(pod, None)

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        (question,) = query.question
        name = question.name.to_text().lower()
        self.queries.append((name, dns.rdatatype.to_text(question.rdtype)))
        by_fqdn = {self.pod_fqdn(pod): address for pod, address in self.pods.items()}
        if name == self.srv_name.lower():
            if question.rdtype == dns.rdatatype.SRV:
                records = [f"0 50 {self.port} {self.pod_fqdn(pod)}" for pod in sorted(self.pods)]
                if records:
                    response.answer.append(dns.rrset.from_text_list(name, TTL_S, "IN", "SRV", records))
                for pod, address in sorted(self.pods.items()):
                    response.additional.append(dns.rrset.from_text(self.pod_fqdn(pod), TTL_S, "IN", "A", address))
        elif name in by_fqdn:
            if question.rdtype == dns.rdatatype.A:
                response.answer.append(dns.rrset.from_text(name, TTL_S, "IN", "A", by_fqdn[name]))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return bytes(response.to_wire())

    async def start(self) -> int:
        """Listen on 127.0.0.1:<free port>; returns the port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=("127.0.0.1", 0))
        self._transport = transport
        return int(transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, dns_server: ClusterDns) -> None:
        self.dns_server = dns_server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        try:
            reply = self.dns_server.answer(data)
        except dns.exception.DNSException:
            return  # not a DNS query: ignored, as a DNS server would
        self.transport.sendto(reply, addr)
