from __future__ import annotations

from django.urls import path

from gateway import views

urlpatterns = [
    path("api-keys/", views.api_key_list, name="apikey-list"),
    path("api-keys/<int:pk>/revoke/", views.api_key_revoke_view, name="apikey-revoke"),
    path("api-keys/<int:pk>/team/", views.api_key_team_view, name="apikey-team"),
    path("teams/", views.team_list, name="team-list"),
    path("teams/<int:pk>/delete/", views.team_delete_view, name="team-delete"),
    path("budgets/", views.budget_list_view, name="budget-list"),
    path("budgets/<int:pk>/delete/", views.budget_delete_view, name="budget-delete"),
    path("usage/", views.usage, name="usage"),
    path("usage/export.csv", views.usage_export, name="usage-export"),
]
