from __future__ import annotations

import os

import pytest
from django.conf import settings

from config.env import envbool

# The tests' upstreams live on loopback: allow private egress (GATEWAY_EGRESS_ALLOW_PRIVATE),
# here and in the gateways they start, unless the run says otherwise. Settings are read
# before this file, so the value is set on them too; tests of the policy turn it off.
os.environ.setdefault("GATEWAY_EGRESS_ALLOW_PRIVATE", "1")
settings.GATEWAY_EGRESS_ALLOW_PRIVATE = envbool("GATEWAY_EGRESS_ALLOW_PRIVATE")


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """Each test starts with an empty Redis database (the test one, never db 0 in CI)."""
    if settings.REDIS_URL:
        from gateway.hotpath.redis_client import redis_sync

        redis_sync().flushdb()


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser(
        "admin", "admin@example.com", "a-long-test-password"
    )
    client.force_login(user)
    return client
