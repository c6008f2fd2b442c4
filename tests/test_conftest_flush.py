"""The transactional tests' flush (tests/conftest.py): DELETE instead of TRUNCATE + post_migrate.

It must leave what Django's own flush leaves: no row in any table but the content types,
permissions and role groups post_migrate puts back, whatever the test changed.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import TransactionTestCase

from accounts.roles import GROUP_PERMISSIONS
from tests.conftest import _FULL_FLUSH, _POST_MIGRATE_TABLES
from tests.factories import make_api_key, make_balancer, make_instance


def _flush() -> None:
    TransactionTestCase()._fixture_teardown()


def _rows_per_table() -> dict[str, int]:
    counts = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.django_table_names(
            only_existing=True, include_views=False
        ):
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
            counts[table] = cursor.fetchone()[0]
    return counts


def _role_groups() -> dict[str, set[str]]:
    return {
        group.name: {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
        for group in Group.objects.all()
    }


def _configuration(django_user_model: Any) -> None:
    instance = make_instance(model="flushed")
    make_balancer(
        routes=[{"name": "only", "intent": "All.", "instance": instance, "is_default": True}]
    )
    make_api_key()
    django_user_model.objects.create_user("someone", password="a-long-test-password")


def test_the_flush_leaves_what_djangos_own_flush_leaves(transactional_db, django_user_model):
    _configuration(django_user_model)
    _FULL_FLUSH(TransactionTestCase())  # TRUNCATE and post_migrate
    full = _rows_per_table()
    assert {table for table, rows in full.items() if rows} == set(_POST_MIGRATE_TABLES)
    _flush()  # the content types have new ids: the full flush again, then its rows are noted
    content_types = sorted(ContentType.objects.values_list("pk", flat=True))
    _configuration(django_user_model)
    _flush()
    # The rows were deleted, post_migrate's tables kept (the same content type ids).
    assert sorted(ContentType.objects.values_list("pk", flat=True)) == content_types
    assert _rows_per_table() == full
    assert _role_groups() == {name: set(perms) for name, perms in GROUP_PERMISSIONS.items()}


def test_a_role_group_a_test_changed_is_put_back(transactional_db):
    _flush()
    name = next(iter(GROUP_PERMISSIONS))
    group = Group.objects.get(name=name)
    group.permissions.remove(Permission.objects.filter(group=group).first())
    Group.objects.create(name="made-by-a-test")
    _flush()
    assert _role_groups() == {name: set(perms) for name, perms in GROUP_PERMISSIONS.items()}
