from __future__ import annotations

import pytest
from django.conf import settings


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """Each test starts with an empty Redis database (the test one, never db 0 in CI)."""
    if settings.REDIS_URL:
        from gateway.redis_client import redis_sync

        redis_sync().flushdb()


@pytest.fixture
def admin_client(client, django_user_model):  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "a-long-test-password")
    client.force_login(user)
    return client
