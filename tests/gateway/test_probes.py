"""Active health probes: GET /models, never a completion; unavailable instances cool down."""

from __future__ import annotations

import asyncio

import pytest

from gateway.hotpath.runtime import health_snapshot
from gateway.models import InstanceHealth
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
    refused = make_instance(provider="openai", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m-gone")
    sim_down = make_instance(options={"down": True})
    sim_flaky = make_instance(options={"error_rate": 0.7})
    router = make_router_model()
    make_instance(enabled=False, options={"down": True})
    results = {r.pk: r.status for r in asyncio.run(probe_all(cooldown_seconds=60))}
    assert results == {ok.pk: "healthy", refused.pk: "unavailable", sim_down.pk: "unavailable",
                       sim_flaky.pk: "degraded", router.pk: "healthy"}
    assert InstanceHealth.objects.get(instance=refused).detail.startswith("connection failed")
    assert upstream.requests == []  # GET /models only: no completion was paid for
    health = health_snapshot([ok.pk, refused.pk, sim_down.pk])
    assert health[ok.pk].status == "healthy"
    assert health[refused.pk].status == "cooling" and health[sim_down.pk].status == "cooling"


@pytest.mark.parametrize(("status", "expected"), [(401, "unavailable"), (503, "unavailable"), (404, "degraded")])
def test_probe_statuses(upstream, status, expected):
    upstream.models_status = status
    inst = make_instance(provider="openai", base_url=upstream.base_url, model="m", api_key="sk-x")
    result = {r.pk: r for r in asyncio.run(probe_all(cooldown_seconds=1))}[inst.pk]
    assert result.status == expected
    assert f"HTTP {status}" in result.detail
