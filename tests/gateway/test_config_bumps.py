"""A configuration write bumps the config version once per transaction, not once per row.

Each bump makes every worker rebuild its snapshot and refit its routers; a transaction that
bumped once per row saved made the workers rebuild twice for one change.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import transaction

from balancers.models import Balancer, Route
from gateway.hotpath import config_version
from tests.factories import make_balancer, make_instance

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bumps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bumps run from now on (the real bump, counted)."""
    seen: list[int] = []
    real: Callable[[], int] = config_version.config_version_bump

    def counted() -> int:
        seen.append(real())
        return seen[-1]

    monkeypatch.setattr(config_version, "config_version_bump", counted)
    return seen


def balancer_with_two_routes() -> Balancer:
    return make_balancer(
        routes=[
            {"name": "alpha", "intent": "A.", "instance": make_instance(), "is_default": True},
            {"name": "beta", "intent": "B.", "instance": make_instance(), "priority": 2},
        ]
    )


def test_a_transaction_saving_several_rows_bumps_the_version_once(bumps):
    balancer = balancer_with_two_routes()
    before = config_version.config_version_from_db()
    bumps.clear()
    with transaction.atomic():
        for route in Route.objects.filter(balancer=balancer):
            route.intent += " Changed."
            route.save()
        balancer.name = "renamed"
        balancer.save()
    assert len(bumps) == 1
    assert config_version.config_version_from_db() == bumps[0] > before


def test_a_write_after_a_rolled_back_savepoint_still_bumps(bumps):
    balancer = balancer_with_two_routes()
    alpha, beta = Route.objects.filter(balancer=balancer).order_by("name")
    bumps.clear()
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():  # its bump goes with it
            alpha.intent = "Rolled back."
            alpha.save()
            raise RuntimeError
        beta.intent = "Kept."
        beta.save()
    assert len(bumps) == 1


def test_writes_outside_a_transaction_bump_each(bumps):
    balancer = balancer_with_two_routes()
    bumps.clear()
    for route in Route.objects.filter(balancer=balancer):
        route.save()
    assert len(bumps) == 2
