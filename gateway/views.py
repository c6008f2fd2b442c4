"""Gateway pages: API keys (create, the secret shown once; list; revoke), teams, budgets, and
usage and cost."""

from __future__ import annotations

import csv
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import push_url

from accounts.roles import OPERATOR, VIEWER, role_required
from balancers.models import Balancer
from config.http import HtmxHttpRequest
from gateway.budgets import budget_list, budget_statuses
from gateway.models import ApiKey, Budget, Team, use_case_validator
from gateway.reporting.capacity import EXPORT_COLUMNS as CAPACITY_COLUMNS
from gateway.reporting.capacity import capacity_csv_row, capacity_report
from gateway.reporting.failover import EXPORT_COLUMNS as FAILOVER_COLUMNS
from gateway.reporting.failover import failover_incidents, incident_csv_row
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
from gateway.services import (
    api_key_create,
    api_key_revoke,
    api_key_update,
    budget_create,
    budget_delete,
    team_create,
    team_delete,
)


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
        help_text="Requests with this key may force an enabled route with the X-Balancer-Route "
        "header (testing, trusted tools). Off: the header is refused with a 403.",
    )
    team = forms.ModelChoiceField(
        queryset=Team.objects.order_by("name"),
        to_field_name="name",
        required=False,
        empty_label="No team",
        label="Team",
        help_text="Its spend counts to this team (usage breakdowns, team budgets).",
    )
    use_case = forms.CharField(
        max_length=63,
        required=False,
        validators=[use_case_validator],
        label="Use case",
        help_text="A tag for its requests, e.g. support-chat. A request may name its own with the "
        "x-balancer-use-case header or metadata.use_case.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "support-chat"}),
    )
    allow_direct_models = forms.BooleanField(
        required=False,
        label="May call models by name",
        help_text="Requests with this key may name any model of a provider on the Providers page "
        '(model="claude-sonnet-4-5", "groq/llama-3.3-70b-versatile"). Off: such names get a 403.',
    )


def _context(form: ApiKeyForm, **extra: Any) -> dict[str, Any]:
    keys = (
        ApiKey.objects.prefetch_related("balancers")
        .select_related("team")
        .order_by("revoked_at", "-created_at")
    )
    teams = list(Team.objects.order_by("name"))
    return {"form": form, "keys": keys, "teams": teams, **extra}


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
                team=form.cleaned_data["team"],
                use_case=form.cleaned_data["use_case"],
                allow_direct_models=form.cleaned_data["allow_direct_models"],
            )
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            # Rendered in this response only, never stored: a reload does not show it again.
            extra = {"new_key": key, "secret": secret}
            form = ApiKeyForm()
    template = "gateway/api_keys.html#keys-panel" if request.htmx else "gateway/api_keys.html"
    return render(request, template, _context(form, **extra))


class ApiKeyTeamForm(forms.Form):
    team = forms.ModelChoiceField(
        queryset=Team.objects.order_by("name"), to_field_name="name", required=False
    )
    use_case = forms.CharField(max_length=63, required=False, validators=[use_case_validator])


@role_required(OPERATOR)
@require_POST
def api_key_team_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Move a key to another team (or none) and change its use-case tag: from now on, its
    requests count there; its past usage stays with the team it had then."""
    key = get_object_or_404(ApiKey, pk=pk)
    form = ApiKeyTeamForm(request.POST)
    if not form.is_valid():
        problems = "; ".join(
            f"{field}: {' '.join(str(e) for e in errors)}" for field, errors in form.errors.items()
        )
        messages.error(request, f"{key.name} not changed: {problems}")
        return redirect("apikey-list")
    try:
        api_key_update(key=key, **form.cleaned_data)
    except ValidationError as exc:
        messages.error(request, f"{key.name} not changed: {' '.join(exc.messages)}")
    else:
        team = form.cleaned_data["team"]
        messages.success(
            request, f"{key.name} now counts to {f'team {team.name}' if team else 'no team'}."
        )
    return redirect("apikey-list")


@role_required(OPERATOR)
@require_POST
def api_key_revoke_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=pk)
    api_key_revoke(key=key)
    if request.htmx:
        return render(request, "gateway/api_keys.html#key-row", {"key": key})
    messages.success(request, f"Revoked {key.name}. Requests with it now get a 401.")
    return redirect("apikey-list")


# -- teams and budgets --------------------------------------------------------------------------


class TeamForm(forms.Form):
    name = forms.SlugField(
        max_length=63,
        label="Name",
        help_text="Letters, digits, '-' and '_', e.g. support.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "support"}),
    )
    description = forms.CharField(max_length=300, required=False, label="Description")


@role_required(VIEWER, write=OPERATOR)
@never_cache
@require_http_methods(["GET", "POST"])
def team_list(request: HtmxHttpRequest) -> HttpResponse:
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = team_create(**form.cleaned_data)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            messages.success(
                request, f"Team {team.name} created. Give it keys on the API keys page."
            )
            return redirect("team-list")
    teams = Team.objects.prefetch_related("api_keys", "budgets").order_by("name")
    return render(request, "gateway/teams.html", {"form": form, "teams": teams})


@role_required(OPERATOR)
@require_POST
def team_delete_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    team = get_object_or_404(Team, pk=pk)
    team_delete(team=team)
    messages.success(request, f"Deleted team {team.name}; its keys have no team now.")
    return redirect("team-list")


def _subject_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        ("Teams", [(f"team:{t.pk}", t.name) for t in Team.objects.order_by("name")]),
        (
            "API keys",
            [
                (f"api_key:{k.pk}", f"{k.name} ({k.prefix}…)")
                for k in ApiKey.objects.filter(revoked_at__isnull=True).order_by("name")
            ],
        ),
        ("Balancers", [(f"balancer:{b.pk}", b.name) for b in Balancer.objects.order_by("name")]),
    ]


class BudgetForm(forms.Form):
    subject = forms.ChoiceField(label="Budget of", help_text="A team, an API key or a balancer.")
    period = forms.ChoiceField(choices=Budget.Period.choices, initial=Budget.Period.MONTHLY)
    limit_usd = forms.DecimalField(
        min_value=Decimal("0.0001"),
        max_digits=14,
        decimal_places=4,
        label="Limit (USD)",
        help_text="Spend allowed in the period.",
    )
    warn_percent = forms.IntegerField(
        min_value=1,
        max_value=100,
        initial=80,
        label="Warn at (% of the limit)",
        help_text="The usage page, the board and the webhook say so from this share on.",
    )
    action = forms.ChoiceField(
        choices=Budget.Action.choices,
        initial=Budget.Action.REFUSE,
        label="At the limit",
        widget=forms.RadioSelect,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["subject"]).choices = _subject_choices()

    def subject_object(self) -> dict[str, Any]:
        scope, _, pk = self.cleaned_data["subject"].partition(":")
        if scope == "team":
            return {"team": Team.objects.get(pk=int(pk))}
        if scope == "api_key":
            return {"api_key": ApiKey.objects.get(pk=int(pk))}
        return {"balancer": Balancer.objects.get(pk=int(pk))}


@role_required(VIEWER, write=OPERATOR)
@never_cache
@require_http_methods(["GET", "POST"])
def budget_list_view(request: HtmxHttpRequest) -> HttpResponse:
    form = BudgetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            budget = budget_create(
                **form.subject_object(),
                period=data["period"],
                limit_usd=data["limit_usd"],
                warn_share=Decimal(data["warn_percent"]) / 100,
                action=data["action"],
            )
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            messages.success(request, f"Budget added: {budget}.")
            return redirect("budget-list")
    rollup_usage()  # the spend shown is never a minute behind
    return render(
        request,
        "gateway/budgets.html",
        {"form": form, "statuses": budget_statuses(budgets=budget_list(), now=timezone.now())},
    )


@role_required(OPERATOR)
@require_POST
def budget_delete_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    budget = get_object_or_404(Budget, pk=pk)
    label = str(budget)
    budget_delete(budget=budget)
    messages.success(request, f"Deleted the {label}.")
    return redirect("budget-list")


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
    # The address bar gets the canonical query (no empty or invalid parameters), so it can be
    # shared.
    query = filters.query()
    return push_url(response, reverse("usage") + (f"?{query}" if query else ""))


@role_required(VIEWER)
@never_cache
@require_GET
def usage_export(request: HtmxHttpRequest) -> HttpResponse:
    table = request.GET.get("table") or "usage"
    if table not in EXPORT_TABLES:
        return HttpResponseBadRequest(
            f"Unknown table {table!r}; known: {', '.join(EXPORT_TABLES)}.",
            content_type="text/plain; charset=utf-8",
        )
    rollup_usage()
    filters = UsageFilterForm(request.GET).filters()
    start, end = filters.range.window(timezone.now())
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    name = "usage" if table == "usage" else f"usage-{table}"
    response["Content-Disposition"] = (
        f'attachment; filename="{name}-{start:%Y%m%dT%H%MZ}-{end:%Y%m%dT%H%MZ}.csv"'
    )
    writer = csv.writer(response)
    rows: list[list[Any]]
    if table == "capacity":
        writer.writerow(CAPACITY_COLUMNS)
        report = capacity_report(start=start, end=end)
        rows = [capacity_csv_row(row, start=start, end=end) for row in report.rows]
    elif table == "failover":
        writer.writerow(FAILOVER_COLUMNS)
        incidents = failover_incidents(start=start, end=end, condition=filters.condition())
        rows = [incident_csv_row(incident) for incident in incidents.incidents]
    else:
        writer.writerow(EXPORT_COLUMNS)
        rows = [
            usage_csv_row(row, start=start, end=end)
            for row in usage_rows(filters=filters, start=start, end=end)
        ]
    for values in rows:
        writer.writerow([_csv_cell(value) for value in values])
    return response


# The usage CSV's tables (`?table=`): one row per balancer, route, instance, model and key
# (the default), per reserved instance, or per failover incident.
EXPORT_TABLES = ("usage", "capacity", "failover")


def _csv_cell(value: Any) -> Any:
    # A spreadsheet runs a cell that starts with = + - @ as a formula; key names are free text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
