"""Gateway API key pages: create (the secret is shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from balancers.models import Balancer
from gateway.models import ApiKey
from gateway.services import api_key_create, api_key_revoke


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, label="Name", help_text="Who or what uses it, e.g. support-app.",
                           widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "support-app"}))
    balancers = forms.ModelMultipleChoiceField(
        queryset=Balancer.objects.order_by("name"), required=False, widget=forms.CheckboxSelectMultiple,
        to_field_name="name", label="Balancers", help_text="None checked: every balancer.",
    )
    rate_limit_per_minute = forms.IntegerField(min_value=1, required=False, label="Requests per minute",
                                               help_text="Empty: unlimited.")


def _context(form: ApiKeyForm, **extra: Any) -> dict[str, Any]:
    keys = ApiKey.objects.prefetch_related("balancers").order_by("revoked_at", "-created_at")
    return {"form": form, "keys": keys, **extra}


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def api_key_list(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    extra: dict[str, Any] = {}
    if request.method == "POST" and form.is_valid():
        try:
            key, secret = api_key_create(
                name=form.cleaned_data["name"], balancers=form.cleaned_data["balancers"],
                rate_limit_per_minute=form.cleaned_data["rate_limit_per_minute"],
            )
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            # Rendered in this response only, never stored: a reload does not show it again.
            extra = {"new_key": key, "secret": secret}
            form = ApiKeyForm()
    template = "gateway/api_keys.html#keys-panel" if request.htmx else "gateway/api_keys.html"
    return render(request, template, _context(form, **extra))


@login_required
@require_POST
def api_key_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=pk)
    api_key_revoke(key=key)
    if request.htmx:
        return render(request, "gateway/api_keys.html#key-row", {"key": key})
    messages.success(request, f"Revoked {key.name}. Requests with it now get a 401.")
    return redirect("apikey-list")
