"""Dashboard routes: pages, the live stream, administration."""
