"""Messages, Responses and completions requests are routed like the chat request they become:
the same decision on the same prompt, and /v1/explain says so for each door's body."""

from __future__ import annotations

import httpx
import pytest

from balancers.demo import seed_demo

pytestmark = pytest.mark.django_db(transaction=True)

HARD = "Resolve a multi-step refund dispute."
EASY = "Summarise this support reply."


def test_every_door_takes_the_route_chat_takes_and_explain_reads_each_doors_body(setup):
    seed_demo()
    secret = setup.client().api_key
    auth = {"Authorization": f"Bearer {secret}"}
    bodies = {
        "chat": lambda text: {
            "model": "support-balancer",
            "messages": [{"role": "user", "content": text}],
        },
        "messages": lambda text: {
            "model": "support-balancer",
            "max_tokens": 20,
            "system": "Be kind.",
            "messages": [{"role": "user", "content": text}],
        },
        "responses": lambda text: {
            "model": "support-balancer",
            "instructions": "Be kind.",
            "store": False,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
        },
        "completions": lambda text: {"model": "support-balancer", "prompt": text},
    }
    paths = {
        "chat": "/chat/completions",
        "messages": "/messages",
        "responses": "/responses",
        "completions": "/completions",
    }
    for api, body in bodies.items():
        for text, route in ((HARD, "reasoning"), (EASY, "efficient")):
            explained = httpx.post(
                setup.gateway.v1 + "/explain", params={"api": api}, headers=auth, json=body(text)
            )
            assert explained.json()["route"] == route, (api, text)
            served = httpx.post(
                setup.gateway.v1 + paths[api], headers=auth, json=body(text), timeout=20
            )
            assert served.status_code == 200 and served.headers["x-balancer-route"] == route, (
                api,
                text,
            )
    wrong = httpx.post(
        setup.gateway.v1 + "/explain",
        params={"api": "messages"},
        headers=auth,
        json={"model": "support-balancer", "messages": [{"role": "user", "content": "x"}]},
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "max_tokens"
