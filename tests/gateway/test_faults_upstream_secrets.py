"""An upstream that echoes our credential: the client, the logs and the usage events never see
it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from gateway.models import UsageEvent
from tests.factories import make_api_key
from tests.gateway.hostile_upstream import Script
from tests.gateway.test_faults_upstream_answers import hostile_instance, one_route, two_routes
from tests.gateway.test_openai_sdk import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "hello"}]


def secret_of(instance) -> str:
    return instance.api_key


def leaks(text: str, secret: str) -> bool:
    """The secret, or any 12-character piece of it, appears in `text`."""
    return any(secret[i : i + 12] in text for i in range(len(secret) - 11))


def event_text(event: UsageEvent) -> str:
    return orjson.dumps(
        {f.name: str(getattr(event, f.name)) for f in UsageEvent._meta.fields}
    ).decode()


def post(setup, body: dict) -> httpx.Response:
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    return httpx.post(
        setup.gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json=body,
        timeout=20,
    )


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_upstream_error_echoing_our_credential_reaches_the_client_scrubbed(
    setup, hostile_upstream, provider
):
    echo = hostile_instance(
        hostile_upstream,
        f"echo-400-{provider}",
        Script(status=400, echo_credential=True),
        provider=provider,
    )
    balancer = one_route(echo, f"echo-400-{provider}")
    response = post(setup, {"model": balancer.serving_name, "messages": HELLO})
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "[redacted]" in error["message"]
    assert not leaks(response.text, secret_of(echo))
    [event] = wait_for_events(1, balancer=balancer)
    assert not leaks(event_text(event), secret_of(echo))
    assert not leaks(setup.gateway.log(), secret_of(echo))


def test_echoes_from_a_refusing_instance_and_its_fallback_leak_nowhere(setup, hostile_upstream):
    first = hostile_instance(hostile_upstream, "echo-401", Script(status=401, echo_credential=True))
    second = hostile_instance(
        hostile_upstream, "echo-400", Script(status=400, echo_credential=True)
    )
    balancer = two_routes(first, second, "echo-all")
    response = post(setup, {"model": "echo-all", "messages": HELLO})
    assert (
        response.status_code == 400
        and response.headers["x-balancer-instance"] == second.instance_id
    )
    assert "[redacted]" in response.json()["error"]["message"]
    [event] = wait_for_events(1, balancer=balancer)
    assert [a["outcome"] for a in event.attempt_log] == ["status", "client_error"]
    for instance in (first, second):
        assert not leaks(response.text, secret_of(instance))
        assert not leaks(event_text(event), secret_of(instance))
        assert not leaks(setup.gateway.log(), secret_of(instance))


def test_a_stream_event_echoing_our_credential_is_scrubbed(setup, hostile_upstream):
    echo = hostile_instance(hostile_upstream, "echo-stream", Script(stream="error_echo"))
    balancer = one_route(echo, "echo-stream")
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    with httpx.stream(
        "POST",
        setup.gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "echo-stream", "messages": HELLO, "stream": True},
        timeout=20,
    ) as response:
        text = response.read().decode()
    assert "[redacted]" in text
    assert not leaks(text, secret_of(echo))
    [event] = wait_for_events(1, balancer=balancer)
    assert not leaks(event_text(event), secret_of(echo))


def test_log_records_and_usage_records_carry_no_upstream_secret(
    hostile_upstream, transactional_db, caplog, monkeypatch
):
    """In process, so that caplog sees every record the gateway writes while it handles the
    echoes."""
    from gateway.hotpath import proxy as proxy_module
    from gateway.hotpath.config_version import config_version_from_db
    from gateway.hotpath.snapshot import KeySpec, build_config

    refused = hostile_instance(
        hostile_upstream, "echo-log-401", Script(status=401, echo_credential=True)
    )
    echo = hostile_instance(
        hostile_upstream, "echo-log-400", Script(status=400, echo_credential=True)
    )
    broken = hostile_instance(hostile_upstream, "echo-log-stream", Script(stream="error_echo"))
    two_routes(refused, echo, "echo-log")
    one_route(broken, "echo-log-stream")
    config = build_config(config_version_from_db())
    recorded: list = []
    monkeypatch.setattr(proxy_module.recorder, "record", recorded.append)
    caplog.set_level(logging.DEBUG)

    async def call(model: str, stream: bool) -> bytes:
        request = proxy_module.ClientRequest(
            endpoint="chat",
            payload={"model": model, "messages": HELLO, "stream": stream},
            key=KeySpec(pk=1, name="test", allowed=None, rate_limit_per_minute=None),
            request_id=f"log-{model}",
            route_override=None,
            started=time.monotonic(),
            created_at=datetime.now(UTC),
        )
        response = await proxy_module.proxy(request, config)
        if not stream:
            return response.content
        return b"".join([part async for part in response])

    answer = asyncio.run(call("echo-log", False))
    streamed = asyncio.run(call("echo-log-stream", True))
    assert b"[redacted]" in answer and b"[redacted]" in streamed
    assert (
        "attempt on" in caplog.text and "[redacted]" in caplog.text
    )  # the upstream's message was logged...
    records = orjson.dumps([dataclasses.asdict(r) for r in recorded], default=str).decode()
    for instance in (refused, echo, broken):
        assert not leaks(caplog.text, secret_of(instance))  # ...scrubbed
        assert not leaks(records, secret_of(instance))
        assert not leaks((answer + streamed).decode(), secret_of(instance))
