"""HTTP routes of the AI server, one module per resource; only HTTP concerns live here."""
