"""JSON <-> call events/actions, one module per peer. Pure: translates, never decides."""
