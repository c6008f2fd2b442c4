"""Content rules on the hot path, through the real server: each kind, first match wins, the
override beats them, a disabled route gives way, a hostile pattern stays bounded, and the
decision shows in the header, /v1/explain, the usage event, the board and the usage page."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import httpx
import pytest

from balancers.models import Route
from tests.factories import make_api_key, make_balancer
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}

RULES = [
    {"name": "invoices", "order": 1, "kind": "regex", "value": r"INV-\d{4}", "route": "special"},
    {
        "name": "money",
        "order": 2,
        "kind": "keywords",
        "value": "refund, chargeback",
        "route": "special",
    },
    {"name": "huge", "order": 3, "kind": "prompt_tokens", "min_tokens": 400, "route": "special"},
    {"name": "agents", "order": 4, "kind": "tools", "route": "special"},
    {"name": "pictures", "order": 5, "kind": "images", "route": "special"},
    {"name": "structured", "order": 6, "kind": "response_format", "route": "special"},
    {
        "name": "gold",
        "order": 7,
        "kind": "metadata",
        "metadata_key": "tier",
        "value": "gold",
        "route": "special",
    },
    {"name": "vip", "order": 8, "kind": "user", "value": "user-42", "route": "special"},
    {"name": "batch", "order": 9, "kind": "tag", "value": "batch", "route": "special"},
    {"name": "etl", "order": 10, "kind": "api_key", "value": "etl-jobs", "route": "special"},
]


def rules_balancer(setup, serving_name: str, rules: list[dict[str, Any]] = RULES, **fields: Any):
    router = setup.instance("router-llm", Behaviour(content="main"))
    routes = [
        {
            "name": "main",
            "intent": "Everything.",
            "instance": setup.instance("main-model"),
            "priority": 1,
            "is_default": True,
        },
        {
            "name": "special",
            "intent": "Matched by rules.",
            "instance": setup.instance("special-model"),
            "priority": 2,
        },
        {
            "name": "spare",
            "intent": "Another.",
            "instance": setup.instance("spare-model"),
            "priority": 3,
        },
    ]
    return make_balancer(
        serving_name=serving_name,
        routing_mode="intent_classifier",
        router_model=router,
        routes=routes,
        rules=rules,
        **fields,
    )


def post(
    gateway,
    secret: str,
    body: dict[str, Any],
    *,
    path: str = "/chat/completions",
    headers: dict[str, str] | None = None,
    timeout: float = 20,
) -> httpx.Response:
    return httpx.post(
        gateway.v1 + path,
        json=body,
        timeout=timeout,
        headers={"Authorization": f"Bearer {secret}", **(headers or {})},
    )


def chat(model: str, text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


CASES = [
    ("invoices", {"text": "Where is INV-2024?"}, {}, None),
    ("money", {"text": "I want a Refund."}, {}, None),
    ("huge", {"text": "word " * 450}, {}, None),
    ("agents", {"tools": [TOOL]}, {}, None),
    (
        "pictures",
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "what is it?"}, IMAGE]}
            ]
        },
        {},
        None,
    ),
    ("structured", {"response_format": {"type": "json_object"}}, {}, None),
    ("gold", {"metadata": {"tier": "gold"}}, {}, None),
    ("vip", {"user": "user-42"}, {}, None),
    ("batch", {}, {"x-balancer-tags": "nightly, Batch"}, None),
    ("etl", {}, {}, "etl-jobs"),
]


def test_each_rule_kind_sends_its_requests_to_its_route_and_others_to_the_classifier(setup):
    balancer = rules_balancer(setup, "rules-kinds")
    _, secret = make_api_key(name="web")
    _, etl_secret = make_api_key(name="etl-jobs")
    setup.gateway.wait_for_config()
    for name, extra, headers, key_name in CASES:
        body = chat("rules-kinds", extra.pop("text", "hello there"), **extra)
        response = post(setup.gateway, etl_secret if key_name else secret, body, headers=headers)
        assert response.status_code == 200, (name, response.text)
        assert (response.headers["x-balancer-route"], response.headers["x-balancer-decision"]) == (
            "special",
            f"rule:{name}",
        ), name
    router_calls = [r for r in setup.upstream.requests if r["model"] == "router-llm"]
    assert router_calls == []  # a matching rule spares the router model
    # Nothing matches: the classifier decides, as without rules.
    plain = post(
        setup.gateway,
        secret,
        chat(
            "rules-kinds",
            "word " * 50,
            metadata={"tier": "silver"},
            user="user-4",
            response_format={"type": "text"},
        ),
        headers={"x-balancer-tags": "batching"},
    )
    assert (plain.headers["x-balancer-route"], plain.headers["x-balancer-decision"]) == (
        "main",
        "classified",
    )
    events = wait_for_events(len(CASES) + 1, balancer=balancer)
    assert sorted(e.decision_reason for e in events) == sorted(
        ["classified", *(f"rule:{c[0]}" for c in CASES)]
    )


def test_the_first_matching_rule_wins_and_an_override_beats_every_rule(setup):
    rules = [
        {"name": "first", "order": 1, "kind": "keywords", "value": "refund", "route": "spare"},
        {"name": "second", "order": 2, "kind": "regex", "value": "refund", "route": "special"},
    ]
    rules_balancer(setup, "rules-order", rules)
    _, secret = make_api_key(allow_route_override=True)
    setup.gateway.wait_for_config()
    response = post(setup.gateway, secret, chat("rules-order", "refund please"))
    assert (response.headers["x-balancer-route"], response.headers["x-balancer-decision"]) == (
        "spare",
        "rule:first",
    )
    forced = post(
        setup.gateway,
        secret,
        chat("rules-order", "refund please"),
        headers={"X-Balancer-Route": "main"},
    )
    assert (forced.headers["x-balancer-route"], forced.headers["x-balancer-decision"]) == (
        "main",
        "override",
    )


def test_a_rule_whose_route_is_disabled_gives_way_to_the_next_rule_then_the_classifier(setup):
    rules = [
        {"name": "to-spare", "order": 1, "kind": "keywords", "value": "refund", "route": "spare"},
        {
            "name": "to-special",
            "order": 2,
            "kind": "keywords",
            "value": "refund",
            "route": "special",
        },
    ]
    balancer = rules_balancer(setup, "rules-disabled", rules)
    _, secret = make_api_key()
    # Switched off behind the shared rules' back (an admin edit of the route alone).
    Route.objects.filter(balancer=balancer, name="spare").update(enabled=False)
    from gateway.hotpath.config_version import config_version_bump

    config_version_bump()
    setup.gateway.wait_for_config()
    response = post(setup.gateway, secret, chat("rules-disabled", "refund please"))
    assert (response.headers["x-balancer-route"], response.headers["x-balancer-decision"]) == (
        "special",
        "rule:to-special",
    )
    Route.objects.filter(balancer=balancer, name="special").update(enabled=False)
    config_version_bump()
    setup.gateway.wait_for_config()
    response = post(setup.gateway, secret, chat("rules-disabled", "refund please"))
    assert (response.headers["x-balancer-route"], response.headers["x-balancer-decision"]) == (
        "main",
        "classified",
    )
    explained = post(
        setup.gateway, secret, chat("rules-disabled", "refund please"), path="/explain"
    ).json()
    assert explained["rule"] is None
    assert [(r["name"], r["outcome"]) for r in explained["rules"]] == [
        ("to-spare", "route_disabled"),
        ("to-special", "route_disabled"),
    ]


def test_explain_names_the_matching_rule_or_why_none_did(setup):
    rules_balancer(setup, "rules-explain")
    _, secret = make_api_key(name="web")
    setup.gateway.wait_for_config()
    explained = post(
        setup.gateway,
        secret,
        chat("rules-explain", "refund for INV-0001?", user="user-42"),
        path="/explain",
    ).json()
    assert (explained["route"], explained["reason"]) == ("special", "rule:invoices")
    assert explained["rule"] == {
        "name": "invoices",
        "kind": "regex",
        "route": "special",
        "value": r"INV-\d{4}",
    }
    outcomes = {r["name"]: r["outcome"] for r in explained["rules"]}
    assert (
        outcomes["invoices"] == "matched"
        and outcomes["money"] == "not_checked"
        and outcomes["vip"] == "not_checked"
    )
    none = post(setup.gateway, secret, chat("rules-explain", "hello"), path="/explain").json()
    assert none["rule"] is None and none["reason"] == "classified"
    assert {r["outcome"] for r in none["rules"]} == {"no_match"} and len(none["rules"]) == len(
        RULES
    )


def test_a_hostile_pattern_is_matched_in_linear_time_without_stalling_the_server(setup):
    # `(a+)+$` against 100,000 a's and a "!" would backtrack for longer than the age of the
    # universe in Python's re; RE2 answers at once, and /healthz keeps answering meanwhile.
    rules = [
        {"name": "hostile", "order": 1, "kind": "regex", "value": "(a+)+$", "route": "special"},
        {"name": "nested", "order": 2, "kind": "regex", "value": r"(x+x+)+y", "route": "special"},
    ]
    rules_balancer(setup, "rules-hostile", rules)
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    body = chat("rules-hostile", "a" * 100_000 + "!" + "x" * 50_000)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        hostile = pool.submit(post, setup.gateway, secret, body, timeout=10)
        health = pool.submit(httpx.get, setup.gateway.base_url + "/healthz", timeout=10)
        assert health.result().status_code == 200
        response = hostile.result()
    assert response.status_code == 200
    assert response.headers["x-balancer-decision"] == "classified"
    assert time.monotonic() - started < 10


def test_the_rule_decision_shows_on_the_board_and_the_usage_page(setup, admin_client):
    balancer = rules_balancer(setup, "rules-pages")
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    post(setup.gateway, secret, chat("rules-pages", "refund please"))
    wait_for_events(1, balancer=balancer)
    board = admin_client.get(f"/balancers/{balancer.name}/board/").content.decode()
    assert "rule money matched" in board  # the board says the decision in operator words
    usage = admin_client.get("/usage/").content.decode()
    assert "rule:money" in usage
