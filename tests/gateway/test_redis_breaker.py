"""The circuit breaker around Redis: skip it for a back-off after failures, log state changes
once."""

from __future__ import annotations

import logging

import pytest
import redis

from gateway.hotpath.redis_client import RedisBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gate(clock: Clock) -> RedisBreaker:
    return RedisBreaker(retry_seconds=2.0, summary_seconds=60.0, clock=clock)


REFUSED = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_one_late_answer_does_not_open_it(gate, caplog):
    gate.failed(TimeoutError())
    gate.succeeded()
    gate.failed(TimeoutError())
    assert gate.allow() and not gate.is_open
    assert warnings(caplog) == []


def test_two_failures_open_it_for_the_back_off_then_one_trial_at_a_time(gate, clock, caplog):
    gate.failed(REFUSED)
    gate.failed(REFUSED)
    assert gate.is_open
    assert warnings(caplog) == [
        "Redis unavailable: ConnectionError: Error 111 connecting to 127.0.0.1:6390. Connection "
        "refused., using local state (retrying every 2 s)"
    ]
    assert not any(gate.allow() for _ in range(100))
    clock.now += 2.0
    assert gate.allow()  # the trial
    assert not gate.allow()  # everyone else while it runs
    gate.failed(REFUSED)
    assert not gate.allow()
    clock.now += 2.0
    assert gate.allow()
    gate.succeeded()
    assert not gate.is_open and gate.allow()
    assert warnings(caplog)[1:] == ["Redis back after 4.0 s (102 calls used local state meanwhile)"]


def test_a_long_outage_is_summarised_periodically_not_per_call(gate, clock, caplog):
    gate.failed(REFUSED)
    gate.failed(REFUSED)
    for _ in range(600):  # ten minutes of calls, one every second, retried every two
        clock.now += 1.0
        if gate.allow():
            gate.failed(REFUSED)
    lines = warnings(caplog)
    assert len(lines) == 11  # the state change, then one summary a minute
    assert lines[1].startswith("Redis still unavailable after 60 s: ConnectionError")


def test_a_cancelled_trial_frees_the_slot(gate, clock):
    gate.failed(REFUSED)
    gate.failed(REFUSED)
    clock.now += 2.0
    assert gate.allow()
    gate.abandoned()
    assert gate.allow()
