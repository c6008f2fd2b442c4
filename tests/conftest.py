from __future__ import annotations

import functools
import os
import ssl
from typing import Any

import httpx._transports.default
import pytest
from django.conf import settings
from django.db import connections, transaction
from django.test import TransactionTestCase

from config.env import envbool

# The tests' upstreams live on loopback: allow private egress (GATEWAY_EGRESS_ALLOW_PRIVATE),
# here and in the gateways they start, unless the run says otherwise. Settings are read
# before this file, so the value is set on them too; tests of the policy turn it off.
os.environ.setdefault("GATEWAY_EGRESS_ALLOW_PRIVATE", "1")
settings.GATEWAY_EGRESS_ALLOW_PRIVATE = envbool("GATEWAY_EGRESS_ALLOW_PRIVATE")

# Every httpx client (each httpx.get and httpx.post, and the client inside every OpenAI,
# Anthropic or LangChain SDK object a test makes) builds a fresh SSL context from certifi's CA
# bundle: 50 ms of CPU each here (10 httpx.get to a closed port: 507 ms CPU; the same 10 through
# one client: 5 ms). The tests speak plain HTTP on loopback and never change the context, so
# the default one is built once and shared; any other verify or cert setting builds its own.
_create_ssl_context = httpx._transports.default.create_ssl_context


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    return _create_ssl_context()


def _shared_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
    if (
        verify is True
        and cert is None
        and trust_env
        and not (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"))
    ):
        return _default_ssl_context()
    return _create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


httpx._transports.default.create_ssl_context = _shared_ssl_context  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """Each test starts with an empty Redis database (the test one, never db 0 in CI)."""
    if settings.REDIS_URL:
        from gateway.hotpath.redis_client import redis_sync

        redis_sync().flushdb()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # Every user a test makes hashes its password: Django's PBKDF2 (1,000,000 iterations) took
    # 377 ms of CPU each here. Tests of what a hasher does set their own.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser(
        "admin", "admin@example.com", "a-long-test-password"
    )
    client.force_login(user)
    return client


# A transactional test (transaction=True, transactional_db, live_server: every test that talks
# to a live gateway) ends with Django's flush: TRUNCATE of every table, then post_migrate, which
# puts the content types, permissions and role groups back. On this 2-core machine under the
# load of parallel suites (load average 7) that took 1.2-1.7 s for the TRUNCATE and 0.5-0.7 s
# for post_migrate, against 10-70 ms for a DELETE of every table; 31 live-gateway tests spent
# 81 s in teardown, 6.8 s with this. So the flush deletes every row instead and keeps the
# tables post_migrate fills, as long as they still hold what the last full flush left there;
# if a test changed them, the full flush runs (tests/test_conftest_flush.py).
_FULL_FLUSH = TransactionTestCase._fixture_teardown
_POST_MIGRATE_TABLES = (
    "django_content_type",
    "auth_permission",
    "auth_group",
    "auth_group_permissions",
)
_after_full_flush: dict[str, str] = {}


def _post_migrate_rows(cursor) -> dict[str, str]:
    cursor.execute(
        " UNION ALL ".join(
            f"SELECT '{table}', coalesce(md5(string_agg(r::text, ',' ORDER BY r::text)), '')"
            f" FROM {table} r"
            for table in _POST_MIGRATE_TABLES
        )
    )
    return dict(cursor.fetchall())


def _flush_by_delete(self: TransactionTestCase) -> None:
    connection = connections["default"]
    if (
        connection.vendor != "postgresql"
        or self.available_apps is not None
        or self.serialized_rollback
        or list(self._databases_names(include_mirrors=False)) != ["default"]
    ):
        _FULL_FLUSH(self)
        return
    if _after_full_flush:
        tables = [
            table
            for table in connection.introspection.django_table_names(
                only_existing=True, include_views=False
            )
            if table not in _POST_MIGRATE_TABLES
        ]
        quote = connection.ops.quote_name
        # Foreign keys are DEFERRABLE INITIALLY DEFERRED on PostgreSQL: checked at commit,
        # when every referencing row is gone too.
        with transaction.atomic(using="default"), connection.cursor() as cursor:
            cursor.execute("; ".join(f"DELETE FROM {quote(table)}" for table in tables))
        with connection.cursor() as cursor:
            if _post_migrate_rows(cursor) == _after_full_flush:
                return
    _FULL_FLUSH(self)
    with connection.cursor() as cursor:
        _after_full_flush.update(_post_migrate_rows(cursor))


TransactionTestCase._fixture_teardown = _flush_by_delete  # type: ignore[method-assign]
