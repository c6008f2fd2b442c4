"""The teams and budgets pages, and the API key form's team and use case."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.models import ApiKey, Budget, Team
from gateway.services import budget_create, team_create
from tests.factories import make_api_key, make_balancer

pytestmark = pytest.mark.django_db


def test_an_operator_creates_and_deletes_a_team(admin_client) -> None:
    response = admin_client.post("/teams/", {"name": "support", "description": "Help desk"})
    assert response.status_code == 302
    team = Team.objects.get()
    page = admin_client.get("/teams/").content.decode()
    assert "support" in page and "Help desk" in page
    key, _ = make_api_key(team=team)
    assert admin_client.post(f"/teams/{team.pk}/delete/").status_code == 302
    assert not Team.objects.exists()
    key.refresh_from_db()
    assert key.team is None


def test_a_bad_team_name_is_shown_on_the_form_and_changes_nothing(admin_client) -> None:
    team_create(name="support")
    for name in ("two words", "support"):
        response = admin_client.post("/teams/", {"name": name})
        assert response.status_code == 200
        assert 'class="field-error"' in response.content.decode()
    assert Team.objects.count() == 1


def test_a_key_is_created_with_a_team_and_a_use_case(admin_client) -> None:
    team_create(name="support")
    response = admin_client.post(
        "/api-keys/", {"name": "desk", "team": "support", "use_case": "support-chat"}
    )
    assert response.status_code == 200
    key = ApiKey.objects.get()
    assert key.team is not None and key.team.name == "support" and key.use_case == "support-chat"
    bad = admin_client.post("/api-keys/", {"name": "other", "use_case": "no spaces"})
    assert "field-error" in bad.content.decode() and ApiKey.objects.count() == 1


def test_an_operator_adds_a_budget_and_sees_its_spend(admin_client) -> None:
    balancer = make_balancer(name="support-bot")
    response = admin_client.post(
        "/budgets/",
        {
            "subject": f"balancer:{balancer.pk}",
            "period": "daily",
            "limit_usd": "25",
            "warn_percent": "60",
            "action": "downgrade",
        },
    )
    assert response.status_code == 302, response.content.decode()
    budget = Budget.objects.get()
    assert budget.balancer == balancer and budget.warn_share == Decimal("0.6")
    assert budget.action == "downgrade" and budget.limit_usd == Decimal(25)
    page = admin_client.get("/budgets/").content.decode()
    assert "balancer support-bot" in page and "$25.00" in page and "$15.00" in page
    # The same subject and period again: refused on the form.
    again = admin_client.post(
        "/budgets/",
        {
            "subject": f"balancer:{balancer.pk}",
            "period": "daily",
            "limit_usd": "30",
            "warn_percent": "80",
            "action": "refuse",
        },
    )
    assert again.status_code == 200 and "already has a budget" in again.content.decode()
    assert admin_client.post(f"/budgets/{budget.pk}/delete/").status_code == 302
    assert not Budget.objects.exists()


def test_the_usage_page_shows_a_budget_warning(admin_client) -> None:
    from django.utils import timezone

    from gateway.models import UsageHourly
    from gateway.reporting.rollups import floor_hour

    team = team_create(name="support")
    budget_create(team=team, period="monthly", limit_usd=Decimal(10), warn_share=Decimal("0.8"))
    UsageHourly.objects.create(
        hour=floor_hour(timezone.now()), team_id=team.pk, requests=3, cost_usd=Decimal("8.5")
    )
    page = admin_client.get("/usage/").content.decode()
    assert 'data-testid="usage-budgets"' in page
    assert "Budget warning" in page and "team support" in page and "85.0%" in page


def test_the_board_says_when_its_balancer_is_past_the_warning_share(admin_client) -> None:
    from django.utils import timezone

    from gateway.models import UsageHourly
    from gateway.reporting.rollups import floor_hour

    balancer = make_balancer(name="support-bot")
    budget_create(
        balancer=balancer, period="daily", limit_usd=Decimal(2), warn_share=Decimal("0.5")
    )
    board = f"/balancers/{balancer.name}/board/"
    page = admin_client.get(board).content.decode()
    assert 'data-testid="board-budget"' in page and "budget warning" not in page
    UsageHourly.objects.create(
        hour=floor_hour(timezone.now()), balancer=balancer, requests=2, cost_usd=Decimal("1.2")
    )
    page = admin_client.get(board).content.decode()
    assert "Daily budget warning" in page and "60%" in page


def test_an_operator_moves_a_key_to_another_team_from_the_keys_page(admin_client) -> None:
    support, research = team_create(name="support"), team_create(name="research")
    key, _ = make_api_key(team=support, use_case="chat")
    page = admin_client.get("/api-keys/").content.decode()
    assert 'data-testid="key-team-form"' in page
    response = admin_client.post(
        f"/api-keys/{key.pk}/team/", {"team": "research", "use_case": "summaries"}, follow=True
    )
    assert "now counts to team research" in response.content.decode()
    key.refresh_from_db()
    assert key.team == research and key.use_case == "summaries"
    bad = admin_client.post(
        f"/api-keys/{key.pk}/team/", {"team": "nope", "use_case": "x y"}, follow=True
    )
    assert "not changed" in bad.content.decode()
    key.refresh_from_db()
    assert key.team == research and key.use_case == "summaries"
    admin_client.post(f"/api-keys/{key.pk}/team/", {"team": "", "use_case": ""})
    key.refresh_from_db()
    assert key.team is None and key.use_case == ""
