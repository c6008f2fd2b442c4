"""Roles: viewer, operator, staff; what each one sees and may change."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token

from accounts.roles import OPERATOR, STAFF, VIEWER, role_of
from gateway.models import ApiKey
from targetgroups.models import Instance


def user_with_role(django_user_model: Any, role: str | None, username: str | None = None) -> Any:
    user = django_user_model.objects.create_user(
        username or f"{role}-user", password="a-long-test-password", is_staff=role == STAFF
    )
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    return user


def client_for(user: Any, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_migration_creates_the_role_groups_with_their_permissions() -> None:
    perms = {
        g.name: {f"{p.content_type.app_label}.{p.codename}" for p in g.permissions.all()}
        for g in Group.objects.prefetch_related("permissions__content_type")
    }
    assert perms["viewer"] == {"accounts.observe"}
    assert perms["operator"] == {"accounts.observe", "accounts.operate"}
    assert {"accounts.operate", "auth.change_user", "auth.add_user"} <= perms["staff"]


def test_a_user_without_a_role_is_refused_every_page(django_user_model, demo) -> None:
    client = client_for(user_with_role(django_user_model, None, "nobody"))
    for path in ("/balancers/", "/usage/", "/playground/", "/api-keys/", "/instances/inst_a/"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert "has no role yet" in response.content.decode()
    assert client.post("/api-keys/", {"name": "sneaky"}).status_code == 403
    assert client.get("/api/instances/").status_code == 403
    assert not ApiKey.objects.filter(name="sneaky").exists()


def test_a_viewer_reads_every_page_but_sees_no_controls_to_change_things(
    django_user_model, demo
) -> None:
    client = client_for(user_with_role(django_user_model, VIEWER))
    ApiKey.objects.all().delete()
    call_command("create_api_key", name="shown", stdout=io.StringIO())

    keys = client.get("/api-keys/").content.decode()
    assert "shown" in keys and "<h2>Create a key</h2>" not in keys and "Revoke</button>" not in keys
    detail = client.get("/balancers/support-balancer/").content.decode()
    assert "Smoke test" in detail
    for control in ("/edit/", "/toggle/", "/delete/"):
        assert f"/balancers/support-balancer{control}" not in detail
    group = client.get("/target-groups/tech-support-pool/").content.decode()
    assert 'id="add-member"' not in group and "Remove" not in group and 'name="weight"' not in group
    instance = client.get("/instances/inst_a/").content.decode()
    assert "Save instance" not in instance and 'name="model"' in instance and "disabled" in instance
    assert 'id="simulator"' not in instance
    listing = client.get("/balancers/").content.decode()
    assert "New balancer" not in listing and "/admin/" not in listing and "viewer" in listing


def test_a_viewer_cannot_create_a_key_or_change_an_instance(django_user_model, demo) -> None:
    client = client_for(user_with_role(django_user_model, VIEWER))
    before = Instance.objects.get(instance_id="inst_a").model

    assert (
        client.post("/api-keys/", {"name": "sneaky"}, headers={"HX-Request": "true"}).status_code
        == 403
    )
    assert client.post("/instances/inst_a/", {"model": "changed"}).status_code == 403
    assert client.post("/balancers/support-balancer/toggle/").status_code == 403
    assert not ApiKey.objects.filter(name="sneaky").exists()
    assert Instance.objects.get(instance_id="inst_a").model == before


def test_an_operator_changes_configuration_and_keys_on_the_pages(django_user_model, demo) -> None:
    client = client_for(user_with_role(django_user_model, OPERATOR))

    created = client.post("/api-keys/", {"name": "by-operator"}).content.decode()
    assert 'id="secret-value"' in created and "Create a key" in created
    assert client.post("/balancers/support-balancer/toggle/").status_code == 302
    detail = client.get("/balancers/support-balancer/").content.decode()
    assert "/balancers/support-balancer/edit/" in detail and "/admin/" not in detail
    assert ApiKey.objects.filter(name="by-operator").exists()


@pytest.mark.django_db
def test_the_api_lets_a_viewer_read_and_refuses_its_writes(django_user_model) -> None:
    client = client_for(user_with_role(django_user_model, VIEWER))

    assert client.get("/api/instances/").status_code == 200
    assert client.get("/api/usage/").status_code == 200
    refused = client.post(
        "/api/instances/",
        {"instance_id": "inst_v", "provider": "simulator", "model": "m"},
        content_type="application/json",
    )
    assert refused.status_code == 403
    assert (
        client.post("/api/api-keys/", {"name": "k"}, content_type="application/json").status_code
        == 403
    )
    assert not Instance.objects.filter(instance_id="inst_v").exists()


@pytest.mark.django_db
def test_an_operator_uses_the_api_with_a_token_or_a_session(django_user_model) -> None:
    operator = user_with_role(django_user_model, OPERATOR)
    token = Client(
        enforce_csrf_checks=True,
        HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=operator).key}",
    )
    created = token.post(
        "/api/instances/",
        {"instance_id": "inst_o", "provider": "simulator", "model": "m"},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content

    session = client_for(operator, enforce_csrf_checks=True)
    session.get("/balancers/")  # sets the CSRF cookie, as the browser gets it from any page
    csrf = session.cookies["csrftoken"].value
    key = session.post(
        "/api/api-keys/",
        {"name": "k"},
        content_type="application/json",
        headers={"X-CSRFToken": csrf},
    )
    assert key.status_code == 201, key.content
    assert "secret" in key.json()


@pytest.mark.django_db
def test_set_role_gives_takes_and_lists_roles(django_user_model) -> None:
    django_user_model.objects.create_user("ana", password="a-long-test-password")
    out = io.StringIO()

    call_command("set_role", "ana", "viewer", stdout=out)
    assert role_of(django_user_model.objects.get(username="ana")) == VIEWER
    call_command("set_role", "ana", "operator", stdout=out)
    assert role_of(django_user_model.objects.get(username="ana")) == OPERATOR
    call_command("set_role", "ana", "staff", stdout=out)
    ana = django_user_model.objects.get(username="ana")
    assert role_of(ana) == STAFF and ana.is_staff and ana.has_perm("auth.change_user")
    call_command("set_role", "ana", "none", stdout=out)
    assert role_of(django_user_model.objects.get(username="ana")) is None
    listing = io.StringIO()
    call_command("set_role", stdout=listing)
    assert "ana\tnone" in listing.getvalue()


@pytest.mark.django_db
def test_the_make_run_bootstrap_admin_is_staff(django_user_model) -> None:
    call_command("bootstrap_local", stdout=io.StringIO())
    admin = django_user_model.objects.get(username="admin")
    assert admin.is_superuser and role_of(admin) == STAFF


@pytest.mark.django_db
def test_the_role_groups_come_back_after_a_flush() -> None:
    call_command("flush", "--no-input", verbosity=0)
    assert set(Group.objects.values_list("name", flat=True)) >= {VIEWER, OPERATOR, STAFF}
    assert Group.objects.get(name=OPERATOR).permissions.count() == 2
