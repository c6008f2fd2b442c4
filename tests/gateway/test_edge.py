"""The /v1 edge, through the real server: every answer OpenAI-shaped, every request recorded."""

from __future__ import annotations

import socket
import time
import uuid
from decimal import Decimal

import httpx
import pytest

from gateway.models import UsageEvent, UsageHourly
from gateway.reporting.rollups import rollup_usage
from tests.factories import make_api_key, make_balancer, make_instance

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "hello"}]


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def wait_for_request_ids(ids: list[str], timeout: float = 5.0) -> dict[str, UsageEvent]:
    deadline = time.monotonic() + timeout
    while True:
        events = {e.request_id: e for e in UsageEvent.objects.filter(request_id__in=ids)}
        if len(events) >= len(ids) or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def raw_request(port: int, head: bytes, *, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send bytes as they are on a raw socket; (everything the server answered, seconds until its
    first byte)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.monotonic()
        sock.sendall(head)
        first = sock.recv(65536)
        elapsed = time.monotonic() - started
        data = first
        while True:  # the server closes the connection after the answer
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data, elapsed


def test_options_with_a_valid_key_answers_204_with_the_allowed_methods(gateway):
    _, secret = make_api_key()
    gateway.wait_for_config()
    response = httpx.options(
        gateway.v1 + "/chat/completions", headers={"Authorization": f"Bearer {secret}"}
    )
    assert response.status_code == 204, response.text
    assert response.headers["allow"] == "POST, OPTIONS"
    assert httpx.options(gateway.v1 + "/models").headers["allow"] == "GET, HEAD, OPTIONS"


def test_an_unknown_v1_path_is_an_openai_shaped_404_naming_the_endpoints(gateway):
    _, secret = make_api_key()
    gateway.wait_for_config()
    for path in ("/v1/chat/completion", "/v1/responses/x/y", "/v1", "/v1/"):
        response = httpx.post(
            gateway.base_url + path, headers={"Authorization": f"Bearer {secret}"}, json={}
        )
        error = assert_openai_error(response, 404, "unknown_endpoint")
        assert (
            "POST /v1/chat/completions" in error["message"] and "GET /v1/models" in error["message"]
        )


def test_wrong_methods_get_an_openai_shaped_405_with_or_without_a_key(gateway):
    _, secret = make_api_key()
    gateway.wait_for_config()
    for headers in ({"Authorization": f"Bearer {secret}"}, {}):
        get = httpx.get(gateway.v1 + "/chat/completions", headers=headers)
        assert_openai_error(get, 405, "method_not_allowed")
        assert get.headers["allow"] == "POST, OPTIONS"
        delete = httpx.delete(gateway.v1 + "/models", headers=headers)
        assert_openai_error(delete, 405, "method_not_allowed")
        assert delete.headers["allow"] == "GET, HEAD, OPTIONS"


def test_a_10_gb_content_length_is_refused_at_once_without_the_body(gateway):
    _, secret = make_api_key()
    gateway.wait_for_config()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        f"{secret}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {10 * 1024**3}\r\n\r\n"
    ).encode()
    answer, elapsed = raw_request(gateway.port, head)  # not one byte of the body is sent
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer[:300]
    assert elapsed < 1.0
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    assert b'"code":"request_too_large"' in body


def test_a_chunked_body_past_the_limit_is_refused_before_it_ends(gateway):
    _, secret = make_api_key()
    gateway.wait_for_config()
    chunks = [b"x" * 65536] * 4 + [b"y" * 16]
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        f"{secret}\r\n"
        f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    # 16 bytes past a 256 KiB limit (LiveGateway's GATEWAY_MAX_BODY_BYTES), and no last chunk: the
    # answer can only come from the gateway refusing to read on.
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    answer, _ = raw_request(gateway.port, head + body)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]


def test_every_request_leaves_one_usage_event_whatever_its_answer(gateway):
    limited_instance = make_instance()
    allowed = make_balancer(
        serving_name="edge-allowed",
        routes=[
            {
                "name": "main",
                "intent": "x",
                "instance": limited_instance,
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    make_balancer(serving_name="edge-other")
    limited, secret = make_api_key(balancers=[allowed], rate_limit_per_minute=3)
    gateway.wait_for_config()
    auth = {"Authorization": f"Bearer {secret}"}
    chat = gateway.v1 + "/chat/completions"
    body = {"model": "edge-allowed", "messages": MESSAGES}
    sent: dict[str, int] = {}

    def send(
        method: str, url: str, headers: dict[str, str] | None = None, **kwargs: object
    ) -> httpx.Response:
        request_id = f"edge-{uuid.uuid4().hex[:16]}"
        response = httpx.request(
            method, url, headers={**(headers or {}), "X-Request-Id": request_id}, **kwargs
        )
        assert response.headers["x-request-id"] == request_id
        sent[request_id] = response.status_code
        return response

    assert_openai_error(send("POST", chat, {"Authorization": "Bearer sb-wrong"}, json=body), 401)
    assert_openai_error(send("POST", chat, json=body), 401)
    assert_openai_error(send("POST", chat, auth, content=b"{not json"), 400)
    assert_openai_error(
        send("POST", chat, auth, json={"model": "edge-other", "messages": MESSAGES}), 403
    )
    assert_openai_error(
        send("POST", chat, auth, json={"model": "edge-missing\x00", "messages": MESSAGES}), 404
    )
    assert_openai_error(send("POST", gateway.v1 + "/nowhere", auth, json=body), 404)
    assert_openai_error(send("GET", chat, auth), 405)
    # The 413 is answered from the header: send the header alone (an unread body would be reset).
    too_large_id = f"edge-{uuid.uuid4().hex[:16]}"
    answer, _ = raw_request(
        gateway.port,
        (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            f"{secret}\r\n"
            f"X-Request-Id: {too_large_id}\r\nContent-Length: {300 * 1024}\r\n\r\n"
        ).encode(),
    )
    assert (
        answer.startswith(b"HTTP/1.1 413 ")
        and f"x-request-id: {too_large_id}".encode() in answer.lower()
    )
    sent[too_large_id] = 413
    assert_openai_error(send("POST", chat, {**auth, "X-Balancer-Route": "main"}, json=body), 403)
    for _ in range(5):  # 3 within the key's limit, then 429s
        send("POST", chat, auth, json=body)
    send("GET", gateway.v1 + "/models", auth)
    assert sorted(sent.values()).count(429) >= 1 and sorted(sent.values()).count(200) >= 2

    events = wait_for_request_ids(list(sent))
    assert len(events) == len(sent), {
        rid: status for rid, status in sent.items() if rid not in events
    }
    assert {rid: e.status_code for rid, e in events.items()} == sent
    by_status = {e.status_code: e for e in events.values()}
    assert (
        by_status[413].error_type == "request_too_large" and by_status[413].api_key_id == limited.pk
    )
    assert (
        by_status[429].error_type == "rate_limit_exceeded"
        and by_status[429].balancer_id == allowed.pk
    )
    assert by_status[405].error_type == "method_not_allowed" and by_status[405].endpoint == "chat"
    missing = [e for e in events.values() if e.error_type == "model_not_found"]
    assert [(e.serving_name, e.balancer_id, e.api_key_id) for e in missing] == [
        ("edge-missing", None, limited.pk)
    ]
    unknown_path = [e for e in events.values() if e.error_type == "unknown_endpoint"]
    assert [e.endpoint for e in unknown_path] == ["unknown"]
    assert {e.api_key_id for e in events.values() if e.status_code == 401} == {None}
    assert all(
        e.cost_usd == 0 and e.prompt_tokens == 0 for e in events.values() if e.status_code >= 400
    )

    # The rollups count them as requests and errors, and the refusals cost nothing.
    rollup_usage()
    hours = UsageHourly.objects.filter(api_key_id=limited.pk)
    key_events = [e for e in events.values() if e.api_key_id == limited.pk]
    assert sum(h.requests for h in hours) == len(key_events)
    assert sum(h.errors for h in hours) == sum(1 for e in key_events if e.status_code >= 400)
    assert sum((h.cost_usd for h in hours), Decimal(0)) == sum(
        (e.cost_usd for e in key_events), Decimal(0)
    )
