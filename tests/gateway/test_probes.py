"""Active health probes: GET /models (OpenAI and Anthropic), never a completion; hysteresis
(GATEWAY_PROBE_DOWN_AFTER failures to go down, GATEWAY_PROBE_UP_AFTER passes to come back);
unavailable instances cool down; the history stays bounded."""

from __future__ import annotations

import asyncio

import pytest

from gateway.engine.probing import ProbePolicy, ProbeState, next_probe_state
from gateway.hotpath.runtime import health_snapshot
from gateway.models import InstanceHealth, ProbeRecord
from gateway.probes import probe_all
from tests.factories import make_instance, make_router_model
from tests.live_server import free_port
from tests.upstream_server import FakeUpstream

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def upstream():
    server = FakeUpstream().start()
    yield server
    server.stop()


def test_probes_mark_each_instance_and_bench_the_unavailable_ones(upstream):
    ok = make_instance(provider="openai", base_url=upstream.base_url, model="m-ok")
    refused = make_instance(
        provider="openai", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m-gone"
    )
    sim_down = make_instance(options={"down": True})
    sim_flaky = make_instance(options={"error_rate": 0.7})
    router = make_router_model()
    make_instance(enabled=False, options={"down": True})
    asyncio.run(probe_all(cooldown_seconds=60))  # one failure each: degraded, not yet down
    results = {r.pk: r.status for r in asyncio.run(probe_all(cooldown_seconds=60))}
    assert results == {
        ok.pk: "healthy",
        refused.pk: "unavailable",
        sim_down.pk: "unavailable",
        sim_flaky.pk: "degraded",
        router.pk: "healthy",
    }
    assert InstanceHealth.objects.get(instance=refused).detail.startswith("connection failed")
    assert InstanceHealth.objects.get(instance=refused).status == "unavailable"
    assert upstream.requests == []  # GET /models only: no completion was paid for
    health = health_snapshot([ok.pk, refused.pk, sim_down.pk])
    assert health[ok.pk].status == "healthy"
    assert health[refused.pk].status == "cooling" and health[sim_down.pk].status == "cooling"


@pytest.mark.parametrize(
    ("status", "expected"), [(401, "unavailable"), (503, "unavailable"), (404, "degraded")]
)
def test_probe_statuses(upstream, status, expected):
    upstream.models_status = status
    inst = make_instance(provider="openai", base_url=upstream.base_url, model="m", api_key="sk-x")
    result = {r.pk: r for r in asyncio.run(probe_all(cooldown_seconds=1))}[inst.pk]
    assert result.status == expected
    assert f"HTTP {status}" in result.detail


def _probe(pk: int) -> tuple[str, str]:
    """(this probe's verdict, the instance's state after it)."""
    result = {r.pk: r for r in asyncio.run(probe_all(cooldown_seconds=60))}[pk]
    return result.status, InstanceHealth.objects.get(instance_id=pk).status


@pytest.mark.parametrize("previous", ["healthy", "unknown"])
def test_one_failed_probe_only_degrades_and_the_second_marks_unavailable(
    upstream, settings, previous
):
    settings.GATEWAY_PROBE_DOWN_AFTER = 2
    inst = make_instance(provider="openai", base_url=upstream.base_url, model="m")
    if previous == "healthy":
        assert _probe(inst.pk) == ("healthy", "healthy")
    upstream.models_status = 503
    assert _probe(inst.pk) == ("unavailable", "degraded")
    assert health_snapshot([inst.pk])[inst.pk].status == "healthy"  # still takes traffic
    assert _probe(inst.pk) == ("unavailable", "unavailable")
    assert health_snapshot([inst.pk])[inst.pk].status == "cooling"


def test_a_passing_probe_between_failures_starts_the_count_again(upstream, settings):
    settings.GATEWAY_PROBE_DOWN_AFTER = 2
    inst = make_instance(provider="openai", base_url=upstream.base_url, model="m")
    for status in (503, 200, 503, 200, 503):
        upstream.models_status = status
        assert _probe(inst.pk)[1] != "unavailable"


def test_it_takes_up_after_passing_probes_in_a_row_to_come_back(upstream, settings):
    settings.GATEWAY_PROBE_DOWN_AFTER = 3
    settings.GATEWAY_PROBE_UP_AFTER = 2
    inst = make_instance(provider="openai", base_url=upstream.base_url, model="m")
    upstream.models_status = 503
    assert [_probe(inst.pk)[1] for _ in range(3)] == ["degraded", "degraded", "unavailable"]
    upstream.models_status = 200
    assert _probe(inst.pk) == ("healthy", "unavailable")  # recovering: still benched
    assert InstanceHealth.objects.get(instance=inst).consecutive_successes == 1
    upstream.models_status = 503
    assert _probe(inst.pk) == ("unavailable", "unavailable")  # the count starts again
    upstream.models_status = 200
    assert _probe(inst.pk)[1] == "unavailable"
    assert _probe(inst.pk) == ("healthy", "healthy")


def test_probe_rules_without_django():
    policy = ProbePolicy(down_after=2, up_after=3)
    state = ProbeState("healthy")
    trace = []
    for verdict in [
        "unavailable",
        "unavailable",
        "healthy",
        "degraded",
        "healthy",
        "healthy",
        "unavailable",
    ]:
        state = next_probe_state(state, verdict, policy)
        trace.append(state.status)
    assert trace == [
        "degraded",
        "unavailable",
        "unavailable",
        "unavailable",
        "healthy",
        "healthy",
        "degraded",
    ]
    assert next_probe_state(ProbeState("unknown"), "unavailable", policy).status == "degraded"
    assert next_probe_state(ProbeState("degraded", 1, 0), "unknown", policy) == ProbeState(
        "degraded", 1, 0
    )


def test_anthropic_instances_are_probed_on_get_models_with_their_headers_and_never_a_post(upstream):
    inst = make_instance(
        provider="anthropic", base_url=upstream.base_url, model="claude-x", api_key="sk-ant-probe"
    )
    assert _probe(inst.pk) == ("healthy", "healthy")
    assert upstream.calls == [("GET", "/v1/models")]  # no POST /v1/messages: nothing billed
    headers = upstream.models_headers[0]
    assert headers["x-api-key"] == "sk-ant-probe"
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    upstream.models_status = 401
    assert _probe(inst.pk)[0] == "unavailable"
    assert "credential refused" in InstanceHealth.objects.get(instance=inst).detail
    assert all(method == "GET" for method, _ in upstream.calls)


def test_the_probe_history_is_recorded_and_kept_bounded(upstream, settings):
    settings.GATEWAY_PROBE_HISTORY = 3
    inst = make_instance(provider="openai", base_url=upstream.base_url, model="m")
    other = make_instance(options={"latency_ms": 5})
    for status in (200, 200, 503, 503, 200):
        upstream.models_status = status
        asyncio.run(probe_all(cooldown_seconds=1))
    records = list(ProbeRecord.objects.filter(instance=inst).order_by("-id"))
    assert [(r.verdict, r.status) for r in records] == [
        ("healthy", "unavailable"),
        ("unavailable", "unavailable"),
        ("unavailable", "degraded"),
    ]
    assert records[1].detail == "HTTP 503" and records[0].latency_ms is not None
    assert ProbeRecord.objects.filter(instance=other).count() == 3
