"""Prometheus metrics of the integrations, registered in the App server's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds from the event (a call's end, a ticket's creation) to its delivery: the first bucket is a
# healthy delivery, the last ones are retries hours later.
AGE_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0)


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_recorded = Counter(
            "switchboard_app_integration_events", "Integration events fanned out, by type.", ["event_type"],
            registry=registry,
        )
        self.attempts = Counter(
            "switchboard_app_delivery_attempts",
            "Delivery attempts, by kind (webhook, freshdesk, zendesk) and result (success, failure).",
            ["kind", "result"], registry=registry,
        )
        self.deliveries = Counter(
            "switchboard_app_deliveries",
            "Deliveries finished, by kind and outcome (delivered, failed, disabled).",
            ["kind", "outcome"], registry=registry,
        )
        self.delivery_age = Histogram(
            "switchboard_app_delivery_age_seconds", "Time from an event to its successful delivery.", ["kind"],
            buckets=AGE_BUCKETS_S, registry=registry,
        )
        self.pending = Gauge(
            "switchboard_app_deliveries_pending", "Deliveries waiting for a (re)try, all App servers together.",
            registry=registry,
        )
        self.oldest_pending_age = Gauge(
            "switchboard_app_delivery_oldest_pending_seconds", "Age of the oldest pending delivery.",
            registry=registry,
        )
        self.rows_pruned = Counter(
            "switchboard_app_integration_rows_pruned",
            "Rows deleted after the retention, by table (integration_deliveries, integration_events).",
            ["table"], registry=registry,
        )
