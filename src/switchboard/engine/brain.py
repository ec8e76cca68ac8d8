"""The engine's "brain": decides what the agent says or which tool it calls next.

Pure: text in, decision out; no I/O, no models. It knows only what the Realtime protocol gives a real
model: the session instructions, the tool schemas, the conversation (caller transcripts, its own lines,
tool calls and their results) and a response's own instructions. There is no language model: intents
are matched by words against the tool names and descriptions it was given, arguments are taken from
the caller's words by the parameter schema, and answers are the best sentences of a tool result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# -- what the brain is given ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallerSaid:
    text: str


@dataclass(frozen=True, slots=True)
class AgentSaid:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCalled:
    call_id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolReturned:
    call_id: str
    output: str


Turn = CallerSaid | AgentSaid | ToolCalled | ToolReturned


@dataclass(frozen=True, slots=True)
class BrainInput:
    instructions: str = ""
    tools: Sequence[ToolSpec] = ()
    turns: Sequence[Turn] = ()
    response_instructions: str | None = None


# -- what it decides ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Say:
    text: str


@dataclass(frozen=True, slots=True)
class CallTool:
    name: str
    arguments: Mapping[str, Any]


Decision = Say | CallTool

ASK_TO_REPEAT = "Sorry, I didn't quite catch that. Could you say it again?"
NOT_FOUND = "I'm sorry, I couldn't find anything about that. Could you say it another way?"
ANYTHING_ELSE = "Is there anything else I can help you with?"
DEFAULT_GREETING = "Hello, thanks for calling. How can I help you today?"
STILL_THERE = "Are you still there?"
GOODBYE = "Thank you for calling. Goodbye!"
WRAP_UP = "We're nearly out of time for this call. Is there anything else I can quickly help with?"
TOOL_FAILED = "I'm sorry, I couldn't complete that just now. Is there anything else I can help with?"

# A tenant tool needs at least this many of the caller's content words in its name or description.
TOOL_MATCH_THRESHOLD = 1.0
# Below this overlap (content stems shared with the question) a knowledge passage is not an answer.
PASSAGE_MATCH_THRESHOLD = 1

BUILTIN_TOOLS = frozenset({"get_knowledge", "transfer_to_human", "create_callback_ticket", "end_call"})

_STOPWORDS = frozenset(
    ["a", "an", "the", "i", "me", "my", "mine", "we", "us", "our", "you", "your", "yours", "he", "she", "it", "its", "they", "them", "their", "this", "that", "these", "those", "is", "am", "are", "was", "were", "be", "been", "being", "do", "does", "did", "have", "has", "had", "having", "can", "could", "would", "should", "will", "shall", "may", "might", "must", "to", "of", "in", "on", "at", "by", "for", "with", "from", "up", "down", "out", "over", "under", "about", "into", "onto", "off", "than", "then", "so", "and", "or", "but", "if", "because", "as", "until", "while", "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "all", "any", "both", "each", "few", "more", "most", "other", "some", "such", "no", "nor", "not", "only", "own", "same", "too", "very", "just", "also", "please", "hi", "hello", "hey", "okay", "ok", "yes", "yeah", "well", "um", "uh", "like", "want", "wanted", "need", "know", "tell", "get", "got", "let", "lets", "there", "here", "thanks", "thank", "much", "im", "i'm", "it's", "its", "what's", "whats", "that's", "thats", "don't", "dont", "can't", "cant", "i'd", "id", "i'll", "ill", "i've", "ive", "would", "one"]
)

_NUMBER_WORDS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
}

_END_CALL = re.compile(
    r"\b(good ?bye|bye|that'?s all|that is all|that'?s it|nothing else|hang up|end (the )?call|"
    r"have a (good|nice|great) (day|one))\b"
)
_TRANSFER = re.compile(
    r"\b(human|agent|person|representative|operator|someone real|real person|somebody|staff|"
    r"manager|transfer me|talk to someone|speak to someone|speak with someone)\b"
)
_KEYPAD = re.compile(r"^\(typed on the phone keypad\)\s*([0-9*#A-D]+)$")
_CALLBACK = re.compile(r"\b(call me back|call back|callback|ring me back|give me a call|call me later|call me)\b")


def decide(given: BrainInput) -> Decision:
    """The next thing the agent does: say a line, or call one of the tools it was given."""
    if given.response_instructions:
        scripted = _scripted_line(given.response_instructions)
        if scripted is not None:
            return Say(scripted)
    last = given.turns[-1] if given.turns else None
    if isinstance(last, ToolReturned):
        return _speak_tool_result(given, last)
    if isinstance(last, CallerSaid):
        return _answer_caller(given)
    if last is None:
        return Say(DEFAULT_GREETING)
    return Say(ANYTHING_ELSE)


# -- scripted lines (response.create instructions) ---------------------------------------------------

_QUOTED = re.compile(r"\"([^\"]{2,})\"|“([^”]{2,})”|(?:^|\s)'([^']{2,}?)'(?=[\s.,;:!?]|$)")
_SAY = re.compile(r"\b(?:say|says|saying|tell the caller|tell them)\b[:,]?\s+(.+)", re.IGNORECASE | re.DOTALL)


def _scripted_line(instructions: str) -> str | None:
    """A line the response's instructions ask for: a quoted sentence, the text after "say", or a canned
    line for the usual control prompts (greet, are you still there, goodbye, wrap up)."""
    quoted = _QUOTED.search(instructions)
    if quoted:
        return next(group for group in quoted.groups() if group).strip()
    said = _SAY.search(instructions)
    if said:
        text = said.group(1).strip().strip("\"'“”").strip()
        first_word = text.split()[0] if text.split() else ""
        # "Say goodbye politely" is an instruction; "Say: Thanks for calling Acme." is a line.
        if text and (first_word[:1].isupper() or len(text.split()) > 4):
            return text
    lowered = instructions.lower()
    if "still there" in lowered or "still on the line" in lowered:
        return STILL_THERE
    if "goodbye" in lowered or "good bye" in lowered or "say bye" in lowered:
        return GOODBYE
    if "wrap up" in lowered or "wrap-up" in lowered or "out of time" in lowered:
        return WRAP_UP
    if "greet" in lowered:
        return DEFAULT_GREETING
    return None


# -- the caller spoke -----------------------------------------------------------------------------


def _answer_caller(given: BrainInput) -> Decision:
    tools = {tool.name: tool for tool in given.tools}
    text = _last_caller_text(given.turns)
    keys = _typed_keys(text)
    if keys is not None:
        return _answer_keys(given, keys)
    lowered = _normalise(text)
    content = content_stems(lowered)
    has_digits = any(ch.isdigit() for ch in _spoken_digits_to_numerals(text))
    if not content and not has_digits and not _END_CALL.search(lowered):
        return Say(ASK_TO_REPEAT)

    if "end_call" in tools and _END_CALL.search(lowered):
        return CallTool("end_call", _fill_arguments(tools["end_call"], text, reason="caller said goodbye"))
    if "create_callback_ticket" in tools and _CALLBACK.search(lowered):
        return _call_or_ask(tools["create_callback_ticket"], text)
    if "transfer_to_human" in tools and _TRANSFER.search(lowered):
        return CallTool("transfer_to_human",
                        _fill_arguments(tools["transfer_to_human"], text, summary=_hand_over_summary(given.turns)))

    tenant_tools = [tool for tool in given.tools if tool.name not in BUILTIN_TOOLS]
    best = _best_tool(tenant_tools, content)
    if best is not None:
        return _call_or_ask(best, text)
    # The agent just asked for a detail a tool needs; this answer plus the earlier request may complete it.
    pending = _tool_awaiting_detail(given, tenant_tools + [t for t in given.tools if t.name in BUILTIN_TOOLS])
    if pending is not None:
        tool, earlier_text = pending
        decision = _call_or_ask(tool, earlier_text + " " + text)
        if isinstance(decision, CallTool):
            return decision

    if "get_knowledge" in tools:
        return CallTool("get_knowledge", _fill_arguments(tools["get_knowledge"], text, query=text))
    return Say(ASK_TO_REPEAT)


def _typed_keys(text: str) -> str | None:
    """The keys of a caller message typed on the keypad (the bridge writes "(typed on the phone keypad) 4512")."""
    match = _KEYPAD.match(text.strip())
    return match.group(1) if match else None


def _answer_keys(given: BrainInput, keys: str) -> Decision:
    """Typed digits answer what the agent just asked for, or fill the one tool that takes a number."""
    digits = keys.strip("*#") or keys
    pending = _tool_awaiting_detail(given, list(given.tools))
    if pending is not None:
        tool, earlier_text = pending
        decision = _call_or_ask(tool, f"{earlier_text} {digits}")
        if isinstance(decision, CallTool):
            return decision
    for tool in given.tools:
        if tool.name in BUILTIN_TOOLS:
            continue
        code_like = [name for name in _required(tool)
                     if any(part in name.lower() for part in ("number", "id", "code", "reference", "order"))]
        if len(code_like) == 1 and len(_required(tool)) == 1:
            return CallTool(tool.name, {code_like[0]: digits})
    return Say(f"You typed {' '.join(keys)}. What would you like me to do with that number?")


def _hand_over_summary(turns: Sequence[Turn], last: int = 4) -> str:
    """What a colleague taking the call should know: the caller's last few requests, in order."""
    asked = [turn.text.strip() for turn in turns if isinstance(turn, CallerSaid) and turn.text.strip()]
    return "The caller said: " + " / ".join(asked[-last:]) if asked else "The caller asked for a person."


def _last_caller_text(turns: Sequence[Turn]) -> str:
    for turn in reversed(turns):
        if isinstance(turn, CallerSaid):
            return turn.text
    return ""


def _best_tool(tools: Iterable[ToolSpec], content: set[str]) -> ToolSpec | None:
    best: tuple[float, ToolSpec] | None = None
    for tool in tools:
        name_stems = content_stems(_normalise(tool.name.replace("_", " ")))
        description_stems = content_stems(_normalise(tool.description))
        score = 1.0 * len(content & name_stems) + 0.5 * len(content & (description_stems - name_stems))
        if score >= TOOL_MATCH_THRESHOLD and (best is None or score > best[0]):
            best = (score, tool)
    return best[1] if best else None


def _tool_awaiting_detail(given: BrainInput, tools: Sequence[ToolSpec]) -> tuple[ToolSpec, str] | None:
    turns = list(given.turns)
    if len(turns) < 3 or not isinstance(turns[-2], AgentSaid):
        return None
    asked = turns[-2].text
    earlier = turns[-3]
    if not isinstance(earlier, CallerSaid):
        return None
    for tool in tools:
        if asked in {_ask_for(tool, name) for name in _required(tool)}:
            return tool, earlier.text
    return None


def _call_or_ask(tool: ToolSpec, text: str) -> Decision:
    arguments = _fill_arguments(tool, text)
    missing = [name for name in _required(tool) if name not in arguments]
    if missing:
        return Say(_ask_for(tool, missing[0]))
    return CallTool(tool.name, arguments)


def _ask_for(tool: ToolSpec, parameter: str) -> str:
    return f"Sure. What is your {parameter.replace('_', ' ')}?"


def _required(tool: ToolSpec) -> list[str]:
    required = tool.parameters.get("required", [])
    return [str(name) for name in required] if isinstance(required, list) else []


# -- arguments from the caller's words ---------------------------------------------------------------

_PHONE = re.compile(r"\+?\d[\d\s\-().]{6,}\d")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
_TIME = re.compile(
    r"\b(tomorrow (morning|afternoon|evening)|today|tomorrow|tonight|this (morning|afternoon|evening)|"
    r"(on )?(monday|tuesday|wednesday|thursday|friday|saturday|sunday)( (morning|afternoon|evening))?|"
    r"(at )?\d{1,2}(:\d{2})? ?(am|pm|a\.m\.|p\.m\.|o'clock))\b",
    re.IGNORECASE,
)
_CODE = re.compile(r"\b[A-Za-z]{0,4}-?\d[\dA-Za-z-]*\b")


def _fill_arguments(tool: ToolSpec, text: str, **preferred: str) -> dict[str, Any]:
    """Arguments for `tool` taken from the caller's words by its JSON schema.

    `preferred` gives values for parameters whose names contain the key (e.g. query=..., reason=...).
    """
    properties = tool.parameters.get("properties", {})
    if not isinstance(properties, Mapping):
        return {}
    digits_text = _spoken_digits_to_numerals(text)
    arguments: dict[str, Any] = {}
    for name, schema in properties.items():
        schema = schema if isinstance(schema, Mapping) else {}
        value = _value_for(str(name).lower(), schema, text, digits_text, preferred)
        if value is not None:
            arguments[str(name)] = value
    return arguments


def _value_for(
    name: str, schema: Mapping[str, Any], text: str, digits_text: str, preferred: Mapping[str, str]
) -> Any:
    kind = schema.get("type", "string")
    for key, value in preferred.items():
        if key in name:
            return value
    enum = schema.get("enum")
    if isinstance(enum, list):
        lowered = text.lower()
        return next((option for option in enum if str(option).lower() in lowered), None)
    if "phone" in name or "number" in name and "phone" in str(schema.get("description", "")).lower():
        match = _PHONE.search(digits_text)
        return _e164(match.group(0)) if match else None
    if "email" in name:
        match = _EMAIL.search(text)
        return match.group(0) if match else None
    if "time" in name or "date" in name or "when" in name:
        match = _TIME.search(text)
        return match.group(0) if match else None
    if kind in ("integer", "number"):
        match = re.search(r"\d+(\.\d+)?", digits_text.replace(",", ""))
        if not match:
            return None
        return int(float(match.group(0))) if kind == "integer" else float(match.group(0))
    if kind == "boolean":
        return None
    if any(part in name for part in ("number", "id", "code", "reference", "order", "sku", "zip", "postcode")):
        codes = [code for code in _CODE.findall(digits_text) if any(ch.isdigit() for ch in code)]
        return max(codes, key=len).replace("-", "").upper() if codes else None
    if any(part in name for part in ("query", "question", "text", "reason", "message", "topic", "request",
                                     "details", "description", "summary", "note")):
        return text.strip()
    return None


def _e164(raw: str) -> str:
    digits = re.sub(r"\D", "", raw)
    if raw.strip().startswith("+"):
        return "+" + digits
    if len(digits) == 10:
        return "+1" + digits
    return digits


def _spoken_digits_to_numerals(text: str) -> str:
    """Spoken digits to numerals: "four five one two" -> "4512" (a run joins into one number)."""
    words = re.findall(r"[A-Za-z']+|\d+|[^\sA-Za-z\d]", text)
    out: list[str] = []
    run = ""
    for word in words:
        digit = _NUMBER_WORDS.get(word.lower()) if not word.isdigit() else word
        if digit is not None and (word.lower() != "one" or run):
            run += digit
            continue
        if run:
            out.append(run)
            run = ""
        out.append(word)
    if run:
        out.append(run)
    # Whisper often writes "4 5 1 2": join digit groups separated only by spaces.
    return re.sub(r"(?<=\d) (?=\d)", "", " ".join(out))


# -- speaking a tool result ----------------------------------------------------------------------------


def _speak_tool_result(given: BrainInput, result: ToolReturned) -> Decision:
    call = next(
        (t for t in given.turns if isinstance(t, ToolCalled) and t.call_id == result.call_id), None
    )
    name = call.name if call else ""
    payload = _parse_json(result.output)
    if _is_failure(payload):
        return Say(TOOL_FAILED)
    if name == "get_knowledge":
        question = str(call.arguments.get("query", "")) if call else ""
        question = question or _last_caller_text(given.turns)
        return Say(best_passage(payload, question) or NOT_FOUND)
    if name == "transfer_to_human":
        return Say("Of course. I'm connecting you with a member of our team now. Please hold.")
    if name == "create_callback_ticket":
        return Say("Thanks. I've arranged for someone to call you back as soon as possible.")
    if name == "end_call":
        return Say(GOODBYE)
    return Say(_verbalise(payload) or ANYTHING_ELSE)


def _parse_json(output: str) -> Any:
    try:
        return json.loads(output)
    except (TypeError, ValueError):
        return output


def _is_failure(payload: Any) -> bool:
    if isinstance(payload, Mapping):
        if payload.get("ok") is False:
            return True
        error = payload.get("error")
        return bool(error) and not payload.get("results") and not payload.get("result")
    return False


def best_passage(payload: Any, question: str, max_words: int = 45) -> str | None:
    """The first result's sentence (or two) that shares most words with the question.

    `payload` is the knowledge tool's result: `{"results": [{"title", "text", "source", "score"}]}`.
    None when there is no result or no sentence shares a content word with the question.
    """
    results = payload.get("results") if isinstance(payload, Mapping) else None
    if not isinstance(results, list) or not results or not isinstance(results[0], Mapping):
        return None
    first = results[0]
    sentences = split_sentences(_strip_markup(str(first.get("text", ""))))
    if not sentences:
        return None
    question_stems = content_stems(_normalise(question))
    title_stems = content_stems(_normalise(str(first.get("title", ""))))
    scored = [
        (len(question_stems & content_stems(_normalise(s))) + 0.25 * len(title_stems & content_stems(_normalise(s))), -i)
        for i, s in enumerate(sentences)
    ]
    best_score, negative_index = max(scored)
    title_overlap = len(question_stems & title_stems)
    if best_score < PASSAGE_MATCH_THRESHOLD and title_overlap < PASSAGE_MATCH_THRESHOLD:
        return None
    index = -negative_index
    chosen = [sentences[index]]
    if len(chosen[0].split()) < 12 and index + 1 < len(sentences):
        follower = sentences[index + 1]
        if len(chosen[0].split()) + len(follower.split()) <= max_words:
            chosen.append(follower)
    words = " ".join(chosen).split()
    text = " ".join(words[:max_words])
    return text if text.endswith((".", "!", "?")) else text.rstrip(",;:") + "."


def _verbalise(payload: Any) -> str:
    """A spoken line from a tenant tool's result (a string, or JSON whose scalar fields are read out)."""
    if isinstance(payload, Mapping) and isinstance(payload.get("result"), str):
        payload = _parse_json(payload["result"])
    if isinstance(payload, str):
        sentences = split_sentences(_strip_markup(payload))
        return " ".join(sentences[:2])
    if isinstance(payload, Mapping):
        for key in ("message", "answer", "text", "summary", "description"):
            if isinstance(payload.get(key), str) and payload[key].strip():
                return " ".join(split_sentences(payload[key])[:2])
        parts = [
            f"the {str(key).replace('_', ' ')} is {value}"
            for key, value in payload.items()
            if isinstance(value, str | int | float) and not isinstance(value, bool) and str(value).strip()
        ][:4]
        if parts:
            line = "; ".join(parts)
            return "Here's what I found: " + line + "."
    if isinstance(payload, list) and payload:
        return _verbalise(payload[0])
    return ""


# -- words ---------------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“])")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _strip_markup(text: str) -> str:
    text = re.sub(r"^\s*(#+|[-*•]|\d+\.)\s*", "", text, flags=re.MULTILINE)
    text = re.sub(r"[*_`]+", "", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(line if line.endswith((".", "!", "?", ":")) else line + "." for line in lines)


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("’", "'"))


def _stem(word: str) -> str:
    word = word.strip("'")
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_stems(normalised_text: str) -> set[str]:
    """Stems of the words that carry meaning (stopwords dropped)."""
    return {_stem(word) for word in normalised_text.split() if word not in _STOPWORDS and len(word) > 1}
