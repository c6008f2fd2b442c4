"""Management API for gateway API keys, teams, budgets and usage: one DRF view per operation.

Only a key's hash is stored; its secret is in the create response and nowhere
else, so no other response carries it (nor the hash): keys are recognised by
their `prefix`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from balancers.models import Balancer
from config.api import JsonApi
from config.api_fields import JsonTypesMixin, NameField
from gateway.budgets import BudgetStatus, budget_list, budget_statuses
from gateway.models import ApiKey, Budget, CostAlert, Team, use_case_validator
from gateway.probes import probe_credential
from gateway.reporting.anomalies import anomalies_between
from gateway.reporting.capacity import CapacityRow, capacity_report
from gateway.reporting.failover import Incident, failover_incidents
from gateway.reporting.rollups import rollup_usage
from gateway.reporting.savings import SavingsReport
from gateway.reporting.selectors import (
    DEFAULT_RANGE,
    RANGES,
    UsageFilters,
    UsageRow,
    UsageTotals,
    savings_report,
    usage_rows,
    usage_totals,
)
from gateway.services import (
    api_key_create,
    api_key_delete,
    api_key_revoke,
    api_key_update,
    budget_create,
    budget_delete,
    budget_update,
    team_create,
    team_delete,
    team_update,
)
from targetgroups.api import credential_or_404


def _api_keys() -> QuerySet[ApiKey]:
    return (
        ApiKey.objects.prefetch_related("balancers")
        .select_related("team")
        .order_by("-created_at", "-id")
    )


def _api_key_or_404(key_id: int) -> ApiKey:
    key = _api_keys().filter(pk=key_id).first()
    if key is None:
        raise NotFound(f"No API key with id {key_id}.")
    return key


def _balancers_field(**kwargs: Any) -> Any:  # a ManyRelatedField at run time (many=True)
    return NameField(
        slug_field="name",
        queryset=Balancer.objects.all(),
        many=True,
        help_text="Names of the balancers this key may call; empty: every balancer.",
        **kwargs,
    )


def _team_field(**kwargs: Any) -> Any:
    return NameField(
        slug_field="name",
        queryset=Team.objects.all(),
        allow_null=True,
        help_text="The team (its name) the key's spend counts to; null: none.",
        **kwargs,
    )


def _use_case_field() -> serializers.CharField:
    return serializers.CharField(
        max_length=63,
        required=False,
        allow_blank=True,
        validators=[use_case_validator],
        help_text="The use-case tag of its requests unless a request names one; empty: none.",
    )


class ApiKeyOutputSerializer(serializers.ModelSerializer):
    balancers: serializers.SlugRelatedField[Balancer] = serializers.SlugRelatedField(
        slug_field="name",
        many=True,
        read_only=True,
        help_text="Names of the balancers this key may call; empty: every balancer.",
    )
    is_active = serializers.BooleanField(read_only=True, help_text="Enabled and not revoked.")
    team: serializers.SlugRelatedField[Team] = serializers.SlugRelatedField(
        slug_field="name", read_only=True, allow_null=True, help_text="Its team's name, or null."
    )

    class Meta:
        model = ApiKey
        fields: tuple[str, ...] = (
            "id",
            "name",
            "prefix",
            "team",
            "use_case",
            "balancers",
            "rate_limit_per_minute",
            "allow_route_override",
            "allow_direct_models",
            "enabled",
            "is_active",
            "created_at",
            "revoked_at",
        )
        read_only_fields = fields
        ref_name = "ApiKey"


@extend_schema_view(get=extend_schema(summary="List gateway API keys (never their secrets)"))
class ApiKeyListApi(JsonApi, generics.ListAPIView[ApiKey]):
    # A plain read of a queryset through one serializer: DRF's generic list view. (No
    # docstring: it would replace the JsonApi one as the operations' schema description.)
    serializer_class = ApiKeyOutputSerializer

    def get_queryset(self) -> QuerySet[ApiKey]:
        return _api_keys()


class ApiKeyCreateApi(JsonApi):
    class InputSerializer(JsonTypesMixin, serializers.Serializer):
        name = serializers.CharField(max_length=100)
        balancers = _balancers_field(required=False)
        rate_limit_per_minute = serializers.IntegerField(
            min_value=1, allow_null=True, required=False, help_text="Empty: unlimited."
        )
        allow_route_override = serializers.BooleanField(
            required=False,
            help_text="May force an enabled route with the X-Balancer-Route header; default false.",
        )
        team = _team_field(required=False)
        use_case = _use_case_field()
        allow_direct_models = serializers.BooleanField(
            required=False,
            help_text="May call any model of a provider with a stored credential by its own name "
            '(model="claude-sonnet-4-5"); default false.',
        )

        class Meta:
            ref_name = "ApiKeyCreateInput"

    class OutputSerializer(ApiKeyOutputSerializer):
        secret = serializers.SerializerMethodField(
            help_text="The key itself. Shown in this response only: store it now."
        )

        class Meta(ApiKeyOutputSerializer.Meta):
            fields: tuple[str, ...] = (*ApiKeyOutputSerializer.Meta.fields, "secret")
            read_only_fields: tuple[str, ...] = fields
            ref_name = "ApiKeyCreated"

        @extend_schema_field(OpenApiTypes.STR)
        def get_secret(self, key: ApiKey) -> str:
            return self.context["secret"]

    @extend_schema(
        summary="Create a gateway API key; the response holds its secret, once",
        request=InputSerializer,
        responses={201: OutputSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, secret = api_key_create(**serializer.validated_data)
        output = self.OutputSerializer(_api_key_or_404(key.pk), context={"secret": secret})
        return Response(output.data, status=status.HTTP_201_CREATED)


class ApiKeyRetrieveApi(JsonApi):
    OutputSerializer = ApiKeyOutputSerializer

    @extend_schema(
        summary="Retrieve a gateway API key (never its secret)", responses=OutputSerializer
    )
    def get(self, request: Request, key_id: int) -> Response:
        return Response(self.OutputSerializer(_api_key_or_404(key_id)).data)


class ApiKeyUpdateApi(JsonApi):
    """Change the name, balancers, rate limit, route override, direct models or enabled flag. PUT
    and PATCH leave omitted fields as they are."""

    class InputSerializer(JsonTypesMixin, serializers.Serializer):
        name = serializers.CharField(max_length=100)
        balancers = _balancers_field(required=False)
        rate_limit_per_minute = serializers.IntegerField(
            min_value=1, allow_null=True, required=False, help_text="Empty: unlimited."
        )
        allow_route_override = serializers.BooleanField(
            required=False,
            help_text="May force an enabled route with the X-Balancer-Route header; default false.",
        )
        allow_direct_models = serializers.BooleanField(
            required=False,
            help_text="May call any model of a provider with a stored credential by its own name "
            '(model="claude-sonnet-4-5"); default false.',
        )
        enabled = serializers.BooleanField(
            required=False, help_text="A revoked key cannot be enabled again."
        )
        team = _team_field(required=False)
        use_case = _use_case_field()

        class Meta:
            ref_name = "ApiKeyUpdateInput"

    OutputSerializer = ApiKeyOutputSerializer

    @extend_schema(
        summary="Update a gateway API key", request=InputSerializer, responses=OutputSerializer
    )
    def put(self, request: Request, key_id: int) -> Response:
        return self._update(request, key_id, partial=False)

    @extend_schema(
        summary="Update some fields of a gateway API key",
        request=InputSerializer,
        responses=OutputSerializer,
    )
    def patch(self, request: Request, key_id: int) -> Response:
        return self._update(request, key_id, partial=True)

    def _update(self, request: Request, key_id: int, *, partial: bool) -> Response:
        key = _api_key_or_404(key_id)
        serializer = self.InputSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        api_key_update(key=key, **serializer.validated_data)
        return Response(self.OutputSerializer(_api_key_or_404(key_id)).data)


class ApiKeyRevokeApi(JsonApi):
    OutputSerializer = ApiKeyOutputSerializer

    @extend_schema(
        summary="Revoke a gateway API key for good", request=None, responses=OutputSerializer
    )
    def post(self, request: Request, key_id: int) -> Response:
        api_key_revoke(key=_api_key_or_404(key_id))
        return Response(self.OutputSerializer(_api_key_or_404(key_id)).data)


class ApiKeyDeleteApi(JsonApi):
    @extend_schema(summary="Delete a gateway API key", responses={204: None})
    def delete(self, request: Request, key_id: int) -> Response:
        api_key_delete(key=_api_key_or_404(key_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Teams ------------------------------------------------------------------------------


class TeamOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields: tuple[str, ...] = ("id", "name", "description", "created_at")
        read_only_fields = fields
        ref_name = "Team"


class TeamInputSerializer(JsonTypesMixin, serializers.Serializer):
    name = serializers.SlugField(max_length=63, help_text="Letters, digits, '-' and '_'.")
    description = serializers.CharField(max_length=300, required=False, allow_blank=True)

    class Meta:
        ref_name = "TeamInput"


def _team_or_404(team_id: int) -> Team:
    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        raise NotFound(f"No team with id {team_id}.")
    return team


@extend_schema_view(get=extend_schema(summary="List teams"))
class TeamListApi(JsonApi, generics.ListAPIView[Team]):
    # A plain read of a queryset through one serializer: DRF's generic list view. (No
    # docstring: it would replace the JsonApi one as the operations' schema description.)
    serializer_class = TeamOutputSerializer

    def get_queryset(self) -> QuerySet[Team]:
        return Team.objects.order_by("name")


class TeamCreateApi(JsonApi):
    InputSerializer = TeamInputSerializer
    OutputSerializer = TeamOutputSerializer

    @extend_schema(
        summary="Create a team", request=InputSerializer, responses={201: OutputSerializer}
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        team = team_create(**serializer.validated_data)
        return Response(self.OutputSerializer(team).data, status=status.HTTP_201_CREATED)


class TeamRetrieveApi(JsonApi):
    OutputSerializer = TeamOutputSerializer

    @extend_schema(summary="Retrieve a team", responses=OutputSerializer)
    def get(self, request: Request, team_id: int) -> Response:
        return Response(self.OutputSerializer(_team_or_404(team_id)).data)


class TeamUpdateApi(JsonApi):
    InputSerializer = TeamInputSerializer
    OutputSerializer = TeamOutputSerializer

    @extend_schema(summary="Update a team", request=InputSerializer, responses=OutputSerializer)
    def put(self, request: Request, team_id: int) -> Response:
        return self._update(request, team_id, partial=False)

    @extend_schema(
        summary="Update some fields of a team", request=InputSerializer, responses=OutputSerializer
    )
    def patch(self, request: Request, team_id: int) -> Response:
        return self._update(request, team_id, partial=True)

    def _update(self, request: Request, team_id: int, *, partial: bool) -> Response:
        team = _team_or_404(team_id)
        serializer = self.InputSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        return Response(
            self.OutputSerializer(team_update(team=team, **serializer.validated_data)).data
        )


class TeamDeleteApi(JsonApi):
    @extend_schema(
        summary="Delete a team (its keys stay, without a team; its budgets go)",
        responses={204: None},
    )
    def delete(self, request: Request, team_id: int) -> Response:
        team_delete(team=_team_or_404(team_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Budgets ----------------------------------------------------------------------------


class BudgetOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    scope = serializers.ChoiceField(choices=["team", "api_key", "balancer"])
    team = serializers.CharField(allow_null=True, help_text="The team's name (scope team).")
    api_key_id = serializers.IntegerField(allow_null=True, help_text="Scope api_key.")
    balancer = serializers.CharField(
        allow_null=True, help_text="The balancer's name (scope balancer)."
    )
    period = serializers.ChoiceField(choices=Budget.Period.choices)
    limit_usd = serializers.DecimalField(max_digits=14, decimal_places=4)
    warn_share = serializers.DecimalField(max_digits=4, decimal_places=3)
    action = serializers.ChoiceField(choices=Budget.Action.choices)
    enabled = serializers.BooleanField()
    period_start = serializers.DateTimeField(help_text="The current period, UTC.")
    period_end = serializers.DateTimeField()
    spent_usd = serializers.DecimalField(
        max_digits=20,
        decimal_places=10,
        help_text="Spend in the current period, from the usage events.",
    )
    share = serializers.FloatField(help_text="spent_usd / limit_usd.")
    state = serializers.ChoiceField(choices=["ok", "warning", "reached"])

    class Meta:
        ref_name = "Budget"


def _budget(status: BudgetStatus) -> dict[str, Any]:
    budget = status.budget
    return {
        "id": budget.pk,
        "scope": budget.scope,
        "team": budget.team.name if budget.team else None,
        "api_key_id": budget.api_key_id,
        "balancer": budget.balancer.name if budget.balancer else None,
        "period": budget.period,
        "limit_usd": budget.limit_usd,
        "warn_share": budget.warn_share,
        "action": budget.action,
        "enabled": budget.enabled,
        "period_start": status.start,
        "period_end": status.end,
        "spent_usd": status.spent,
        "share": round(status.share, 6),
        "state": status.state,
    }


def _budget_or_404(budget_id: int) -> Budget:
    budget = budget_list().filter(pk=budget_id).first()
    if budget is None:
        raise NotFound(f"No budget with id {budget_id}.")
    return budget


def _budget_output(budget_id: int) -> dict[str, Any]:
    rollup_usage()
    return _budget(budget_statuses(budgets=[_budget_or_404(budget_id)])[0])


class BudgetListApi(JsonApi):
    @extend_schema(
        summary="List budgets with their spend in the current period",
        responses=BudgetOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        rollup_usage()
        data = [_budget(s) for s in budget_statuses(budgets=budget_list())]
        return Response(BudgetOutputSerializer(data, many=True).data)


class BudgetCreateApi(JsonApi):
    class InputSerializer(JsonTypesMixin, serializers.Serializer):
        team = NameField(
            slug_field="name",
            queryset=Team.objects.all(),
            required=False,
            help_text="A team's name.",
        )
        api_key = serializers.PrimaryKeyRelatedField(
            queryset=ApiKey.objects.all(), required=False, help_text="An API key's id."
        )
        balancer = NameField(
            slug_field="name",
            queryset=Balancer.objects.all(),
            required=False,
            help_text="A balancer's name.",
        )
        period = serializers.ChoiceField(choices=Budget.Period.choices, default="monthly")
        limit_usd = serializers.DecimalField(
            max_digits=14, decimal_places=4, min_value=Decimal("0.0001")
        )
        warn_share = serializers.DecimalField(
            max_digits=4,
            decimal_places=3,
            min_value=Decimal("0.01"),
            max_value=Decimal(1),
            required=False,
            help_text="Warn at this share of the limit; default 0.8.",
        )
        action = serializers.ChoiceField(choices=Budget.Action.choices, default="refuse")
        enabled = serializers.BooleanField(required=False, default=True)

        class Meta:
            ref_name = "BudgetCreateInput"

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            named = [
                name for name in ("team", "api_key", "balancer") if attrs.get(name) is not None
            ]
            if len(named) != 1:
                raise serializers.ValidationError(
                    {"non_field_errors": ["Name exactly one of team, api_key and balancer."]}
                )
            return attrs

    @extend_schema(
        summary="Add a budget to a team, an API key or a balancer",
        request=InputSerializer,
        responses={201: BudgetOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        budget = budget_create(**serializer.validated_data)
        return Response(
            BudgetOutputSerializer(_budget_output(budget.pk)).data, status=status.HTTP_201_CREATED
        )


class BudgetRetrieveApi(JsonApi):
    @extend_schema(summary="Retrieve a budget and its spend", responses=BudgetOutputSerializer)
    def get(self, request: Request, budget_id: int) -> Response:
        return Response(BudgetOutputSerializer(_budget_output(budget_id)).data)


class BudgetUpdateApi(JsonApi):
    """Change a budget's period, limit, warning share, action or enabled flag; not its subject."""

    class InputSerializer(JsonTypesMixin, serializers.Serializer):
        period = serializers.ChoiceField(choices=Budget.Period.choices, required=False)
        limit_usd = serializers.DecimalField(
            max_digits=14, decimal_places=4, min_value=Decimal("0.0001"), required=False
        )
        warn_share = serializers.DecimalField(
            max_digits=4,
            decimal_places=3,
            min_value=Decimal("0.01"),
            max_value=Decimal(1),
            required=False,
        )
        action = serializers.ChoiceField(choices=Budget.Action.choices, required=False)
        enabled = serializers.BooleanField(required=False)

        class Meta:
            ref_name = "BudgetUpdateInput"

    @extend_schema(
        summary="Update some fields of a budget",
        request=InputSerializer,
        responses=BudgetOutputSerializer,
    )
    def patch(self, request: Request, budget_id: int) -> Response:
        budget = _budget_or_404(budget_id)
        serializer = self.InputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        budget_update(budget=budget, **serializer.validated_data)
        return Response(BudgetOutputSerializer(_budget_output(budget_id)).data)


class BudgetDeleteApi(JsonApi):
    @extend_schema(summary="Delete a budget", responses={204: None})
    def delete(self, request: Request, budget_id: int) -> Response:
        budget_delete(budget=_budget_or_404(budget_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class CostAlertSerializer(serializers.ModelSerializer):
    class Meta:
        model = CostAlert
        fields: tuple[str, ...] = (
            "id",
            "kind",
            "scope",
            "subject_id",
            "subject",
            "period_start",
            "metric",
            "value",
            "threshold",
            "baseline",
            "message",
            "created_at",
            "delivered_at",
        )
        read_only_fields = fields
        ref_name = "CostAlert"


# --- Usage and cost -------------------------------------------------------------------


class UsageQuerySerializer(serializers.Serializer):
    range = serializers.ChoiceField(
        choices=list(RANGES),
        default=DEFAULT_RANGE.key,
        help_text="24h (hourly buckets), 7d or 30d (UTC days), the current one included.",
    )
    balancer = NameField(
        slug_field="name",
        queryset=Balancer.objects.all(),
        required=False,
        help_text="Only this balancer's requests.",
    )
    key = serializers.RegexField(
        r"^(none|[0-9]+)$",
        required=False,
        help_text="Only this API key's requests (its id), or `none` for requests without a key "
        "(playground, smoke tests).",
    )

    def validate_key(self, value: str) -> ApiKey | str:
        if value == "none":
            return value
        key = ApiKey.objects.filter(pk=int(value)).first()
        if key is None:
            raise serializers.ValidationError(f"No API key with id {value}.")
        return key

    def filters(self) -> UsageFilters:
        data = self.validated_data
        key = data.get("key")
        return UsageFilters(
            range=RANGES[data["range"]],
            balancer=data.get("balancer"),
            api_key=key if isinstance(key, ApiKey) else None,
            without_key=key == "none",
        )


class UsageTotalsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    # Named like Serializer.errors; DRF's metaclass moves declared fields out of the class.
    errors = serializers.IntegerField(help_text="Requests answered with a status of 400 or more.")  # type: ignore[assignment]
    error_rate = serializers.FloatField(allow_null=True)
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cost_usd = serializers.DecimalField(max_digits=16, decimal_places=10)
    mean_latency_ms = serializers.FloatField(allow_null=True)
    streamed = serializers.IntegerField()


class UsageRowSerializer(UsageTotalsSerializer):
    balancer = serializers.CharField(help_text="Empty when the balancer was deleted since.")
    serving_name = serializers.CharField()
    route = serializers.CharField()
    instance = serializers.CharField(help_text="instance_id that answered; empty when none did.")
    model = serializers.CharField()
    api_key_id = serializers.IntegerField(allow_null=True)
    api_key = serializers.CharField()
    team = serializers.CharField(help_text="The key's team then; empty without one.")
    use_case = serializers.CharField(help_text="The request's use-case tag; empty without one.")
    cost_share = serializers.FloatField(help_text="This row's share of the range's cost, 0..1.")


def _usd(help_text: str = "") -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=20, decimal_places=10, allow_null=True, help_text=help_text
    )


class BalancerSavingsSerializer(serializers.Serializer):
    balancer = serializers.CharField(
        help_text="Empty when the balancer was deleted since (cache savings only)."
    )
    serving_name = serializers.CharField()
    requests = serializers.IntegerField()
    cost_usd = _usd("What the requests cost, as recorded.")
    cache_hits = serializers.IntegerField()
    cache_savings_usd = _usd("The upstream cost the response cache avoided.")
    priciest_route = serializers.CharField(
        help_text="The enabled route the tokens would cost most on."
    )
    priciest_route_cost_usd = _usd("The tokens priced on the priciest route.")
    savings_vs_priciest_route_usd = _usd("priciest_route_cost_usd less cost_usd.")
    baseline_route = serializers.CharField(
        help_text="The balancer's baseline route; empty when it names none."
    )
    baseline_route_cost_usd = _usd("The tokens priced on the baseline route.")
    savings_vs_baseline_route_usd = _usd("baseline_route_cost_usd less cost_usd.")


class SavingsSerializer(serializers.Serializer):
    cache_hits = serializers.IntegerField()
    cache_savings_usd = _usd("The upstream cost the response cache avoided.")
    priciest_route_cost_usd = _usd(
        "Every balancer's tokens on its priciest route; null without a priced balancer."
    )
    savings_vs_priciest_route_usd = _usd()
    baseline_route_cost_usd = _usd(
        "Over the balancers that name a baseline route; null when none does."
    )
    savings_vs_baseline_route_usd = _usd()
    balancers = BalancerSavingsSerializer(many=True)


class CapacitySerializer(serializers.Serializer):
    instance = serializers.CharField(
        help_text="instance_id of an instance priced as reserved capacity."
    )
    model = serializers.CharField()
    unit = serializers.CharField(help_text="concurrent_requests | tokens_per_second")
    capacity = serializers.IntegerField(help_text="What an hour buys, in `unit`.")
    price_per_hour_usd = _usd("The instance's current price per hour.")
    hours = serializers.IntegerField(help_text="Closed hours paid in the range.")
    cost_usd = _usd("Those hours' price.")
    spread_usd = _usd("The part written on the requests they served (by tokens).")
    idle_cost_usd = _usd("Hours paid that served no tokens.")
    requests = serializers.IntegerField()
    tokens = serializers.IntegerField()
    utilisation = serializers.FloatField(
        allow_null=True, help_text="0..1: tokens (or busy seconds) over capacity x seconds paid."
    )
    effective_price_per_million_usd = _usd(
        "cost_usd per million tokens served; null without tokens."
    )


class FailoverIncidentSerializer(serializers.Serializer):
    balancer = serializers.CharField()
    serving_name = serializers.CharField()
    primary_route = serializers.CharField(help_text="The route the requests were meant for.")
    fallback_routes = serializers.ListField(child=serializers.CharField())
    started_at = serializers.DateTimeField(help_text="The first request that failed over.")
    ended_at = serializers.DateTimeField(
        allow_null=True, help_text="The first request the primary answered again; null: ongoing."
    )
    requests = serializers.IntegerField(help_text="Requests answered by a fallback.")
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cost_usd = _usd("What those requests cost.")
    primary_cost_usd = _usd("Their tokens priced on the primary route.")
    extra_cost_usd = _usd("cost_usd less primary_cost_usd: the failover's cost impact.")


class UsageSerializer(serializers.Serializer):
    range = serializers.CharField()
    start = serializers.DateTimeField(help_text="Inclusive, UTC.")
    end = serializers.DateTimeField(help_text="Exclusive, UTC.")
    totals = UsageTotalsSerializer()
    savings = SavingsSerializer(
        help_text="Cache savings and savings against two baselines (docs/gateway.md)."
    )
    rows = UsageRowSerializer(
        many=True,
        help_text="One per balancer, route, instance, model, key, team and use case; costliest "
        "first.",
    )
    budgets = BudgetOutputSerializer(
        many=True, help_text="Every budget with its spend in its current period."
    )
    anomalies = CostAlertSerializer(
        many=True, help_text="Cost anomalies raised for hours within the range."
    )
    capacity = CapacitySerializer(
        many=True,
        help_text="Reserved capacity: each instance's paid hours in the range (closed hours).",
    )
    failover_incidents = FailoverIncidentSerializer(
        many=True, help_text="Failover cost impact, per incident, newest first (docs/cost.md)."
    )


def _totals(totals: UsageTotals) -> dict[str, Any]:
    return {
        "requests": totals.requests,
        "errors": totals.errors,
        "error_rate": totals.error_rate,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "cost_usd": totals.cost,
        "mean_latency_ms": totals.mean_latency_ms,
        "streamed": totals.streamed,
    }


def _savings(report: SavingsReport) -> dict[str, Any]:
    return {
        "cache_hits": report.cache_hits,
        "cache_savings_usd": report.cache_savings,
        "priciest_route_cost_usd": report.priciest_cost,
        "savings_vs_priciest_route_usd": report.savings_vs_priciest,
        "baseline_route_cost_usd": report.baseline_cost,
        "savings_vs_baseline_route_usd": report.savings_vs_baseline,
        "balancers": [
            {
                "balancer": b.balancer,
                "serving_name": b.serving_name,
                "requests": b.requests,
                "cost_usd": b.cost,
                "cache_hits": b.cache_hits,
                "cache_savings_usd": b.cache_savings,
                "priciest_route": b.priciest_route,
                "priciest_route_cost_usd": b.priciest_cost,
                "savings_vs_priciest_route_usd": b.savings_vs_priciest,
                "baseline_route": b.baseline_route,
                "baseline_route_cost_usd": b.baseline_cost,
                "savings_vs_baseline_route_usd": b.savings_vs_baseline,
            }
            for b in report.balancers
        ],
    }


def _row(row: UsageRow) -> dict[str, Any]:
    """A row as the CSV export has it (shares to 6 places, mean latency to 0.1 ms), typed."""
    mean = row.totals.mean_latency_ms
    return {
        **_totals(row.totals),
        "balancer": row.balancer,
        "serving_name": row.serving_name,
        "route": row.route,
        "instance": row.instance,
        "model": row.model,
        "api_key_id": row.api_key_id,
        "api_key": row.api_key,
        "team": row.team,
        "use_case": row.use_case,
        "cost_share": round(float(row.cost_share), 6),
        "mean_latency_ms": None if mean is None else round(mean, 1),
    }


def _capacity(row: CapacityRow) -> dict[str, Any]:
    return {
        "instance": row.instance,
        "model": row.model,
        "unit": row.unit,
        "capacity": row.capacity,
        "price_per_hour_usd": row.price_per_hour,
        "hours": row.hours,
        "cost_usd": row.cost,
        "spread_usd": row.spread,
        "idle_cost_usd": row.idle_cost,
        "requests": row.requests,
        "tokens": row.tokens,
        "utilisation": None if row.utilisation is None else round(row.utilisation, 6),
        "effective_price_per_million_usd": row.effective_price_per_million,
    }


def _incident(incident: Incident) -> dict[str, Any]:
    return {
        "balancer": incident.balancer,
        "serving_name": incident.serving_name,
        "primary_route": incident.primary,
        "fallback_routes": incident.fallbacks,
        "started_at": incident.started_at,
        "ended_at": incident.ended_at,
        "requests": incident.requests,
        "prompt_tokens": incident.prompt_tokens,
        "completion_tokens": incident.completion_tokens,
        "cost_usd": incident.cost,
        "primary_cost_usd": incident.primary_cost,
        "extra_cost_usd": incident.extra,
    }


class UsageApi(APIView):
    @extend_schema(
        summary="Requests, tokens and cost over a range, split by balancer, route, instance, "
        "model, key, team and use case; budgets and anomalies",
        parameters=[UsageQuerySerializer],
        responses=UsageSerializer,
    )
    def get(self, request: Request) -> Response:
        # A plain dict, not the QueryDict: DRF reads an empty value in a QueryDict as "not given"
        # (HTML form rules), which would let `?range=` pass as the default range.
        query = UsageQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        filters = query.filters()
        rollup_usage()  # what the page does: incremental, so the figures are never a minute behind
        start, end = filters.range.window(timezone.now())
        data = {
            "range": filters.range.key,
            "start": start,
            "end": end,
            "totals": _totals(usage_totals(filters=filters, start=start, end=end)),
            "savings": _savings(savings_report(filters=filters, start=start, end=end)),
            "rows": [_row(row) for row in usage_rows(filters=filters, start=start, end=end)],
            "budgets": [_budget(status) for status in budget_statuses(budgets=budget_list())],
            "anomalies": anomalies_between(start=start, end=end, limit=500),
            "capacity": [_capacity(r) for r in capacity_report(start=start, end=end).rows],
            "failover_incidents": [
                _incident(i)
                for i in failover_incidents(
                    start=start, end=end, condition=filters.condition()
                ).incidents
            ],
        }
        return Response(UsageSerializer(data).data)


class ProviderCheckOutputSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="healthy, degraded or unavailable.")
    latency_ms = serializers.FloatField(allow_null=True)
    detail = serializers.CharField()

    class Meta:
        ref_name = "ProviderCheck"


class ProviderCheckApi(JsonApi):
    """The provider's probe with the stored credential: never a billed request. Here, not with the
    other provider endpoints in targetgroups.api, because the probe is the gateway's
    (gateway.probes)."""

    OutputSerializer = ProviderCheckOutputSerializer

    @extend_schema(
        summary="Check a provider credential with the provider's free probe",
        request=None,
        responses=OutputSerializer,
    )
    def post(self, request: Request, provider: str) -> Response:
        result = async_to_sync(probe_credential)(credential_or_404(provider))
        return Response(
            {"status": result.status, "latency_ms": result.latency_ms, "detail": result.detail}
        )
