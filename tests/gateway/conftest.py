from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.factories import make_api_key, make_balancer, make_group, make_instance
from tests.live_server import LiveGateway
from tests.upstream_server import Behaviour, FakeUpstream


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset_upstream(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        server: FakeUpstream = request.getfixturevalue("upstream")
        server.behaviours.clear()
        server.requests.clear()
        server.auth_headers.clear()
        server.messages_headers.clear()
        server.traceparents.clear()
        server.known_fields = None


@pytest.fixture(scope="session")
def gateway(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveGateway]:
    server = LiveGateway()
    yield server
    server.stop()


class Setup:
    """Builds upstream-backed configurations and SDK clients for one test."""

    def __init__(self, upstream: FakeUpstream, gateway: LiveGateway) -> None:
        self.upstream, self.gateway = upstream, gateway

    def instance(self, model: str, behaviour: Behaviour | None = None, **fields: Any) -> Any:
        if behaviour is not None:
            self.upstream.behaviours[model] = behaviour
        return make_instance(
            provider="openai",
            base_url=self.upstream.base_url,
            model=model,
            api_key=f"upstream-secret-{model}",
            **fields,
        )

    def failover_balancer(self, primary: Any, fallback: Any, **fields: Any) -> Any:
        return make_balancer(
            routes=[
                {
                    "name": "primary",
                    "intent": "First.",
                    "instance": primary,
                    "priority": 1,
                    "is_default": True,
                },
                {"name": "fallback", "intent": "Second.", "instance": fallback, "priority": 2},
            ],
            **fields,
        )

    def group_balancer(
        self, instances: list[Any], policy: str = "weighted_round_robin", **fields: Any
    ) -> Any:
        group = make_group(instances=[], selection_policy=policy)
        from targetgroups.models import TargetGroupMember

        for inst in instances:
            TargetGroupMember.objects.create(group=group, instance=inst, priority=1)
        return make_balancer(
            routes=[
                {
                    "name": "pool",
                    "intent": "All.",
                    "target_group": group,
                    "priority": 1,
                    "is_default": True,
                }
            ],
            **fields,
        )

    def client(self, secret: str | None = None, **key_fields: Any) -> openai.OpenAI:
        if secret is None:
            _, secret = make_api_key(**key_fields)
        self.gateway.wait_for_config()
        return openai.OpenAI(base_url=self.gateway.v1, api_key=secret, max_retries=0, timeout=20)


@pytest.fixture
def setup(upstream: FakeUpstream, gateway: LiveGateway, transactional_db: Any) -> Setup:
    return Setup(upstream, gateway)


@pytest.fixture(scope="session")
def hostile() -> Iterator[Any]:
    """A hostile upstream on loopback (tests/gateway/hostile_upstream.py), shared by the fault
    tests."""
    from tests.gateway.hostile_upstream import HostileUpstream

    server = HostileUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def hostile_upstream(hostile: Any) -> Any:
    hostile.scripts.clear()
    hostile.requests.clear()
    return hostile
