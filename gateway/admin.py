from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from gateway.models import ApiKey, Budget, CostAlert, Team, UsageDeadLetter, UsageEvent
from gateway.services import api_key_issue_secret


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = [
            "name",
            "team",
            "use_case",
            "balancers",
            "rate_limit_per_minute",
            "allow_route_override",
            "allow_direct_models",
            "enabled",
        ]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = (
        "name",
        "prefix",
        "rate_limit_per_minute",
        "allow_route_override",
        "allow_direct_models",
        "enabled",
        "revoked_at",
        "created_at",
    )
    readonly_fields = ("prefix", "created_at", "revoked_at")
    filter_horizontal = ("balancers",)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            secret = api_key_issue_secret(key=obj)
            request._new_api_key_secret = secret  # type: ignore[attr-defined]  # for response_add, this request only
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The secret in this response's page, once: never in a message, which the default
        storage keeps in a cookie, nor anywhere else that outlives the response."""
        secret = getattr(request, "_new_api_key_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        response = TemplateResponse(
            request,
            "admin/gateway/apikey/created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "key": obj,
                "secret": secret,
                "title": f"API key {obj.name} created",
            },
        )
        response["Cache-Control"] = "no-store"
        return response


@admin.register(UsageEvent)
class UsageEventAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "serving_name",
        "route",
        "instance",
        "status_code",
        "latency_ms",
        "cost_usd",
    )
    list_filter = ("serving_name", "status_code", "decision_reason")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageDeadLetter)
class UsageDeadLetterAdmin(admin.ModelAdmin):
    """Usage events the database refused (see gateway.hotpath.usage): read-only, deletable once
    understood."""

    list_display = ("created_at", "request_id", "reason")
    search_fields = ("request_id", "reason")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "description", "created_at")
    search_fields = ("name",)


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("__str__", "period", "limit_usd", "warn_share", "action", "enabled")
    list_filter = ("period", "action", "enabled")


@admin.register(CostAlert)
class CostAlertAdmin(admin.ModelAdmin):
    list_display = ("created_at", "kind", "subject", "metric", "value", "threshold", "delivered_at")
    list_filter = ("kind", "scope")
    readonly_fields = [f.name for f in CostAlert._meta.fields]
