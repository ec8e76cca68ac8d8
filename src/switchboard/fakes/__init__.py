"""Test doubles that speak the real protocols (OpenAI Realtime GA, Twilio REST); used by tests and demos."""
