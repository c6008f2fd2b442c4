"""Usage events: off the hot path, nothing lost on a clean shutdown or a database outage."""

from __future__ import annotations

import signal
from datetime import UTC, datetime

import openai
import pytest
from django.db import connections

from gateway.hotpath.usage import UsageRecord, UsageRecorder
from gateway.models import UsageEvent
from tests.factories import make_balancer
from tests.live_server import LiveGateway

pytestmark = pytest.mark.django_db(transaction=True)


def record(n: int) -> UsageRecord:
    return UsageRecord(
        created_at=datetime.now(UTC),
        request_id=f"req-{n}",
        endpoint="chat",
        status_code=200,
        latency_ms=1.0,
    )


def test_no_event_is_lost_on_a_clean_shutdown(setup):
    inst = setup.instance("shutdown-up")
    make_balancer(
        serving_name="bye",
        routes=[{"name": "m", "intent": "x", "instance": inst, "priority": 1, "is_default": True}],
    )
    # A server of its own, flushing rarely, so the events are still buffered when it stops.
    server = LiveGateway(extra_env={"GATEWAY_USAGE_FLUSH_SECONDS": "60"})
    try:
        server.wait_for_config()
        from tests.factories import make_api_key

        _, secret = make_api_key()
        server.wait_for_config()
        client = openai.OpenAI(base_url=server.v1, api_key=secret, max_retries=0)
        for _ in range(25):
            client.chat.completions.create(model="bye", messages=[{"role": "user", "content": "x"}])
        assert UsageEvent.objects.filter(serving_name="bye").count() == 0
    finally:
        server.stop(signal.SIGTERM)
    assert UsageEvent.objects.filter(serving_name="bye").count() == 25


def test_events_wait_in_the_buffer_while_the_database_is_unreachable():
    recorder = UsageRecorder(max_buffer=100, flush_seconds=60)
    for n in range(10):
        recorder._buffer.append(record(n))
    settings_dict = connections["default"].settings_dict
    real_port = settings_dict.get("PORT")
    connections["default"].close()
    settings_dict["PORT"] = "1"  # nothing listens there: a real refused connection
    try:
        assert recorder.flush() is None
        assert recorder.pending == 10
    finally:
        connections["default"].close()
        settings_dict["PORT"] = real_port
    assert recorder.flush() == 10
    assert recorder.pending == 0
    assert UsageEvent.objects.count() == 10


def test_past_the_bound_the_oldest_events_are_dropped_and_counted():
    recorder = UsageRecorder(max_buffer=5, flush_seconds=60)
    recorder._thread = object()  # no writer thread: we flush by hand
    for n in range(8):
        recorder.record(record(n))
    assert recorder.dropped == 3
    assert recorder.flush() == 5
    assert sorted(UsageEvent.objects.values_list("request_id", flat=True)) == [
        f"req-{n}" for n in range(3, 8)
    ]


def test_an_event_whose_balancer_was_deleted_meanwhile_is_still_written():
    balancer = make_balancer()
    recorder = UsageRecorder(max_buffer=10, flush_seconds=60)
    kept = record(1)
    kept.balancer_id = balancer.pk
    kept.serving_name = balancer.serving_name
    recorder._buffer.append(kept)
    balancer.delete()
    assert recorder.flush() == 1
    event = UsageEvent.objects.get()
    assert (event.request_id, event.serving_name) == ("req-1", balancer.serving_name)
