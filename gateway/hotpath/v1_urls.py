from __future__ import annotations

from django.conf import settings
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from gateway.hotpath import v1_api

urlpatterns = [
    path("v1/chat/completions", v1_api.ChatCompletionsApi.as_view(), name="gateway-chat"),
    path("v1/embeddings", v1_api.EmbeddingsApi.as_view(), name="gateway-embeddings"),
    path("v1/models", v1_api.ModelListApi.as_view(), name="gateway-models"),
    path("v1/models/<path:model>", v1_api.ModelDetailApi.as_view(), name="gateway-model"),
    path("v1/explain", v1_api.ExplainApi.as_view(), name="gateway-explain"),
    path("healthz", v1_api.healthz, name="healthz"),
    path("readyz", v1_api.readyz, name="readyz"),
]

if settings.GATEWAY_PLAIN_VIEWS:
    urlpatterns += [
        path("plain/v1/chat/completions", csrf_exempt(v1_api.plain_chat_completions)),
        path("plain/v1/embeddings", csrf_exempt(v1_api.plain_embeddings)),
    ]

# Last: any other path under /v1 is a 404 in the OpenAI shape, naming the endpoints that exist.
urlpatterns += [re_path(r"^(?:plain/)?v1(?:/|$)", v1_api.not_found, name="gateway-not-found")]
