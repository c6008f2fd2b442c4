"""The built-in router is fitted once per configuration content and shared through Redis.

A worker loads the model another fitted for the same routes instead of fitting it; it waits
for a worker that claimed the fit; a corrupt or foreign blob is refused and the worker fits
locally, then stores its own. Against the test Redis (this process plays each worker).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from gateway.hotpath import decision, router_share
from gateway.hotpath.snapshot import build_config
from gateway.router_models.fitted import FittedIntentClassifier, fit_fingerprint
from gateway.router_models.local import RouteIntent
from tests.factories import make_api_key, make_balancer, make_instance, make_router_model

COOKING = (
    "How long should I boil an egg?",
    "Give me a recipe for tomato soup.",
    "Roast a chicken?",
)
FOOTBALL = ("Who won the last World Cup?", "Explain the offside rule.", "How many players?")
PROMPT = "What is the best way to bake bread at home?"


@pytest.fixture
def routes() -> list[RouteIntent]:
    # Unique per test run, so no other run's stored model is found.
    tag = f"{time.time_ns()}"
    return [
        RouteIntent("cooking", f"Cooking {tag}.", COOKING),
        RouteIntent("football", f"Football {tag}.", FOOTBALL),
    ]


@pytest.fixture
def store(routes: list[RouteIntent]) -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    key = router_share.KEY_PREFIX + fit_fingerprint(routes)
    router_share.counts.clear()
    yield client, key
    client.delete(key, key + ":fitting")


def test_a_model_fitted_by_one_worker_is_loaded_by_the_next(routes, store):
    client, key = store
    fingerprint = fit_fingerprint(routes)
    first = router_share.shared_router(routes, fingerprint)
    assert router_share.counts == {"fitted": 1}
    assert client.ttl(key) > 0 and not client.exists(key + ":fitting")
    second = router_share.shared_router(routes, fingerprint)
    assert router_share.counts == {"fitted": 1, "loaded": 1}  # no second fit
    assert second is not first
    assert second.classify(PROMPT) == first.classify(PROMPT)


def test_a_worker_waits_for_the_one_that_claimed_the_fit(routes, store):
    client, key = store
    client.set(key + ":fitting", 1, px=int(router_share.CLAIM_SECONDS * 1000))
    theirs = FittedIntentClassifier(routes)  # the other worker's fit

    def other_worker_stores() -> None:
        time.sleep(0.3)
        client.set(key, theirs.to_blob(router_share.blob_key(settings.SECRET_KEY)))
        client.delete(key + ":fitting")

    thread = threading.Thread(target=other_worker_stores)
    thread.start()
    started = time.monotonic()
    model = router_share.shared_router(routes, fit_fingerprint(routes))
    waited = time.monotonic() - started
    thread.join()
    assert router_share.counts == {"loaded": 1}, router_share.counts
    assert 0.25 < waited < router_share.CLAIM_SECONDS
    assert model.classify(PROMPT) == theirs.classify(PROMPT)


@pytest.mark.parametrize(
    "stored",
    [
        b"garbage",
        b"SBRM\x01" + b"\0" * 100,
        "foreign",  # a well-formed blob signed with another key
        "truncated",
    ],
)
def test_a_corrupt_or_foreign_blob_is_refused_and_the_worker_fits_locally(routes, store, stored):
    client, key = store
    if stored == "foreign":
        stored = FittedIntentClassifier(routes).to_blob(b"not this deployment's key")
    elif stored == "truncated":
        stored = FittedIntentClassifier(routes).to_blob(router_share.blob_key(settings.SECRET_KEY))[
            :-100
        ]
    client.set(key, stored)
    model = router_share.shared_router(routes, fit_fingerprint(routes))
    assert router_share.counts == {"refused": 1, "fitted": 1}
    assert model.classify("How do I make pancakes fluffy?").route == "cooking"
    # Its own fit replaced the bad blob: the next worker loads it.
    router_share.shared_router(routes, fit_fingerprint(routes))
    assert router_share.counts == {"refused": 1, "fitted": 1, "loaded": 1}


def test_without_redis_every_worker_fits_for_itself(routes, settings):
    settings.REDIS_URL = ""
    router_share.counts.clear()
    router_share.shared_router(routes, fit_fingerprint(routes))
    assert router_share.counts == {"fitted": 1}


@pytest.mark.django_db
def test_a_change_elsewhere_in_the_configuration_refits_no_router():
    balancer = make_balancer(
        routing_mode="intent_classifier",
        router_model=make_router_model(),
        routes=[
            {
                "name": "cooking",
                "intent": f"Cooking {time.time_ns()}.",
                "instance": make_instance(),
                "is_default": True,
                "examples": list(COOKING),
            },
            {
                "name": "football",
                "intent": "Football.",
                "instance": make_instance(),
                "priority": 2,
                "examples": list(FOOTBALL),
            },
        ],
    )
    router_share.counts.clear()
    build_config(2001)
    make_api_key()  # a configuration change that leaves the balancer's routes as they were
    build_config(2002)
    assert (
        decision._local_models[(2002, balancer.pk)] is decision._local_models[(2001, balancer.pk)]
    )
    assert router_share.counts == {"fitted": 1}
