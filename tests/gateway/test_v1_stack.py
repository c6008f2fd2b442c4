"""One /v1 stack: the DRF views, behind the lean ASGI handler, with the site's host check and
security headers applied, and no second set of plain views."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.live_server import LiveGateway


@pytest.fixture(scope="module")
def gateway(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveGateway]:
    server = LiveGateway(extra_env={"ALLOWED_HOSTS": "127.0.0.1,gateway.example.com"})
    yield server
    server.stop()


def test_an_unknown_host_is_refused_in_the_openai_shape(gateway: LiveGateway) -> None:
    answer = httpx.get(gateway.v1 + "/models", headers={"Host": "evil.example.net"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "disallowed_host" and "evil.example.net" in error["message"]


def test_an_allowed_host_reaches_the_views(gateway: LiveGateway) -> None:
    answer = httpx.get(gateway.v1 + "/models", headers={"Host": "gateway.example.com"})
    assert answer.status_code == 401  # no key: the view ran


def test_v1_answers_carry_the_security_headers(gateway: LiveGateway) -> None:
    answer = httpx.get(gateway.v1 + "/models")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "same-origin"
    assert answer.headers["cross-origin-opener-policy"] == "same-origin"


def test_there_is_no_second_plain_stack(gateway: LiveGateway) -> None:
    answer = httpx.post(gateway.base_url + "/plain/v1/chat/completions", json={})
    assert answer.status_code == 404
    assert "html" in answer.headers["content-type"]  # a page path, not a gateway endpoint
