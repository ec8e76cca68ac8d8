"""Prometheus metrics of the AI server, on a registry per app (so two apps in one test process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class AIMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "switchboard_ai_http_requests_total", "HTTP requests served.", ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "switchboard_ai_http_request_duration_seconds", "Time to answer an HTTP request.", ["route"],
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "switchboard_ai_tool_calls_total", "Tenant tool executions by outcome.", ["outcome"], registry=self.registry
        )
        self.knowledge_searches = Counter(
            "switchboard_ai_knowledge_searches_total", "Knowledge base searches.", registry=self.registry
        )
        self.knowledge_search_duration = Histogram(
            "switchboard_ai_knowledge_search_duration_seconds", "Time to answer a knowledge search.",
            registry=self.registry,
        )
