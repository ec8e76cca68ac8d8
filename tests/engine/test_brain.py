"""The brain's decisions: text in, decision out (pure, no models)."""

from __future__ import annotations

import json

from switchboard.engine.brain import (
    ASK_TO_REPEAT,
    NOT_FOUND,
    AgentSaid,
    BrainInput,
    CallerSaid,
    CallTool,
    Say,
    ToolCalled,
    ToolReturned,
    ToolSpec,
    best_passage,
    decide,
)

KNOWLEDGE = ToolSpec("get_knowledge", "Search the company knowledge base.",
                     {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]})
TRANSFER = ToolSpec("transfer_to_human", "Transfer the caller to a human agent.",
                    {"type": "object", "properties": {"reason": {"type": "string"}}})
CALLBACK = ToolSpec("create_callback_ticket", "Create a ticket so staff call the caller back.",
                    {"type": "object", "properties": {"phone_number": {"type": "string"},
                                                      "reason": {"type": "string"},
                                                      "requested_time": {"type": "string"}},
                     "required": ["reason"]})
END_CALL = ToolSpec("end_call", "End the call after saying goodbye.", {"type": "object", "properties": {}})
LOOKUP_ORDER = ToolSpec("lookup_order", "Look up an order by its number.",
                        {"type": "object", "properties": {"order_number": {"type": "string"}},
                         "required": ["order_number"]})
ALL_TOOLS = (KNOWLEDGE, TRANSFER, CALLBACK, END_CALL, LOOKUP_ORDER)


def caller(text: str, tools: tuple[ToolSpec, ...] = ALL_TOOLS) -> object:
    return decide(BrainInput(tools=tools, turns=(CallerSaid(text),)))


def test_a_question_goes_to_the_knowledge_tool_with_the_callers_words() -> None:
    assert caller("What time do you open on Saturday?") == CallTool(
        "get_knowledge", {"query": "What time do you open on Saturday?"})


def test_asking_for_a_person_transfers() -> None:
    for text in ("Can I speak to a human please?", "Get me a representative.", "I want a real person"):
        decision = caller(text)
        assert isinstance(decision, CallTool) and decision.name == "transfer_to_human", text


def test_call_me_back_takes_phone_reason_and_time_from_the_words() -> None:
    decision = caller("Please call me back tomorrow morning on 415 555 0123 about my refund.")
    assert decision == CallTool("create_callback_ticket", {
        "phone_number": "+14155550123",
        "reason": "Please call me back tomorrow morning on 415 555 0123 about my refund.",
        "requested_time": "tomorrow morning",
    })


def test_goodbye_ends_the_call() -> None:
    assert caller("No, that's all. Bye!") == CallTool("end_call", {})


def test_a_tenant_tool_is_matched_by_its_name_and_gets_the_order_number() -> None:
    assert caller("Where is my order 4 5 1 2?") == CallTool("lookup_order", {"order_number": "4512"})
    assert caller("Can you check order number four five one two") == CallTool(
        "lookup_order", {"order_number": "4512"})


def test_a_missing_required_argument_is_asked_for_then_used() -> None:
    asked = caller("Where is my order?")
    assert asked == Say("Sure. What is your order number?")
    turns = (CallerSaid("Where is my order?"), AgentSaid(asked.text), CallerSaid("It's 7 7 3 1."))
    assert decide(BrainInput(tools=ALL_TOOLS, turns=turns)) == CallTool("lookup_order", {"order_number": "7731"})


def test_tools_not_given_are_never_called() -> None:
    assert caller("Can I speak to a human?", tools=(KNOWLEDGE,)) == CallTool(
        "get_knowledge", {"query": "Can I speak to a human?"})
    assert caller("What time do you open?", tools=()) == Say(ASK_TO_REPEAT)


def test_noise_or_filler_asks_the_caller_to_repeat() -> None:
    assert caller("") == Say(ASK_TO_REPEAT)
    assert caller("Um, uh.") == Say(ASK_TO_REPEAT)


def _knowledge_result(*texts: str) -> str:
    return json.dumps({"results": [{"title": "Store hours", "text": t, "source": "kb/hours.md", "score": 0.8}
                                   for t in texts]})


def test_a_knowledge_result_is_answered_with_its_most_relevant_sentence() -> None:
    question = "What time do you open on Saturday?"
    turns = (CallerSaid(question), ToolCalled("call_1", "get_knowledge", {"query": question}),
             ToolReturned("call_1", _knowledge_result(
                 "# Store hours\nWe are open Monday to Friday from 9 am to 6 pm. "
                 "On Saturday we open at 10 am and close at 2 pm. We are closed on Sundays.")))
    assert decide(BrainInput(tools=ALL_TOOLS, turns=turns)) == Say(
        "On Saturday we open at 10 am and close at 2 pm.")
    short = (CallerSaid("Are you open on Sunday?"), ToolCalled("c", "get_knowledge", {"query": "open Sunday"}),
             ToolReturned("c", _knowledge_result("Closed on Sunday. Monday we open at 9 am. Parking is free.")))
    assert decide(BrainInput(tools=ALL_TOOLS, turns=short)) == Say("Closed on Sunday. Monday we open at 9 am.")


def test_an_unrelated_or_empty_knowledge_result_is_not_read_out() -> None:
    question = "Do you sell kayaks?"
    empty = (CallerSaid(question), ToolCalled("c", "get_knowledge", {"query": question}),
             ToolReturned("c", json.dumps({"results": []})))
    assert decide(BrainInput(tools=ALL_TOOLS, turns=empty)) == Say(NOT_FOUND)
    assert best_passage(json.loads(_knowledge_result("Parking is free behind the store.")), question) is None


def test_a_tenant_tool_result_is_read_out() -> None:
    turns = (CallerSaid("Where is order 4512?"), ToolCalled("c", "lookup_order", {"order_number": "4512"}),
             ToolReturned("c", json.dumps({"ok": True, "result": json.dumps({"status": "shipped",
                                                                              "eta": "Friday"})})))
    assert decide(BrainInput(tools=ALL_TOOLS, turns=turns)) == Say(
        "Here's what I found: the status is shipped; the eta is Friday.")


def test_a_failed_tool_is_apologised_for() -> None:
    turns = (CallerSaid("Where is order 4512?"), ToolCalled("c", "lookup_order", {"order_number": "4512"}),
             ToolReturned("c", json.dumps({"ok": False, "result": "", "error": "timeout"})))
    decision = decide(BrainInput(tools=ALL_TOOLS, turns=turns))
    assert isinstance(decision, Say) and decision.text.startswith("I'm sorry")


def test_builtin_tool_results_get_their_lines() -> None:
    transfer = (CallerSaid("human please"), ToolCalled("c", "transfer_to_human", {}), ToolReturned("c", "{}"))
    assert "connecting you" in decide(BrainInput(tools=ALL_TOOLS, turns=transfer)).text  # type: ignore[union-attr]
    bye = (CallerSaid("bye"), ToolCalled("c", "end_call", {}), ToolReturned("c", '{"ok": true}'))
    assert decide(BrainInput(tools=ALL_TOOLS, turns=bye)) == Say("Thank you for calling. Goodbye!")


def test_response_instructions_with_a_quoted_or_said_line_are_spoken() -> None:
    greeting = "Thanks for calling Acme Outdoor, how can I help?"
    for instructions in (f'Greet the caller with exactly: "{greeting}"', f"Say: {greeting}",
                         f"Say {greeting}", f"Greet the caller. Say “{greeting}”"):
        assert decide(BrainInput(response_instructions=instructions)) == Say(greeting), instructions


def test_control_prompts_without_a_line_get_a_sensible_one() -> None:
    assert decide(BrainInput(response_instructions="Ask if the caller is still there.")) == Say(
        "Are you still there?")
    assert decide(BrainInput(response_instructions="Say goodbye politely and end.")) == Say(
        "Thank you for calling. Goodbye!")
