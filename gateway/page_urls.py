from __future__ import annotations

from django.urls import path

from gateway import pages

urlpatterns = [
    path("api-keys/", pages.api_key_list, name="apikey-list"),
    path("api-keys/<int:pk>/revoke/", pages.api_key_revoke_view, name="apikey-revoke"),
    path("usage/", pages.usage, name="usage"),
    path("usage/export.csv", pages.usage_export, name="usage-export"),
]
