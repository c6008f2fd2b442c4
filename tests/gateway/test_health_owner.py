"""One owner of the health tracker: the event loop serving /v1. Pages and probes in other
threads read the copy it publishes and hand it states; they never touch the tracker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from gateway.hotpath import runtime
from gateway.hotpath.redis_client import redis_sync
from gateway.hotpath.runtime import (
    HEALTH_KEY,
    health_snapshot,
    mark_unavailable,
    routing,
    sync_health,
)

TRACKER_METHODS = (
    "is_eligible",
    "state",
    "success_rate",
    "least_recently_failed",
    "begin_attempt",
    "release",
    "record_success",
    "record_failure",
    "apply_remote",
    "reset",
    "known",
)


@pytest.fixture
def tracker_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Every call on the process's health tracker, with the thread that made it."""
    calls: list[tuple[str, int]] = []
    tracker = routing.health

    def recording(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, threading.get_ident()))
            return method(*args, **kwargs)

        return call

    for name in TRACKER_METHODS:
        monkeypatch.setattr(tracker, name, recording(name, getattr(tracker, name)))
    yield calls


class Owner(threading.Thread):
    """The gateway's event loop in miniature: requests recording outcomes, and the sync tick."""

    def __init__(self, pks: list[int], seconds: float) -> None:
        super().__init__(name="owner")
        self.pks, self.seconds = pks, seconds
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:  # reported by the test
            self.error = exc

    async def serve(self) -> None:
        deadline = time.monotonic() + self.seconds
        i = 0
        while time.monotonic() < deadline:
            pk = self.pks[i % len(self.pks)]
            now = routing.clock()
            if i % 3:
                routing.health.record_failure(pk, now)  # trips, then fails while cooling
            else:
                routing.health.record_success(pk, now)
            if i % 50 == 0:
                routing.health.reset(pk)  # an operator marks it healthy
            if i % 20 == 0:
                await sync_health()
            i += 1
            await asyncio.sleep(0)
        await sync_health()


def test_pages_and_probes_in_other_threads_never_touch_the_tracker(tracker_calls):
    pks = [910_001, 910_002, 910_003]
    remote = 910_004  # cooled down by another process, known only through Redis
    until = time.time() + 60
    redis_sync().hset(
        HEALTH_KEY,
        str(remote),
        orjson.dumps(
            {
                "cooldown_until": until,
                "trips": 2,
                "last_failure_at": time.time(),
                "status": "cooling",
                "at": time.time(),
            }
        ),
    )
    owner = Owner(pks, seconds=1.5)
    errors: list[BaseException] = []
    seen: list[dict[int, Any]] = []

    def page() -> None:
        try:
            while owner.is_alive():
                seen.append(health_snapshot([*pks, remote]))
        except BaseException as exc:
            errors.append(exc)

    def probe() -> None:
        try:
            while owner.is_alive():
                mark_unavailable(910_005, seconds=30)
                time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    owner.start()
    others = [threading.Thread(target=page) for _ in range(3)] + [threading.Thread(target=probe)]
    for thread in others:
        thread.start()
    owner.join(10)
    for thread in others:
        thread.join(10)
    assert owner.error is None and errors == []
    assert seen and all(snapshot[remote].status == "cooling" for snapshot in seen)
    assert {ident for _, ident in tracker_calls} == {owner.ident}
    # What the probe thread posted reached the tracker through its owner.
    assert ("apply_remote", owner.ident) in tracker_calls
    assert routing.health.state(910_005, time.time()).status == "cooling"


def test_pages_see_a_transition_as_soon_as_the_owner_makes_it():
    pk = 910_101

    async def trip() -> None:
        for _ in range(3):
            routing.health.record_failure(pk, routing.clock())

    asyncio.run(trip())  # no sync tick: Redis does not know yet
    view = health_snapshot([pk])[pk]
    assert view.status == "cooling" and view.trips == 1
    assert view.cooldown_until is not None and view.cooldown_until > time.time()


def test_a_published_cooldown_reads_as_half_open_once_it_is_over():
    pk = 910_201
    runtime._publish({pk: runtime._UNKNOWN.merged(time.time() + 0.05, 1, time.time(), time.time())})
    assert health_snapshot([pk])[pk].status == "cooling"
    time.sleep(0.1)
    assert health_snapshot([pk])[pk].status == "half_open"
