"""Helpers shared by the App server tests and the voice server's App-server client tests."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from switchboard.clock import ManualClock
from switchboard.config import AppSettings, load_settings
from switchboard.tickets import create_app

SERVICE_TOKEN = "test-service-token-0123456789"


def build_app(database_url: str, clock: ManualClock | None = None) -> FastAPI:
    settings = load_settings(AppSettings, APP_DATABASE_URL=database_url, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN)
    return create_app(settings, clock=clock)


@dataclass
class AppServer:
    app: FastAPI
    client: httpx.AsyncClient
    """Sends the service token on every request."""
    anonymous: httpx.AsyncClient
    """Sends no Authorization header."""
    clock: ManualClock
