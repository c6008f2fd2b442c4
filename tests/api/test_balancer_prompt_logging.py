"""The management API reads and writes a balancer's prompt logging (`log_prompts`, off by
default)."""

from __future__ import annotations

import pytest

from balancers.models import Balancer
from tests.factories import make_balancer

pytestmark = pytest.mark.django_db


def test_log_prompts_is_off_by_default_and_patched_like_any_field(admin_client) -> None:
    balancer = make_balancer()
    url = f"/api/balancers/{balancer.name}/"
    assert admin_client.get(url).json()["log_prompts"] is False
    response = admin_client.patch(url, {"log_prompts": True}, content_type="application/json")
    assert response.status_code == 200, response.json()
    assert response.json()["log_prompts"] is True
    assert Balancer.objects.get(pk=balancer.pk).log_prompts is True
    refused = admin_client.patch(url, {"log_prompts": "maybe"}, content_type="application/json")
    assert refused.status_code == 400 and "log_prompts" in refused.json(), refused.json()
    assert Balancer.objects.get(pk=balancer.pk).log_prompts is True
