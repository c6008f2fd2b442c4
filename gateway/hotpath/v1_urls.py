from __future__ import annotations

from django.urls import path, re_path

from gateway.hotpath import completions_api, messages_api, metrics, responses_api, v1_api

urlpatterns = [
    path("v1/chat/completions", v1_api.ChatCompletionsApi.as_view(), name="gateway-chat"),
    path("v1/embeddings", v1_api.EmbeddingsApi.as_view(), name="gateway-embeddings"),
    path("v1/models", v1_api.ModelListApi.as_view(), name="gateway-models"),
    path("v1/models/<path:model>", v1_api.ModelDetailApi.as_view(), name="gateway-model"),
    path("v1/messages", messages_api.MessagesApi.as_view(), name="gateway-messages"),
    path(
        "v1/messages/count_tokens",
        messages_api.CountTokensApi.as_view(),
        name="gateway-messages-count-tokens",
    ),
    path("v1/responses", responses_api.ResponsesApi.as_view(), name="gateway-responses"),
    path(
        "v1/responses/<str:response_id>",
        responses_api.ResponseDetailApi.as_view(),
        name="gateway-response",
    ),
    path(
        "v1/responses/<str:response_id>/input_items",
        responses_api.ResponseInputItemsApi.as_view(),
        name="gateway-response-input-items",
    ),
    path("v1/completions", completions_api.CompletionsApi.as_view(), name="gateway-completions"),
    path("v1/explain", v1_api.ExplainApi.as_view(), name="gateway-explain"),
    path("healthz", v1_api.healthz, name="healthz"),
    path("readyz", v1_api.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
]


# Last: any other path under /v1 is a 404 in the OpenAI shape, naming the endpoints that exist.
urlpatterns += [re_path(r"^v1(?:/|$)", v1_api.not_found, name="gateway-not-found")]
