"""Prometheus metrics of one App server instance (a registry per app, so tests don't share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class AppServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "switchboard_app_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_request_duration = Histogram(
            "switchboard_app_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["route"],
            registry=self.registry,
        )
        self.messages_stored = Counter(
            "switchboard_app_messages_stored",
            "Messages written, by outcome (created or replaced).",
            ["outcome"],
            registry=self.registry,
        )
        self.conversations_ended = Counter(
            "switchboard_app_conversations_ended", "Conversations marked ended.", registry=self.registry
        )
        self.tickets_created = Counter(
            "switchboard_app_tickets_created", "Tickets created, by kind.", ["kind"], registry=self.registry
        )
