"""HTTP routes of the App server, one module per resource; HTTP concerns only."""
