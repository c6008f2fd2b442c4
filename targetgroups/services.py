from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import ProtectedError
from rest_framework.exceptions import ValidationError

from targetgroups.documents import TargetGroupDocument
from targetgroups.models import Instance, TargetGroup, TargetGroupMember

INSTANCE_FIELDS = (
    "display_name", "provider", "base_url", "model", "workload_kind", "input_price_per_million",
    "output_price_per_million", "quality_tier", "connect_timeout", "first_byte_timeout",
    "request_timeout", "options", "enabled",
)


def instance_save(*, instance: Instance | None = None, api_key: str | None = None, **fields: Any) -> Instance:
    """Create or update an instance. `api_key=None` keeps the stored key; "" clears it."""
    instance = instance or Instance()
    for key, value in fields.items():
        setattr(instance, key, value)
    if api_key is not None:
        instance.api_key = api_key
    if instance.pk and instance.workload_kind != Instance.objects.get(pk=instance.pk).workload_kind:
        if instance.memberships.exists() or instance.routes.exists() or instance.routed_balancers.exists():
            from django.core.exceptions import ValidationError as DjangoValidationError

            raise DjangoValidationError({"workload_kind": "This instance is in use; remove it from its groups and routes first."})
    instance.full_clean()
    instance.save()
    return instance


def target_group_validate(data: Any, *, group: TargetGroup | None = None) -> dict[str, Any]:
    """Validate a target-group document; raise a ValidationError naming the field."""
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["A target group is a JSON object."]})
    document = TargetGroupDocument(data=data, context={"group": group})
    document.is_valid(raise_exception=True)
    return dict(document.validated_data)


@transaction.atomic
def target_group_import(*, data: Any, group: TargetGroup | None = None) -> tuple[TargetGroup, bool]:
    """Create or replace the group named in the document. All or nothing."""
    values = target_group_validate(data, group=group)
    members = values.pop("members")
    group = group or TargetGroup.objects.filter(name=values["name"]).first()
    created = group is None
    if group is not None and group.workload_kind != values["workload_kind"] and group.routes.exists():
        raise ValidationError({"workload_kind": ["This group is used by routes; its workload kind cannot change."]})
    group = group or TargetGroup()
    for key, value in values.items():
        setattr(group, key, value)
    group.full_clean()
    group.save()
    group.members.all().delete()
    TargetGroupMember.objects.bulk_create(
        TargetGroupMember(group=group, instance=m["instance"], weight=m["weight"], enabled=m["enabled"], priority=m["priority"])
        for m in members
    )
    # bulk_create sends no post_save: bump the config version once for the members.
    from gateway.signals import _schedule_bump

    _schedule_bump()
    return group, created


def target_group_member_update(*, member: TargetGroupMember, **fields: Any) -> TargetGroupMember:
    for key, value in fields.items():
        setattr(member, key, value)
    member.full_clean()
    member.save()
    return member


def _usage_list(objects: Any) -> str:
    """Name what holds on to a protected row, for a 400 an operator can act on."""
    from balancers.models import Balancer, Route

    uses: list[str] = []
    for obj in objects:
        if isinstance(obj, TargetGroupMember):
            uses.append(f"member of target group {obj.group.name}")
        elif isinstance(obj, Route):
            uses.append(f"destination of route {obj.balancer.name}/{obj.name}")
        elif isinstance(obj, Balancer):
            uses.append(f"router model of balancer {obj.name}")
        else:
            uses.append(str(obj))
    return "; ".join(sorted(uses))


def instance_delete(*, instance: Instance) -> None:
    """Delete an instance nothing uses; otherwise refuse, naming what uses it."""
    try:
        with transaction.atomic():
            instance.delete()
    except ProtectedError as exc:
        raise DjangoValidationError(
            f"{instance.instance_id} is in use ({_usage_list(exc.protected_objects)}); remove it from there first."
        ) from None


def target_group_delete(*, group: TargetGroup) -> None:
    """Delete a group no route points at; otherwise refuse, naming the routes."""
    try:
        with transaction.atomic():
            group.delete()
    except ProtectedError as exc:
        raise DjangoValidationError(
            f"{group.name} is in use ({_usage_list(exc.protected_objects)}); point those routes elsewhere first."
        ) from None
