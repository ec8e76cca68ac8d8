"""Integrations run by the App server (contract §9): signed webhooks and helpdesk tickets, delivered from a
queue table by a worker in the App server's lifespan, so a call's record never waits for them."""
