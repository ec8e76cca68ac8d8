"""The App server: conversations, messages and tickets recorded by the voice server (`serve app`)."""

from switchboard.tickets.app import create_app

__all__ = ["create_app"]
