from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from gateway.models import ApiKey, UsageDeadLetter, UsageEvent, hash_api_key, new_api_key_secret


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["name", "balancers", "rate_limit_per_minute", "allow_route_override", "enabled"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("name", "prefix", "rate_limit_per_minute", "allow_route_override", "enabled", "revoked_at", "created_at")
    readonly_fields = ("prefix", "created_at", "revoked_at")
    filter_horizontal = ("balancers",)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            secret = new_api_key_secret()
            obj.prefix = secret[:10]
            obj.key_hash = hash_api_key(secret)
            messages.warning(request, f"The key's secret, shown this once: {secret}")
        super().save_model(request, obj, form, change)


@admin.register(UsageEvent)
class UsageEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "serving_name", "route", "instance", "status_code", "latency_ms", "cost_usd")
    list_filter = ("serving_name", "status_code", "decision_reason")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageDeadLetter)
class UsageDeadLetterAdmin(admin.ModelAdmin):
    """Usage events the database refused (see gateway.hotpath.usage): read-only, deletable once understood."""

    list_display = ("created_at", "request_id", "reason")
    search_fields = ("request_id", "reason")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
