"""The voice server: Twilio Media Streams <-> OpenAI Realtime (GA)."""
