"""A simulated Twilio caller for `switchboard call` and end-to-end tests."""
