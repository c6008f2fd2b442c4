"""The translations of the Messages, Responses and completions doors (pure functions, no server)."""

from __future__ import annotations

import orjson
import pytest

from gateway.hotpath import completions_wire, messages_wire, responses_wire


def sse(chunk: dict) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def events(raw: list[bytes]) -> list[tuple[str, dict]]:
    out = []
    for event in raw:
        name, data = event.split(b"\n", 1)
        out.append((name[7:].decode(), orjson.loads(data[6:])))
    return out


def test_tool_results_come_before_the_rest_of_their_user_turn_and_thinking_is_dropped():
    chat = messages_wire.to_chat(
        {
            "model": "m",
            "max_tokens": 5,
            "system": [{"type": "text", "text": "S."}],
            "messages": [
                {"role": "user", "content": "Go"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "x"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "and?"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": "ok",
                            "is_error": True,
                        },
                    ],
                },
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "S."},
        {"role": "user", "content": "Go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "Error: ok"},
        {"role": "user", "content": [{"type": "text", "text": "and?"}]},
    ]
    assert (
        chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
        and chat["parallel_tool_calls"] is False
    )


@pytest.mark.parametrize(
    "choice, expected",
    [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none")],
)
def test_tool_choice_maps_to_chat(choice, expected):
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"name": "f", "input_schema": {}}],
        "tool_choice": choice,
    }
    assert messages_wire.to_chat(body)["tool_choice"] == expected


def test_a_chat_stream_with_text_then_two_tool_calls_becomes_three_content_blocks():
    translator = messages_wire.StreamTranslator(input_estimate=9)
    chunks = [
        {"id": "c1", "model": "m", "choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"content": "Let me"}}]},
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}}
                        ]
                    }
                }
            ]
        },
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]},
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "b",
                                "function": {"name": "g", "arguments": '{"x":1}'},
                            }
                        ]
                    }
                }
            ]
        },
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 4}},
    ]
    out = [e for chunk in chunks for e in translator.feed(sse(chunk))] + translator.feed(
        b"data: [DONE]\n\n"
    )
    parsed = events(out)
    assert [name for name, _ in parsed] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert parsed[0][1]["message"]["usage"]["input_tokens"] == 9
    assert [d["content_block"]["type"] for n, d in parsed if n == "content_block_start"] == [
        "text",
        "tool_use",
        "tool_use",
    ]
    assert parsed[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 12, "output_tokens": 4},
    }
    assert translator.finish() == []  # once


def test_an_error_event_in_the_chat_stream_is_an_anthropic_error_event_and_ends_it():
    translator = messages_wire.StreamTranslator(input_estimate=1)
    translator.feed(sse({"id": "c", "choices": [{"delta": {"content": "a"}}]}))
    [error] = translator.feed(sse({"error": {"message": "cut", "type": "upstream_error"}}))
    assert (
        error
        == b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"cut"}}\n\n'
    )
    assert translator.finish() == []


def test_consecutive_function_calls_are_one_assistant_turn_and_outputs_are_tool_messages():
    messages = responses_wire.input_messages(
        [
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": '{"a":1}'},
            {"type": "reasoning", "summary": []},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "two"}],
            },
        ]
    )
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": '{"a":1}'}},
        ],
    }
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]


def test_a_length_finish_is_an_incomplete_response_and_the_history_keeps_the_reply():
    draft = responses_wire.Draft(
        {"model": "m", "max_output_tokens": 3}, response_id="resp_1", stored=True
    )
    response = responses_wire.from_chat(
        {
            "model": "up",
            "choices": [
                {"message": {"role": "assistant", "content": "cut sh"}, "finish_reason": "length"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3},
        },
        draft,
    )
    assert response["status"] == "incomplete" and response["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    assert response["usage"]["total_tokens"] == 8 and response["model"] == "up"
    assert draft.reply_message() == {"role": "assistant", "content": "cut sh"}


def test_text_format_and_tool_choice_translate_and_builtin_tools_are_refused():
    chat, conversation = responses_wire.to_chat(
        {
            "model": "m",
            "input": "x",
            "instructions": "I.",
            "text": {"format": {"type": "json_object"}},
            "tools": [{"type": "function", "name": "f"}],
            "tool_choice": {"type": "function", "name": "f"},
        }
    )
    assert chat["response_format"] == {"type": "json_object"}
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert conversation == [
        {"role": "user", "content": "x"}
    ]  # the instructions are not kept for a follow-up
    with pytest.raises(responses_wire.InvalidResponsesRequest):
        responses_wire.to_chat({"model": "m", "input": "x", "tools": [{"type": "file_search"}]})


def test_a_completion_stream_echoes_the_prompt_first_and_once_and_drops_an_empty_role_chunk():
    translator = completions_wire.StreamTranslator(echo="Hi ")
    out = [
        e
        for chunk in (
            {"id": "chatcmpl-1", "choices": [{"delta": {"role": "assistant", "content": ""}}]},
            {"id": "chatcmpl-1", "choices": [{"delta": {"content": "there"}}]},
            {"id": "chatcmpl-1", "choices": [{"delta": {}, "finish_reason": "stop"}]},
        )
        for e in translator.feed(sse(chunk))
    ] + translator.feed(b"data: [DONE]\n\n")
    texts = [orjson.loads(e[6:])["choices"][0]["text"] for e in out[:-1]]
    assert texts == ["Hi ", "there", ""] and out[-1] == b"data: [DONE]\n\n"
    assert orjson.loads(out[0][6:])["id"] == "cmpl-1"
    plain = completions_wire.StreamTranslator(echo="")
    assert (
        plain.feed(
            sse({"id": "chatcmpl-2", "choices": [{"delta": {"role": "assistant", "content": ""}}]})
        )
        == []
    )
