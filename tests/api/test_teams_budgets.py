"""The management API for teams and budgets, and keys' team and use case."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.models import ApiKey, Budget, Team
from tests.factories import make_api_key, make_balancer

pytestmark = pytest.mark.django_db


def post(client, url: str, body: dict):
    return client.post(url, body, content_type="application/json")


def test_teams_are_created_listed_renamed_and_deleted(admin_client) -> None:
    created = post(admin_client, "/api/teams/", {"name": "support", "description": "Help desk"})
    assert created.status_code == 201, created.json()
    team_id = created.json()["id"]
    assert admin_client.get("/api/teams/").json()[0]["name"] == "support"
    renamed = admin_client.patch(
        f"/api/teams/{team_id}/", {"name": "care"}, content_type="application/json"
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "care"
    key, _ = make_api_key(team=Team.objects.get())
    assert admin_client.delete(f"/api/teams/{team_id}/").status_code == 204
    key.refresh_from_db()
    assert key.team is None  # the key stays, without a team
    assert admin_client.get(f"/api/teams/{team_id}/").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "not a slug"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"name": 5}, "name"),
    ],
)
def test_bad_team_fields_are_400s_naming_the_field(admin_client, body: dict, field: str) -> None:
    response = post(admin_client, "/api/teams/", body)
    assert response.status_code == 400
    assert field in response.json()
    assert not Team.objects.exists()


def test_a_duplicate_team_name_is_a_400(admin_client) -> None:
    assert post(admin_client, "/api/teams/", {"name": "support"}).status_code == 201
    response = post(admin_client, "/api/teams/", {"name": "support"})
    assert response.status_code == 400
    assert Team.objects.count() == 1


def test_a_key_gets_a_team_and_a_use_case(admin_client) -> None:
    post(admin_client, "/api/teams/", {"name": "support"})
    created = post(
        admin_client, "/api/api-keys/", {"name": "desk", "team": "support", "use_case": "chat"}
    )
    assert created.status_code == 201, created.json()
    assert created.json()["team"] == "support" and created.json()["use_case"] == "chat"
    key_id = created.json()["id"]
    cleared = admin_client.patch(
        f"/api/api-keys/{key_id}/", {"team": None, "use_case": ""}, content_type="application/json"
    )
    assert cleared.status_code == 200, cleared.json()
    assert cleared.json()["team"] is None and cleared.json()["use_case"] == ""
    for body, field in (({"team": "nope"}, "team"), ({"use_case": "no spaces"}, "use_case")):
        response = admin_client.patch(
            f"/api/api-keys/{key_id}/", body, content_type="application/json"
        )
        assert response.status_code == 400 and field in response.json()
    assert ApiKey.objects.get().use_case == ""


def test_budgets_are_added_read_changed_and_deleted(admin_client) -> None:
    post(admin_client, "/api/teams/", {"name": "support"})
    created = post(
        admin_client,
        "/api/budgets/",
        {"team": "support", "period": "daily", "limit_usd": "12.5", "warn_share": "0.75"},
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["scope"] == "team" and body["team"] == "support"
    assert body["action"] == "refuse" and body["state"] == "ok"
    assert Decimal(body["spent_usd"]) == 0 and Decimal(body["limit_usd"]) == Decimal("12.5")
    budget_id = body["id"]
    changed = admin_client.patch(
        f"/api/budgets/{budget_id}/",
        {"action": "downgrade", "limit_usd": "20"},
        content_type="application/json",
    )
    assert changed.status_code == 200, changed.json()
    assert changed.json()["action"] == "downgrade"
    assert [b["id"] for b in admin_client.get("/api/budgets/").json()] == [budget_id]
    assert admin_client.get("/api/usage/").json()["budgets"][0]["id"] == budget_id
    assert admin_client.delete(f"/api/budgets/{budget_id}/").status_code == 204
    assert not Budget.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limit_usd": "5"}, "non_field_errors"),  # no subject
        ({"team": "support", "balancer": "b", "limit_usd": "5"}, "non_field_errors"),
        ({"team": "support", "limit_usd": "0"}, "limit_usd"),
        ({"team": "support", "limit_usd": "5", "warn_share": "1.5"}, "warn_share"),
        ({"team": "support", "limit_usd": "5", "action": "shout"}, "action"),
        ({"team": "support", "limit_usd": "5", "period": "weekly"}, "period"),
        ({"team": "nope", "limit_usd": "5"}, "team"),
        ({"api_key": 999999, "limit_usd": "5"}, "api_key"),
    ],
)
def test_bad_budgets_are_400s_and_change_nothing(admin_client, body: dict, field: str) -> None:
    post(admin_client, "/api/teams/", {"name": "support"})
    make_balancer(name="b", serving_name="b")
    response = post(admin_client, "/api/budgets/", body)
    assert response.status_code == 400, response.json()
    assert field in response.json()
    assert not Budget.objects.exists()


def test_a_second_budget_for_the_same_subject_and_period_is_a_400(admin_client) -> None:
    key, _ = make_api_key()
    assert (
        post(admin_client, "/api/budgets/", {"api_key": key.pk, "limit_usd": "1"}).status_code
        == 201
    )
    again = post(admin_client, "/api/budgets/", {"api_key": key.pk, "limit_usd": "2"})
    assert again.status_code == 400
    daily = {"api_key": key.pk, "limit_usd": "2", "period": "daily"}
    assert post(admin_client, "/api/budgets/", daily).status_code == 201
    assert Budget.objects.count() == 2
