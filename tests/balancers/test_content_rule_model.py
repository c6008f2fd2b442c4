"""ContentRule.clean() (the admin's check) runs the shared rule checks."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from balancers.models import ContentRule
from tests.factories import make_balancer, make_instance

pytestmark = pytest.mark.django_db


def test_a_rule_saved_outside_the_wizard_and_api_is_checked_the_same_way() -> None:
    balancer = make_balancer()
    other = make_balancer()
    route = balancer.routes.get()
    ContentRule(
        balancer=balancer, name="ok", kind="keywords", value="refund", route=route
    ).full_clean()
    with pytest.raises(ValidationError) as bad_pattern:
        ContentRule(
            balancer=balancer, name="bad", kind="regex", value=r"(a)\1", route=route
        ).full_clean()
    assert "RE2 syntax" in str(bad_pattern.value.message_dict["value"])
    with pytest.raises(ValidationError) as foreign:
        ContentRule(
            balancer=balancer, name="x", kind="tools", route=other.routes.get()
        ).full_clean()
    assert "route" in foreign.value.message_dict


def test_a_route_a_rule_uses_cannot_be_deleted_under_it() -> None:
    from django.db.models import RestrictedError

    balancer = make_balancer(
        routes=[
            {
                "name": "main",
                "intent": "x",
                "instance": make_instance(),
                "priority": 1,
                "is_default": True,
            },
            {"name": "side", "intent": "y", "instance": make_instance(), "priority": 2},
        ],
        rules=[{"name": "agents", "kind": "tools", "route": "side"}],
    )
    with pytest.raises(RestrictedError):
        balancer.routes.get(name="side").delete()
    balancer.delete()  # the balancer goes with its routes and rules
    assert not ContentRule.objects.exists()
