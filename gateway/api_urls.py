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
    UsageApi,
)

urlpatterns = [
    path("api-keys/", endpoint(ApiKeyListApi, ApiKeyCreateApi), name="api-api-keys"),
    path(
        "api-keys/<int:key_id>/",
        endpoint(ApiKeyRetrieveApi, ApiKeyUpdateApi, ApiKeyDeleteApi),
        name="api-api-key",
    ),
    path("api-keys/<int:key_id>/revoke/", ApiKeyRevokeApi.as_view(), name="api-api-key-revoke"),
    path("usage/", UsageApi.as_view(), name="api-usage"),
]
