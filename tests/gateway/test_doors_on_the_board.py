"""The board draws a /v1/messages and a /v1/responses request like a chat request: each arrives on
the balancer's live stream (a real uvicorn process, Redis, a signed-in board), in the lane of the
route that served it, with its endpoint named."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import anthropic
import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from tests.factories import make_api_key, make_balancer
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def signed_in_cookie() -> dict[str, str]:
    user = get_user_model().objects.create_user("board-watcher", password="x" * 20, is_staff=True)
    client = Client()
    client.force_login(user)
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


def read_requests(url: str, cookies: dict[str, str], into: queue.Queue, opened: threading.Event):
    """Every request event the board's stream sends, until the stream closes."""
    with httpx.stream("GET", url, cookies=cookies, timeout=httpx.Timeout(5, read=30)) as stream:
        assert stream.status_code == 200, stream.status_code
        kind = ""
        for line in stream.iter_lines():
            opened.set()
            if line.startswith("event:"):
                kind = line.partition(":")[2].strip()
            elif line.startswith("data:") and kind == "requests":
                for event in json.loads(line.partition(":")[2])["events"]:
                    into.put(event)


def test_a_messages_and_a_responses_request_are_drawn_on_the_board_like_chat(setup) -> None:
    balancer = make_balancer(
        name="doors",
        serving_name="doors",
        routes=[
            {
                "name": "main",
                "intent": "All.",
                "instance": (instance := setup.instance("oa-doors", Behaviour(content="Drawn."))),
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    opened = threading.Event()
    url = f"{setup.gateway.base_url}/balancers/{balancer.name}/board/events/"
    threading.Thread(
        target=read_requests, args=(url, signed_in_cookie(), events, opened), daemon=True
    ).start()
    assert opened.wait(10), "the board's stream never opened"

    sent_at = time.monotonic()
    claude = anthropic.Anthropic(base_url=setup.gateway.base_url, api_key=secret, max_retries=0)
    message = claude.messages.with_raw_response.create(
        model="doors", max_tokens=32, messages=[{"role": "user", "content": "Hello, board."}]
    )
    response = setup.client(secret).responses.with_raw_response.create(
        model="doors", input="Hello again, board."
    )
    sent = {
        message.headers["x-request-id"]: "messages",
        response.headers["x-request-id"]: "responses",
    }

    drawn: dict[str, dict[str, Any]] = {}
    while set(sent) - set(drawn):
        left = 15 - (time.monotonic() - sent_at)
        assert left > 0, f"not drawn: {set(sent) - set(drawn)}; drawn: {drawn}"
        try:
            event = events.get(timeout=left)
        except queue.Empty:
            continue
        drawn[event["id"]] = event
    for request_id, endpoint in sent.items():
        event = drawn[request_id]
        assert (event["endpoint"], event["route"], event["instance"], event["model"]) == (
            endpoint,
            "main",
            instance.instance_id,
            "oa-doors",
        )
        assert event["status"] == 200
        assert event["tokens"] > 0 and event["decision"]
