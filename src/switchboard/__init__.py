"""Switchboard: answers phone calls with a real-time AI voice agent."""

__version__ = "0.1.0"
