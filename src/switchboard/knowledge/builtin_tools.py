"""The built-in tools every tenant has; the voice server performs them (get_knowledge calls back here).

Pure data: JSON schemas in the shape of OpenAI Realtime function tools.
"""

from __future__ import annotations

from typing import Any

BUILTIN_TOOLS: tuple[dict[str, Any], ...] = (
    {
        "name": "get_knowledge",
        "description": "Search the company's knowledge base for facts (policies, hours, products, prices). "
        "Use it before answering any question about the company.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to look up, in the caller's words."}},
            "required": ["query"],
        },
    },
    {
        "name": "transfer_to_human",
        "description": "Transfer the call to a human colleague when the caller asks for a person or you cannot help.",
        "parameters": {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "description": "Why the caller needs a person."},
                "summary": {
                    "type": "string",
                    "description": "Two or three sentences for the colleague who answers: who the caller is, what "
                    "they need and what was already tried or found out. The colleague hears this before the "
                    "caller is put through.",
                },
            },
            "required": ["reason", "summary"],
        },
    },
    {
        "name": "create_callback_ticket",
        "description": "Create a ticket so a colleague calls the caller back.",
        "parameters": {
            "type": "object",
            "properties": {
                "phone_number": {
                    "type": "string",
                    "description": "The number to call back, E.164; leave out to use the caller's number.",
                },
                "reason": {"type": "string", "description": "What the callback is about."},
                "requested_time": {"type": "string", "description": "When the caller wants the callback, if said."},
            },
            "required": ["reason"],
        },
    },
    {
        "name": "end_call",
        "description": "End the call after saying goodbye, when the caller has nothing more to ask.",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why the call ends."}},
        },
    },
)
