"""The voice tier's shared state (contract §7): which voice server holds which call, one claim per call
SID, per-tenant concurrency leases, settling each call once, and the App server outbox's durable store.

`store.VoiceState` is the interface; `sql_store.SqlVoiceState` implements it on PostgreSQL
(`SWITCHBOARD_STATE_URL`) or, when that is unset, on an in-process SQLite database.
"""
