"""TwiML answers for the incoming-call webhook, built with the twilio SDK."""

from __future__ import annotations

from twilio.twiml.voice_response import Connect, VoiceResponse


def stream_twiml(stream_url: str, parameters: dict[str, str]) -> str:
    """`<Response><Connect><Stream url=…>` with `<Parameter>`s and nothing after `</Connect>`,
    so the call ends when the server closes the stream."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response.to_xml())


def apology_twiml(sentence: str) -> str:
    response = VoiceResponse()
    response.say(sentence)
    response.hangup()
    return str(response.to_xml())


def dial_twiml(number: str, caller_id: str | None, apology: str | None = None) -> str:
    """`<Dial callerId=…><Number>…</Number></Dial>` for a transfer to a human (after `<Say>` if given)."""
    response = VoiceResponse()
    if apology:
        response.say(apology)
    dial = response.dial(caller_id=caller_id) if caller_id else response.dial()
    dial.number(number)
    return str(response.to_xml())
