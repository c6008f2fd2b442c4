"""A failing background job logs its state changes, not every attempt (gateway.outages)."""

from __future__ import annotations

import logging

import pytest

from gateway.outages import OutageLog

logger = logging.getLogger("tests.outages")


def test_a_long_outage_logs_its_start_a_summary_a_minute_and_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = OutageLog("config refresh", logger, summary_seconds=60, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="tests.outages"):
        log.succeeded()  # working: nothing to say
        for _ in range(300):  # every 0.5 s for 150 s
            log.failed(ConnectionError("connection refused\nDETAIL: more"))
            now[0] += 0.5
        log.succeeded()
        log.succeeded()
    assert [record.getMessage() for record in caplog.records] == [
        "config refresh failing: ConnectionError: connection refused",
        "config refresh still failing after 60 s (121 attempts): ConnectionError: connection "
        "refused",
        "config refresh still failing after 120 s (241 attempts): ConnectionError: connection "
        "refused",
        "config refresh recovered after 150.0 s (300 failed attempts)",
    ]
    assert not log.failing


def test_an_embedded_job_that_fails_logs_when_it_starts_and_stops_failing(settings, caplog) -> None:
    import asyncio

    from gateway.hotpath.runtime import EmbeddedJob

    settings.REDIS_URL = ""
    settings.GATEWAY_ROLLUP_SECONDS = 0
    outcomes = [ConnectionError("connection refused")] * 3 + [None]

    async def rollup() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    job = EmbeddedJob(rollup, "GATEWAY_ROLLUP_SECONDS")
    with caplog.at_level(logging.INFO, logger="gateway.hotpath.runtime"):
        for _ in range(4):
            asyncio.run(job())  # never raises into the gateway's tick
    messages = [
        record.getMessage() for record in caplog.records if record.name == "gateway.hotpath.runtime"
    ]
    assert len(messages) == 2, messages
    assert messages[0] == "embedded job rollup failing: ConnectionError: connection refused"
    assert messages[1].startswith("embedded job rollup recovered after")
