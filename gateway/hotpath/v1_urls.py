from __future__ import annotations

from django.conf import settings
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from gateway import views

urlpatterns = [
    path("v1/chat/completions", views.ChatCompletionsApi.as_view(), name="gateway-chat"),
    path("v1/embeddings", views.EmbeddingsApi.as_view(), name="gateway-embeddings"),
    path("v1/models", views.ModelListApi.as_view(), name="gateway-models"),
    path("v1/models/<path:model>", views.ModelDetailApi.as_view(), name="gateway-model"),
    path("v1/explain", views.ExplainApi.as_view(), name="gateway-explain"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
]

if settings.GATEWAY_PLAIN_VIEWS:
    urlpatterns += [
        path("plain/v1/chat/completions", csrf_exempt(views.plain_chat_completions)),
        path("plain/v1/embeddings", csrf_exempt(views.plain_embeddings)),
    ]

# Last: any other path under /v1 is a 404 in the OpenAI shape, naming the endpoints that exist.
urlpatterns += [re_path(r"^(?:plain/)?v1(?:/|$)", views.not_found, name="gateway-not-found")]
