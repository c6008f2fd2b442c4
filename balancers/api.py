"""Management API for balancers with their routes: one DRF view per operation.

Serializers here only check shapes and look names up (router model and route
instances by instance_id, target groups by name); every rule about a balancer
and its routes is `balancer_save`'s. Errors are keyed the way `balancer_save`
keys them, whichever side found them: `serving_name`, `routes`,
`routes[0].destination`, `routes[1].target_group`.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from balancers import selectors
from balancers.models import (
    LATENCY_THRESHOLD_VALIDATORS,
    RULE_NAME_MAX,
    Balancer,
    ContentRule,
    Route,
    RuleKind,
)
from balancers.services import ROUTE_FIELDS, RULE_FIELDS, balancer_delete, balancer_save
from config.api import JsonApi, json_object
from config.api_fields import JsonTypesMixin, NameField
from targetgroups.models import PRIORITY_VALIDATORS, WEIGHT_VALIDATORS, Instance, TargetGroup
from targetgroups.validators import slug_validator

BALANCER_FIELDS = (
    "name",
    "serving_name",
    "description",
    "workload_kind",
    "routing_mode",
    "auto_preference",
    "auto_exclusions",
    "router_model",
    "classifier_timeout",
    "confidence_threshold",
    "attempt_budget",
    "request_timeout",
    "enabled",
    "cache_mode",
    "cache_ttl_seconds",
    "cache_similarity_threshold",
    "cache_shared_across_keys",
    "log_prompts",
    "baseline_route",
)


def _instance_field(**kwargs: Any) -> NameField:
    return NameField(
        slug_field="instance_id",
        queryset=Instance.objects.all(),
        allow_null=True,
        error_messages={"does_not_exist": "No instance with instance_id {value!r}."},
        **kwargs,
    )


class RouteOutputSerializer(serializers.ModelSerializer):
    target_group: serializers.SlugRelatedField[TargetGroup] = serializers.SlugRelatedField(
        slug_field="name", read_only=True, allow_null=True
    )
    instance: serializers.SlugRelatedField[Instance] = serializers.SlugRelatedField(
        slug_field="instance_id", read_only=True, allow_null=True
    )
    examples = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Route
        fields = ROUTE_FIELDS
        read_only_fields = ROUTE_FIELDS
        ref_name = "Route"


class RuleOutputSerializer(serializers.ModelSerializer):
    route: serializers.SlugRelatedField[Route] = serializers.SlugRelatedField(
        slug_field="name", read_only=True
    )

    class Meta:
        model = ContentRule
        fields = RULE_FIELDS
        read_only_fields = RULE_FIELDS
        ref_name = "ContentRule"


class BalancerOutputSerializer(serializers.ModelSerializer):
    router_model: serializers.SlugRelatedField[Instance] = serializers.SlugRelatedField(
        slug_field="instance_id",
        read_only=True,
        allow_null=True,
        help_text="instance_id of the router model.",
    )
    routes = RouteOutputSerializer(many=True, read_only=True)
    rules = RuleOutputSerializer(
        many=True, read_only=True, help_text="Content rules, in the order they are checked."
    )

    class Meta:
        model = Balancer
        fields = (*BALANCER_FIELDS, "routes", "rules", "created_at", "updated_at")
        ref_name = "Balancer"


class RouteInputSerializer(JsonTypesMixin, serializers.Serializer):
    name = serializers.CharField(max_length=63, validators=[slug_validator])
    intent = serializers.CharField(max_length=500, allow_blank=True, default="")
    target_group = NameField(
        slug_field="name",
        queryset=TargetGroup.objects.all(),
        allow_null=True,
        default=None,
        error_messages={"does_not_exist": "No target group named {value!r}."},
        help_text="Destination: a target group's name. Give this or instance.",
    )
    instance = _instance_field(
        default=None,
        help_text="Destination: one instance's instance_id. Give this or target_group.",
    )
    priority = serializers.IntegerField(validators=PRIORITY_VALIDATORS, default=1)
    weight = serializers.IntegerField(validators=WEIGHT_VALIDATORS, default=100)
    is_default = serializers.BooleanField(default=False)
    enabled = serializers.BooleanField(default=True)
    examples = serializers.ListField(
        child=serializers.CharField(), default=list, help_text="Example prompts."
    )
    latency_threshold_ms = serializers.IntegerField(
        validators=LATENCY_THRESHOLD_VALIDATORS,
        allow_null=True,
        default=None,
        help_text="Milliseconds to the first byte (a stream: its first event) after which the next "
        "target is tried; null: no threshold.",
    )
    hedge = serializers.BooleanField(
        default=False,
        help_text="Past the threshold, keep the slow attempt and race the next target: the first "
        "answer wins and is the only one billed, the other is cancelled. Needs "
        "latency_threshold_ms.",
    )

    class Meta:
        ref_name = "RouteInput"


class RuleInputSerializer(JsonTypesMixin, serializers.Serializer):
    name = serializers.CharField(max_length=RULE_NAME_MAX, validators=[slug_validator])
    order = serializers.IntegerField(
        validators=PRIORITY_VALIDATORS,
        default=1,
        help_text="Checked in this order (ties by name); the first match wins.",
    )
    kind = serializers.ChoiceField(choices=RuleKind.choices)
    value = serializers.CharField(
        max_length=500,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        help_text="regex: the RE2 pattern; keywords: comma-separated; metadata, user, tag, "
        "api_key: the value; response_format: a type, optional.",
    )
    metadata_key = serializers.CharField(max_length=64, allow_blank=True, default="")
    min_tokens = serializers.IntegerField(min_value=0, allow_null=True, default=None)
    max_tokens = serializers.IntegerField(min_value=0, allow_null=True, default=None)
    route = serializers.CharField(
        max_length=63, help_text="The name of one of the balancer's enabled routes."
    )
    enabled = serializers.BooleanField(default=True)

    class Meta:
        ref_name = "ContentRuleInput"


class BalancerInputSerializer(JsonTypesMixin, serializers.ModelSerializer):
    router_model = _instance_field(
        required=False, help_text="instance_id of a chat instance; required for intent_classifier."
    )
    routes = RouteInputSerializer(
        many=True, help_text="The full set of routes; exactly one is the default."
    )
    rules = RuleInputSerializer(
        many=True,
        required=False,
        help_text="The full set of content rules; left out, the saved rules are kept.",
    )

    class Meta:
        model = Balancer
        fields = (*BALANCER_FIELDS, "routes", "rules")
        ref_name = "BalancerInput"


def _keyed_like_balancer_save(errors: dict[str, Any]) -> dict[str, Any]:
    """`{"routes": {1: {"weight": [...]}}}` becomes `{"routes[1].weight": [...]}`; the same for
    `rules`."""
    keyed: dict[str, Any] = {}
    for key, value in errors.items():
        per_item: Any = None
        if (
            key in ("routes", "rules")
            and isinstance(value, dict)
            and value
            and all(isinstance(k, int) for k in value)
        ):
            per_item = value.items()  # DRF's LIST_SERIALIZER_ERRORS_AS_DICT format
        elif (
            key in ("routes", "rules")
            and isinstance(value, list)
            and any(isinstance(item, dict) for item in value)
        ):
            per_item = enumerate(value)  # the older list format
        if per_item is not None:
            for index, item_errors in per_item:
                if not isinstance(item_errors, dict):  # the item itself is wrong: `[null]`, `["x"]`
                    keyed[f"{key}[{index}]"] = item_errors
                    continue
                for field, messages in item_errors.items():
                    keyed[
                        f"{key}[{index}]"
                        if field == "non_field_errors"
                        else f"{key}[{index}].{field}"
                    ] = messages
        elif key in ("routes", "rules") and isinstance(value, dict):
            keyed[key] = value.get("non_field_errors", value)
        else:
            keyed[key] = value
    return keyed


def _save(serializer: BalancerInputSerializer, *, balancer: Balancer | None = None) -> Balancer:
    if not serializer.is_valid():
        raise ValidationError(_keyed_like_balancer_save(serializer.errors))
    values = dict(serializer.validated_data)
    routes = [{key: route[key] for key in ROUTE_FIELDS} for route in values.pop("routes")]
    given_rules = values.pop("rules", None)
    rules = (
        None
        if given_rules is None
        else [{key: rule[key] for key in RULE_FIELDS} for rule in given_rules]
    )
    base = balancer or Balancer()
    fields = {name: getattr(base, name) for name in BALANCER_FIELDS} | values
    saved = balancer_save(balancer=balancer, fields=fields, routes=routes, rules=rules)
    reloaded = selectors.balancer_get(name=saved.name)
    assert reloaded is not None
    return reloaded


def _balancer_or_404(name: str) -> Balancer:
    balancer = selectors.balancer_get(name=name)
    if balancer is None:
        raise NotFound(f"No balancer named {name!r}.")
    return balancer


class BalancerListApi(JsonApi):
    OutputSerializer = BalancerOutputSerializer

    @extend_schema(
        summary="List balancers with their routes", responses=OutputSerializer(many=True)
    )
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(selectors.balancer_list(), many=True).data)


class BalancerCreateApi(JsonApi):
    InputSerializer = BalancerInputSerializer
    OutputSerializer = BalancerOutputSerializer

    @extend_schema(
        summary="Create a balancer with its routes",
        request=InputSerializer,
        responses={201: OutputSerializer},
    )
    def post(self, request: Request) -> Response:
        balancer = _save(self.InputSerializer(data=request.data))
        return Response(self.OutputSerializer(balancer).data, status=status.HTTP_201_CREATED)


class BalancerRetrieveApi(JsonApi):
    OutputSerializer = BalancerOutputSerializer

    @extend_schema(summary="Retrieve a balancer with its routes", responses=OutputSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(self.OutputSerializer(_balancer_or_404(name)).data)


class BalancerUpdateApi(JsonApi):
    """PUT takes the whole balancer, routes included; PATCH replaces only the keys it gives
    (`routes`, when given, is the new full set). The name is the URL's and cannot change.
    """

    class InputSerializer(BalancerInputSerializer):
        class Meta(BalancerInputSerializer.Meta):
            extra_kwargs = {"name": {"required": False}}
            ref_name = "BalancerUpdateInput"

        def validate_name(self, value: str) -> str:
            if self.instance is not None and value != self.instance.name:
                raise serializers.ValidationError("The name cannot change; the serving name can.")
            return value

    OutputSerializer = BalancerOutputSerializer

    @extend_schema(
        summary="Replace a balancer and its routes",
        request=InputSerializer,
        responses=OutputSerializer,
    )
    def put(self, request: Request, name: str) -> Response:
        balancer = _balancer_or_404(name)
        return self._update(balancer, json_object(request.data))

    @extend_schema(
        summary="Change some fields of a balancer",
        request=InputSerializer,
        responses=OutputSerializer,
    )
    def patch(self, request: Request, name: str) -> Response:
        balancer = _balancer_or_404(name)
        # Validate the merged whole, so a change of mode or kind is checked against the kept routes.
        return self._update(
            balancer, {**self.OutputSerializer(balancer).data, **json_object(request.data)}
        )

    def _update(self, balancer: Balancer, data: dict[str, Any]) -> Response:
        saved = _save(self.InputSerializer(balancer, data=data), balancer=balancer)
        return Response(self.OutputSerializer(saved).data)


class BalancerDeleteApi(JsonApi):
    @extend_schema(summary="Delete a balancer and its routes", responses={204: None})
    def delete(self, request: Request, name: str) -> Response:
        balancer_delete(balancer=_balancer_or_404(name))
        return Response(status=status.HTTP_204_NO_CONTENT)
