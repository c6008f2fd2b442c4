from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from balancers.models import Balancer, ContentRule, Route
from balancers.validation import route_field_errors, route_set_errors


class RouteFormSet(BaseInlineFormSet):
    """Applies the same route rules as the wizard and the API: exactly one default, etc."""

    def clean(self) -> None:
        super().clean()
        parent = self.instance
        routes = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE"):
                continue
            for field, message in route_field_errors(
                routing_mode=parent.routing_mode, workload_kind=parent.workload_kind, route=data
            ).items():
                form.add_error("target_group" if field == "destination" else field, message)
            routes.append(data)
        errors = route_set_errors(routes)
        if errors:
            raise ValidationError(errors)


class RouteInline(admin.StackedInline):
    model = Route
    formset = RouteFormSet
    extra = 0
    fields = (
        ("name", "is_default", "enabled"),
        "intent",
        ("target_group", "instance"),
        ("priority", "weight"),
        "examples",
    )


class ContentRuleInline(admin.TabularInline):
    """Content rules; ContentRule.clean() runs the shared rule checks (balancers.validation)."""

    model = ContentRule
    extra = 0
    fields = (
        "order",
        "name",
        "kind",
        "metadata_key",
        "value",
        "min_tokens",
        "max_tokens",
        "route",
        "enabled",
    )

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if (
            db_field.name == "route"
            and request.resolver_match
            and request.resolver_match.kwargs.get("object_id")
        ):
            kwargs["queryset"] = Route.objects.filter(
                balancer_id=request.resolver_match.kwargs["object_id"]
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Balancer)
class BalancerAdmin(admin.ModelAdmin):
    list_display = ("name", "serving_name", "workload_kind", "routing_mode", "enabled")
    list_filter = ("workload_kind", "routing_mode", "enabled")
    search_fields = ("name", "serving_name")
    inlines = [RouteInline, ContentRuleInline]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # Clear the stored default first, so moving it between routes never trips the
        # one-default constraint halfway through the save.
        Route.objects.filter(balancer=form.instance).update(is_default=False)
        super().save_related(request, form, formsets, change)
