"""The target-group JSON document (the shape of the product's target-group.json).

One serializer validates it for the API, the importer and the admin alike, so an
error always names the field that is wrong (`members[1].instance_id`).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from rest_framework import serializers

from config.api_fields import JsonTypesMixin
from targetgroups.models import (
    PRIORITY_VALIDATORS,
    WEIGHT_VALIDATORS,
    Instance,
    SelectionPolicy,
    TargetGroup,
    WorkloadKind,
)
from targetgroups.validators import base_url_problem, slug_validator

DOCUMENT_KEYS = (
    "name",
    "display_name",
    "description",
    "workload_kind",
    "selection_policy",
    "enabled",
    "members",
)
MEMBER_KEYS = ("instance_id", "weight", "enabled", "priority")


class DocumentError(ValidationError):
    """A target-group document that does not validate.

    It is Django's ValidationError, the one error type the services raise, so a page or a
    command catches one thing; it also keeps the document's nested detail (`members[1]
    .instance_id`) for the management API, which answers in that shape.
    """

    def __init__(self, detail: Any) -> None:
        if not isinstance(detail, dict):
            detail = {"non_field_errors": detail if isinstance(detail, list) else [detail]}
        self.detail: dict[str, Any] = detail
        super().__init__(
            {
                key: [str(m) for m in value]
                if isinstance(value, list) and all(isinstance(m, str) for m in value)
                else flatten_errors(value, str(key))
                for key, value in detail.items()
            }
        )


def document_validate(data: Any, *, group: TargetGroup | None = None) -> dict[str, Any]:
    """The validated values of a target-group document; DocumentError names each wrong field."""
    if not isinstance(data, dict):
        raise DocumentError({"non_field_errors": ["A target group is a JSON object."]})
    document = TargetGroupDocument(data=data, context={"group": group})
    if not document.is_valid():
        raise DocumentError(dict(document.errors))
    return dict(document.validated_data)


class StrictMixin:
    """Unknown keys are errors: a typo in a file must not be silently ignored."""

    refuses_unknown_keys = True  # the schema says so too (config.api_schema)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))  # type: ignore[attr-defined]
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]


class MemberDocument(StrictMixin, JsonTypesMixin, serializers.Serializer):
    instance_id = serializers.CharField(max_length=63)
    weight = serializers.IntegerField(validators=WEIGHT_VALIDATORS, default=100)
    enabled = serializers.BooleanField(default=True)
    priority = serializers.IntegerField(validators=PRIORITY_VALIDATORS, default=1)


class TargetGroupDocument(StrictMixin, JsonTypesMixin, serializers.Serializer):
    name = serializers.CharField(max_length=63, validators=[slug_validator])
    display_name = serializers.CharField(max_length=200, allow_blank=True, default="")
    description = serializers.CharField(allow_blank=True, default="")
    workload_kind = serializers.ChoiceField(choices=WorkloadKind.choices)
    selection_policy = serializers.ChoiceField(
        choices=SelectionPolicy.choices, default=SelectionPolicy.WEIGHTED_ROUND_ROBIN
    )
    enabled = serializers.BooleanField(default=True)
    members = MemberDocument(many=True)

    def validate_members(self, members: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = [m["instance_id"] for m in members]
        known = {i.instance_id: i for i in Instance.objects.filter(instance_id__in=ids)}
        errors: list[dict[str, list[str]]] = []
        seen: set[str] = set()
        kind = (
            self.initial_data.get("workload_kind") if isinstance(self.initial_data, dict) else None
        )
        for member in members:
            problem: dict[str, list[str]] = {}
            instance = known.get(member["instance_id"])
            if instance is None:
                problem["instance_id"] = [
                    f"No instance with instance_id {member['instance_id']!r}."
                ]
            elif member["instance_id"] in seen:
                problem["instance_id"] = ["This instance is listed twice."]
            elif kind and instance.workload_kind != kind:
                problem["instance_id"] = [
                    f"{instance.instance_id} is a {instance.workload_kind} instance; the group "
                    f"serves {kind}."
                ]
            elif instance.base_url and (refused := base_url_problem(instance.base_url)):
                # Saved before the egress policy, or under a laxer one: fix the instance first.
                problem["instance_id"] = [
                    f"{instance.instance_id}'s base URL is refused: {refused}"
                ]
            seen.add(member["instance_id"])
            errors.append(problem)
        if any(errors):
            raise serializers.ValidationError(errors)
        for member in members:
            member["instance"] = known[member["instance_id"]]
        return members

    def validate_name(self, name: str) -> str:
        # On update through the API the name is fixed by the URL.
        instance: TargetGroup | None = self.context.get("group")
        if instance is not None and name != instance.name:
            raise serializers.ValidationError(
                "The name cannot change; export, edit and import under a new name instead."
            )
        return name


def target_group_document(group: TargetGroup) -> dict[str, Any]:
    """The JSON document of a group, keys in the seed file's order."""
    return {
        "name": group.name,
        "display_name": group.display_name,
        "description": group.description,
        "workload_kind": group.workload_kind,
        "selection_policy": group.selection_policy,
        "enabled": group.enabled,
        "members": [
            {
                "instance_id": m.instance.instance_id,
                "weight": m.weight,
                "enabled": m.enabled,
                "priority": m.priority,
            }
            for m in group.members.select_related("instance").order_by(
                "priority", "instance__instance_id"
            )
        ],
    }


def flatten_errors(detail: Any, prefix: str = "") -> list[str]:
    """Turn nested serializer errors into lines like `members[1].instance_id: ...`."""
    lines: list[str] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                lines += flatten_errors(value, f"{prefix}[{key}]")
                continue
            name = str(key) if key != "non_field_errors" else ""
            lines += flatten_errors(
                value, f"{prefix}.{name}" if prefix and name else (name or prefix)
            )
    elif isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            lines += [f"{prefix}: {item}" if prefix else str(item) for item in detail]
        else:
            for index, item in enumerate(detail):
                lines += flatten_errors(item, f"{prefix}[{index}]")
    elif detail:
        lines.append(f"{prefix}: {detail}" if prefix else str(detail))
    return lines
