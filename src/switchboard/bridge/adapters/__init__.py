"""Thin I/O adapters, one peer each. The only place that imports httpx or websockets for the bridge."""
