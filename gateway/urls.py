from __future__ import annotations

from django.urls import path

from gateway import views

urlpatterns = [
    path("api-keys/", views.api_key_list, name="apikey-list"),
    path("api-keys/<int:pk>/revoke/", views.api_key_revoke_view, name="apikey-revoke"),
    path("usage/", views.usage, name="usage"),
    path("usage/export.csv", views.usage_export, name="usage-export"),
]
