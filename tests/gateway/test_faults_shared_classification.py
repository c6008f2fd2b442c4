"""Identical LLM classifications share one call: one client leaving must not fail the others."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from tests.factories import make_api_key
from tests.gateway.test_routing_decisions import classifier_balancer
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = [{"role": "user", "content": "Prove that the square root of two is irrational."}]


def test_a_client_leaving_does_not_cancel_a_classification_others_wait_for(setup):
    classifier_balancer(
        setup,
        Behaviour(content="reasoning", delay=1.5),
        serving_name="cls-shared",
        classifier_timeout=5,
    )
    _, secret = make_api_key()
    setup.gateway.wait_for_config()

    def ask(timeout: float) -> httpx.Response:
        return httpx.post(
            setup.gateway.v1 + "/chat/completions",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": "cls-shared", "messages": PROMPT},
            timeout=timeout,
        )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        leaving = pool.submit(ask, 0.5)  # gives up (disconnects) while the router model thinks
        time.sleep(0.2)
        staying = pool.submit(ask, 10)
        with pytest.raises(httpx.TimeoutException):
            leaving.result()
        response = staying.result()
    assert response.status_code == 200, response.text
    assert response.headers["x-balancer-route"] == "reasoning"
    assert setup.upstream.count("router-llm") == 1  # one shared classification, run to its end
    # ...whose result was cached: the same prompt again needs no router call.
    again = ask(10)
    assert (
        again.headers["x-balancer-route"] == "reasoning" and setup.upstream.count("router-llm") == 1
    )


def test_a_classification_finishes_for_the_cache_when_every_waiter_left(setup):
    classifier_balancer(
        setup,
        Behaviour(content="reasoning", delay=1.0),
        serving_name="cls-alone",
        classifier_timeout=5,
    )
    _, secret = make_api_key()
    setup.gateway.wait_for_config()

    def ask(timeout: float) -> httpx.Response:
        return httpx.post(
            setup.gateway.v1 + "/chat/completions",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": "cls-alone", "messages": PROMPT},
            timeout=timeout,
        )

    with pytest.raises(httpx.TimeoutException):
        ask(0.3)
    time.sleep(1.2)
    response = ask(10)
    assert response.headers["x-balancer-route"] == "reasoning"
    assert setup.upstream.count("router-llm") == 1
