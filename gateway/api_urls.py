from __future__ import annotations

from django.urls import path

from config.api import endpoint
from gateway.api import (
    ApiKeyCreateApi,
    ApiKeyDeleteApi,
    ApiKeyListApi,
    ApiKeyRetrieveApi,
    ApiKeyRevokeApi,
    ApiKeyUpdateApi,
    BudgetCreateApi,
    BudgetDeleteApi,
    BudgetListApi,
    BudgetRetrieveApi,
    BudgetUpdateApi,
    ProviderCheckApi,
    TeamCreateApi,
    TeamDeleteApi,
    TeamListApi,
    TeamRetrieveApi,
    TeamUpdateApi,
    UsageApi,
)

urlpatterns = [
    path("providers/<slug:provider>/check/", ProviderCheckApi.as_view(), name="api-provider-check"),
    path("api-keys/", endpoint(ApiKeyListApi, ApiKeyCreateApi), name="api-api-keys"),
    path(
        "api-keys/<int:key_id>/",
        endpoint(ApiKeyRetrieveApi, ApiKeyUpdateApi, ApiKeyDeleteApi),
        name="api-api-key",
    ),
    path("api-keys/<int:key_id>/revoke/", ApiKeyRevokeApi.as_view(), name="api-api-key-revoke"),
    path("teams/", endpoint(TeamListApi, TeamCreateApi), name="api-teams"),
    path(
        "teams/<int:team_id>/",
        endpoint(TeamRetrieveApi, TeamUpdateApi, TeamDeleteApi),
        name="api-team",
    ),
    path("budgets/", endpoint(BudgetListApi, BudgetCreateApi), name="api-budgets"),
    path(
        "budgets/<int:budget_id>/",
        endpoint(BudgetRetrieveApi, BudgetUpdateApi, BudgetDeleteApi),
        name="api-budget",
    ),
    path("usage/", UsageApi.as_view(), name="api-usage"),
]
