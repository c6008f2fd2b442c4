"""Content rules (gateway.engine.rules): each kind matching and not, first match wins,
disabled rules and routes skipped, a hostile pattern bounded. No Django."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from engine_factories import make_balancer, make_instance, make_route

from balancers.rule_syntax import (
    RuleSyntaxError,
    check_token_range,
    compile_keywords,
    compile_pattern,
    parse_keywords,
)
from gateway.engine.rules import (
    MATCHED,
    NO_MATCH,
    NOT_CHECKED,
    ROUTE_DISABLED,
    RULE_DISABLED,
    explain_rules,
    first_match,
    request_facts,
    rule_kinds,
)
from gateway.engine.types import BalancerSpec, RuleSpec


def rule(
    name: str, kind: str, route: str, *, value: str = "", enabled: bool = True, **extra: Any
) -> RuleSpec:
    pattern = None
    if kind == "regex":
        pattern = compile_pattern(value)
    elif kind == "keywords":
        pattern = compile_keywords(parse_keywords(value))
    return RuleSpec(
        name=name,
        kind=kind,
        route=route,
        enabled=enabled,
        pattern=pattern,
        text=value,
        value=value,
        **extra,
    )


def balancer(*rules: RuleSpec, billing_enabled: bool = True) -> BalancerSpec:
    spec = make_balancer(
        make_route("general", make_instance(), priority=1, is_default=True),
        make_route("billing", make_instance(), priority=2, enabled=billing_enabled),
        make_route("vision", make_instance(), priority=3),
        mode="intent_classifier",
    )
    return dataclasses.replace(spec, rules=tuple(rules))


def chat(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
        **extra,
    }


def decided(
    spec: BalancerSpec,
    payload: dict[str, Any],
    *,
    key_name: str = "k",
    tags: str = "",
    endpoint: str = "chat",
) -> str | None:
    facts = request_facts(
        payload, endpoint=endpoint, key_name=key_name, tags=tags, kinds=rule_kinds(spec.rules)
    )
    found = first_match(spec, facts)
    return None if found is None else f"{found[0].name}->{found[1].name}"


# -- each kind, matching and not ----------------------------------------------------------------


def test_a_regex_rule_matches_the_last_user_message_only() -> None:
    spec = balancer(rule("invoices", "regex", "billing", value=r"INV-\d{4}"))
    assert decided(spec, chat("Where is INV-2024?")) == "invoices->billing"
    assert decided(spec, chat("Where is my invoice?")) is None
    earlier = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "INV-2024"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "thanks"},
        ],
    }
    assert decided(spec, earlier) is None


def test_a_regex_rule_reads_an_embeddings_input() -> None:
    spec = balancer(rule("invoices", "regex", "billing", value=r"INV-\d+"))
    assert (
        decided(spec, {"model": "m", "input": ["see INV-7"]}, endpoint="embeddings")
        == "invoices->billing"
    )
    assert decided(spec, {"model": "m", "input": "nothing"}, endpoint="embeddings") is None


def test_keywords_match_whole_words_ignoring_case() -> None:
    spec = balancer(rule("money", "keywords", "billing", value="refund, credit  card, c++"))
    assert decided(spec, chat("I want a REFUND now")) == "money->billing"
    assert decided(spec, chat("my credit\ncard was charged twice")) == "money->billing"
    assert decided(spec, chat("is c++ faster?")) == "money->billing"
    assert decided(spec, chat("it was refunded already")) is None
    assert decided(spec, chat("the creditcard")) is None


def test_a_prompt_token_range_uses_the_gateways_estimate() -> None:
    spec = balancer(
        rule("long", "prompt_tokens", "billing", min_tokens=100),
        rule("short", "prompt_tokens", "vision", max_tokens=20),
    )
    assert decided(spec, chat("word " * 200)) == "long->billing"
    assert decided(spec, chat("hi")) == "short->vision"
    assert decided(spec, chat("word " * 50)) is None  # between the two ranges


def test_a_token_range_includes_both_bounds() -> None:
    payload = chat("one two three")
    tokens = request_facts(
        payload, endpoint="chat", key_name="", tags="", kinds=frozenset({"prompt_tokens"})
    ).prompt_tokens
    exact = balancer(
        rule("exact", "prompt_tokens", "billing", min_tokens=tokens, max_tokens=tokens)
    )
    assert decided(exact, payload) == "exact->billing"
    above = balancer(rule("above", "prompt_tokens", "billing", min_tokens=tokens + 1))
    assert decided(above, payload) is None


def test_a_tools_rule_matches_requests_that_offer_tools() -> None:
    spec = balancer(rule("agents", "tools", "billing"))
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    assert decided(spec, chat(tools=[tool])) == "agents->billing"
    assert decided(spec, chat(functions=[{"name": "lookup"}])) == "agents->billing"
    assert decided(spec, chat(tools=[])) is None
    assert decided(spec, chat()) is None


def test_an_images_rule_matches_an_image_part_in_any_message() -> None:
    spec = balancer(rule("pictures", "images", "vision"))
    with_image = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                ],
            }
        ],
    }
    assert decided(spec, with_image) == "pictures->vision"
    assert decided(spec, chat("describe an image for me")) is None


def test_a_response_format_rule_matches_structured_output() -> None:
    anything = balancer(rule("structured", "response_format", "billing"))
    assert decided(anything, chat(response_format={"type": "json_object"})) == "structured->billing"
    assert decided(anything, chat(response_format={"type": "text"})) is None
    assert decided(anything, chat()) is None
    schema_only = balancer(rule("schemas", "response_format", "billing", value="json_schema"))
    assert (
        decided(schema_only, chat(response_format={"type": "json_schema", "json_schema": {}}))
        == "schemas->billing"
    )
    assert decided(schema_only, chat(response_format={"type": "json_object"})) is None


def test_a_metadata_rule_needs_the_key_with_that_value() -> None:
    spec = balancer(rule("gold", "metadata", "billing", metadata_key="tier", value="gold"))
    assert decided(spec, chat(metadata={"tier": "gold", "team": "x"})) == "gold->billing"
    assert decided(spec, chat(metadata={"tier": "silver"})) is None
    assert decided(spec, chat(metadata={"plan": "gold"})) is None
    assert decided(spec, chat(metadata="tier=gold")) is None


def test_a_user_rule_matches_the_user_field_exactly() -> None:
    spec = balancer(rule("vip", "user", "billing", value="user-42"))
    assert decided(spec, chat(user="user-42")) == "vip->billing"
    assert decided(spec, chat(user="user-421")) is None
    assert decided(spec, chat()) is None


def test_a_tag_rule_reads_the_comma_separated_header_ignoring_case() -> None:
    spec = balancer(rule("batch", "tag", "billing", value="Batch"))
    assert decided(spec, chat(), tags="nightly, BATCH") == "batch->billing"
    assert decided(spec, chat(), tags="batching") is None
    assert decided(spec, chat()) is None


def test_an_api_key_rule_matches_the_calling_keys_name() -> None:
    spec = balancer(rule("etl", "api_key", "billing", value="etl-jobs"))
    assert decided(spec, chat(), key_name="etl-jobs") == "etl->billing"
    assert decided(spec, chat(), key_name="web") is None


# -- order, disabled rules and routes
# -----------------------------------------------------------------


def test_the_first_matching_rule_wins() -> None:
    spec = balancer(
        rule("images-first", "images", "vision"),
        rule("refunds", "keywords", "billing", value="refund"),
        rule("also-refunds", "regex", "vision", value="refund"),
    )
    assert decided(spec, chat("refund please")) == "refunds->billing"


def test_a_disabled_rule_is_skipped() -> None:
    spec = balancer(
        rule("off", "keywords", "vision", value="refund", enabled=False),
        rule("on", "keywords", "billing", value="refund"),
    )
    assert decided(spec, chat("refund please")) == "on->billing"


def test_a_rule_whose_route_is_disabled_gives_way_to_the_next_rule_then_the_mode() -> None:
    spec = balancer(
        rule("to-billing", "keywords", "billing", value="refund"),
        rule("to-vision", "keywords", "vision", value="refund"),
        billing_enabled=False,
    )
    assert decided(spec, chat("refund please")) == "to-vision->vision"
    only = balancer(
        rule("to-billing", "keywords", "billing", value="refund"), billing_enabled=False
    )
    assert decided(only, chat("refund please")) is None  # the routing mode decides


def test_a_rule_naming_no_route_of_the_balancer_never_matches() -> None:
    spec = balancer(rule("lost", "tools", "gone"))
    assert decided(spec, chat(tools=[{"type": "function"}])) is None


def test_explain_gives_every_rules_outcome() -> None:
    spec = balancer(
        rule("off", "tools", "billing", enabled=False),
        rule("to-billing", "keywords", "billing", value="refund"),
        rule("pictures", "images", "vision"),
        rule("money", "keywords", "vision", value="refund"),
        rule("later", "user", "general", value="u"),
        billing_enabled=False,
    )
    facts = request_facts(
        chat("refund"), endpoint="chat", key_name="", tags="", kinds=rule_kinds(spec.rules)
    )
    outcomes = [(c.rule.name, c.outcome) for c in explain_rules(spec, facts)]
    assert outcomes == [
        ("off", RULE_DISABLED),
        ("to-billing", ROUTE_DISABLED),
        ("pictures", NO_MATCH),
        ("money", MATCHED),
        ("later", NOT_CHECKED),
    ]


def test_facts_no_rule_needs_are_not_computed() -> None:
    facts = request_facts(
        chat("refund " * 50, user="u", tools=[{}]),
        endpoint="chat",
        key_name="k",
        tags="a",
        kinds=frozenset({"user"}),
    )
    assert facts.user == "u"
    assert (facts.text, facts.prompt_tokens, facts.has_tools, facts.tags) == (
        "",
        0,
        False,
        frozenset(),
    )


# -- what an operator may write, and the regex bound
# ------------------------------------------------------


def test_patterns_re2_cannot_run_are_refused_with_a_message() -> None:
    for pattern in (r"(a)\1", r"(?=x)y", r"(?<!x)y", "a{2000}", "(", "x" * 501):
        with pytest.raises(RuleSyntaxError):
            compile_pattern(pattern)
    with pytest.raises(RuleSyntaxError, match="RE2 syntax"):
        compile_pattern(r"(a)\1")


def test_a_pattern_too_big_to_compile_is_refused() -> None:
    with pytest.raises(RuleSyntaxError):
        compile_pattern("((((((a{1,100}){1,100}){1,100}){1,100}){1,100}){1,100})")


def test_keywords_and_token_ranges_are_checked() -> None:
    assert parse_keywords(" Refund ,refund,\n credit   card ") == ("refund", "credit card")
    for text in ("", " , ", ",".join(f"w{i}" for i in range(51)), "x" * 101):
        with pytest.raises(RuleSyntaxError):
            parse_keywords(text)
    check_token_range(None, 10)
    for low, high in ((None, None), (10, 5), (-1, None)):
        with pytest.raises(RuleSyntaxError):
            check_token_range(low, high)


def test_a_catastrophic_pattern_runs_in_linear_time() -> None:
    # `(a+)+$` backtracks exponentially in Python's re: 30 letters take minutes there (shown
    # in a child process, cut short). RE2 has no backtracking, so a prompt of 200,000 letters
    # is a few milliseconds.
    hostile = "(a+)+$"
    text = "a" * 200_000 + "!"
    spec = balancer(rule("hostile", "regex", "billing", value=hostile))
    started = time.perf_counter()
    assert decided(spec, chat(text)) is None
    assert time.perf_counter() - started < 1.0
    code = f"import re; re.search({hostile!r}, 'a' * 30 + '!')"
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code], timeout=2)
    assert re.compile(hostile).search("aaa")  # the same pattern, for the record, is valid for re
