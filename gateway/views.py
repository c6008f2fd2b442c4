"""Gateway pages: API keys (create, the secret shown once; list; revoke) and usage and cost."""

from __future__ import annotations

import csv
from typing import Any, cast

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import push_url

from accounts.roles import OPERATOR, VIEWER, role_required
from balancers.models import Balancer
from config.http import HtmxHttpRequest
from gateway.models import ApiKey
from gateway.reporting.rollups import rollup_usage
from gateway.reporting.selectors import (
    DEFAULT_RANGE,
    EXPORT_COLUMNS,
    RANGES,
    UsageFilters,
    usage_csv_row,
    usage_report,
    usage_rows,
)
from gateway.services import api_key_create, api_key_revoke


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        label="Name",
        help_text="Who or what uses it, e.g. support-app.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "support-app"}),
    )
    balancers = forms.ModelMultipleChoiceField(
        queryset=Balancer.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        to_field_name="name",
        label="Balancers",
        help_text="None checked: every balancer.",
    )
    rate_limit_per_minute = forms.IntegerField(
        min_value=1, required=False, label="Requests per minute", help_text="Empty: unlimited."
    )
    allow_route_override = forms.BooleanField(
        required=False,
        label="May choose the route",
        help_text="Requests with this key may force an enabled route with the X-Balancer-Route header "
        "(testing, trusted tools). Off: the header is refused with a 403.",
    )


def _context(form: ApiKeyForm, **extra: Any) -> dict[str, Any]:
    keys = ApiKey.objects.prefetch_related("balancers").order_by("revoked_at", "-created_at")
    return {"form": form, "keys": keys, **extra}


@role_required(VIEWER, write=OPERATOR)
@never_cache
@require_http_methods(["GET", "POST"])
def api_key_list(request: HtmxHttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    extra: dict[str, Any] = {}
    if request.method == "POST" and form.is_valid():
        try:
            key, secret = api_key_create(
                name=form.cleaned_data["name"],
                balancers=form.cleaned_data["balancers"],
                rate_limit_per_minute=form.cleaned_data["rate_limit_per_minute"],
                allow_route_override=form.cleaned_data["allow_route_override"],
            )
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            # Rendered in this response only, never stored: a reload does not show it again.
            extra = {"new_key": key, "secret": secret}
            form = ApiKeyForm()
    template = "gateway/api_keys.html#keys-panel" if request.htmx else "gateway/api_keys.html"
    return render(request, template, _context(form, **extra))


@role_required(OPERATOR)
@require_POST
def api_key_revoke_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=pk)
    api_key_revoke(key=key)
    if request.htmx:
        return render(request, "gateway/api_keys.html#key-row", {"key": key})
    messages.success(request, f"Revoked {key.name}. Requests with it now get a 401.")
    return redirect("apikey-list")


# -- usage and cost -----------------------------------------------------------------------------


class UsageFilterForm(forms.Form):
    """The usage page's GET parameters. A value that is not valid (a balancer deleted
    since the link was made) falls back to showing everything, never to an error page."""

    range = forms.ChoiceField(choices=[(r.key, r.label) for r in RANGES.values()], required=False)
    balancer = forms.ModelChoiceField(
        queryset=Balancer.objects.order_by("name"),
        to_field_name="name",
        required=False,
        empty_label="All balancers",
    )
    key = forms.ChoiceField(required=False, label="API key")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys = {str(k.pk): k for k in ApiKey.objects.order_by("revoked_at", "name")}
        cast(forms.ChoiceField, self.fields["key"]).choices = [
            ("", "All API keys"),
            ("none", "No key (playground, refusals)"),
        ] + [
            (pk, f"{k.name} ({k.prefix}…){' · revoked' if k.revoked_at else ''}")
            for pk, k in self.keys.items()
        ]

    def filters(self) -> UsageFilters:
        self.is_valid()
        data = self.cleaned_data
        key = data.get("key") or ""
        return UsageFilters(
            range=RANGES.get(data.get("range") or "", DEFAULT_RANGE),
            balancer=data.get("balancer"),
            api_key=self.keys.get(key),
            without_key=key == "none",
        )


@role_required(VIEWER)
@never_cache
@require_GET
def usage(request: HtmxHttpRequest) -> HttpResponse:
    rollup_usage()  # incremental: cheap, and the page is never a minute behind
    form = UsageFilterForm(request.GET)
    filters = form.filters()
    context = {
        "form": form,
        "filters": filters,
        **usage_report(filters=filters, now=timezone.now()),
    }
    if not request.htmx or request.htmx.history_restore_request:
        return render(request, "gateway/usage.html", context)
    response = render(request, "gateway/usage.html#report", context)
    # The address bar gets the canonical query (no empty or invalid parameters), so it can be shared.
    query = filters.query()
    return push_url(response, reverse("usage") + (f"?{query}" if query else ""))


@role_required(VIEWER)
@never_cache
@require_GET
def usage_export(request: HtmxHttpRequest) -> HttpResponse:
    rollup_usage()
    filters = UsageFilterForm(request.GET).filters()
    start, end = filters.range.window(timezone.now())
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="usage-{start:%Y%m%dT%H%MZ}-{end:%Y%m%dT%H%MZ}.csv"'
    )
    writer = csv.writer(response)
    writer.writerow(EXPORT_COLUMNS)
    for row in usage_rows(filters=filters, start=start, end=end):
        writer.writerow([_csv_cell(value) for value in usage_csv_row(row, start=start, end=end)])
    return response


def _csv_cell(value: Any) -> Any:
    # A spreadsheet runs a cell that starts with = + - @ as a formula; key names are free text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
