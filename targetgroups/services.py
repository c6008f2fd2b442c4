from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import Field, ProtectedError

from targetgroups.documents import DocumentError, document_validate
from targetgroups.models import (
    Instance,
    ProviderCredential,
    TargetGroup,
    TargetGroupMember,
    catalogue_defaults,
)
from targetgroups.signals import configuration_changed

INSTANCE_FIELDS = (
    "display_name",
    "provider",
    "base_url",
    "model",
    "workload_kind",
    "input_price_per_million",
    "output_price_per_million",
    "pricing",
    "capacity_price_per_hour",
    "capacity_unit",
    "capacity",
    "quality_tier",
    "cached_input_price_per_million",
    "context_window",
    "max_output_tokens",
    "supports_tools",
    "supports_vision",
    "supports_json_mode",
    "supports_streaming",
    "strengths",
    "connect_timeout",
    "first_byte_timeout",
    "request_timeout",
    "latency_threshold_ms",
    "options",
    "enabled",
)

# Stored fields a new instance takes from the model catalogue when not given (or given empty).
CATALOGUE_FILLED = ("input_price_per_million", "output_price_per_million", "quality_tier")


def instance_save(
    *, instance: Instance | None = None, api_key: str | None = None, **fields: Any
) -> Instance:
    """Create or update an instance. `api_key=None` keeps the stored key; "" clears it.

    A new instance whose prices or quality tier are not given takes the model catalogue's
    (targetgroups/catalogue.py) when it knows the model; given values always win.
    """
    creating = instance is None or instance.pk is None
    instance = instance or Instance()
    for key, value in fields.items():
        if key not in CATALOGUE_FILLED or value is not None:
            setattr(instance, key, value)
    wanted = [
        key
        for key in CATALOGUE_FILLED
        if (key in fields and fields[key] is None) or (creating and key not in fields)
    ]
    if wanted:
        defaults = catalogue_defaults(instance.model, instance.provider)
        for key in wanted:
            field = Instance._meta.get_field(key)
            assert isinstance(field, Field)
            setattr(instance, key, defaults.get(key, field.get_default()))
    if api_key is not None:
        instance.api_key = api_key
    if instance.pk and instance.workload_kind != Instance.objects.get(pk=instance.pk).workload_kind:
        if (
            instance.memberships.exists()
            or instance.routes.exists()
            or instance.routed_balancers.exists()
        ):
            raise DjangoValidationError(
                {
                    "workload_kind": "This instance is in use; remove it from its groups and "
                    "routes first."
                }
            )
    instance.full_clean()
    instance.save()
    return instance


@transaction.atomic
def target_group_import(*, data: Any, group: TargetGroup | None = None) -> tuple[TargetGroup, bool]:
    """Create or replace the group named in the document. All or nothing.

    A document that does not validate raises DocumentError (a Django ValidationError)."""
    values = document_validate(data, group=group)
    members = values.pop("members")
    group = group or TargetGroup.objects.filter(name=values["name"]).first()
    created = group is None
    if (
        group is not None
        and group.workload_kind != values["workload_kind"]
        and group.routes.exists()
    ):
        raise DocumentError(
            {"workload_kind": ["This group is used by routes; its workload kind cannot change."]}
        )
    return _target_group_write(
        group=group or TargetGroup(), values=values, members=members
    ), created


def _target_group_write(
    *, group: TargetGroup, values: dict[str, Any], members: list[dict[str, Any]]
) -> TargetGroup:
    for key, value in values.items():
        setattr(group, key, value)
    group.full_clean()
    group.save()
    group.members.all().delete()
    TargetGroupMember.objects.bulk_create(
        TargetGroupMember(
            group=group,
            instance=m["instance"],
            weight=m["weight"],
            enabled=m["enabled"],
            priority=m["priority"],
        )
        for m in members
    )
    # bulk_create sends no post_save: announce the members' change once.
    configuration_changed.send(sender=TargetGroupMember)
    return group


@transaction.atomic
def target_group_create(
    *,
    name: str,
    workload_kind: str,
    selection_policy: str | None = None,
    display_name: str = "",
    description: str = "",
    enabled: bool = True,
    instance_ids: Sequence[str] = (),
) -> TargetGroup:
    """Create a new group (never replace one), with first members at the document's defaults.

    The values go through the importer's document, so the form and the JSON file obey one set
    of rules; a taken name is refused by the model's unique check instead of replacing the group.
    """
    data: dict[str, Any] = {
        "name": name,
        "display_name": display_name,
        "description": description,
        "workload_kind": workload_kind,
        "enabled": enabled,
        "members": [{"instance_id": instance_id} for instance_id in instance_ids],
    }
    if selection_policy:
        data["selection_policy"] = selection_policy
    values = document_validate(data)
    members = values.pop("members")
    return _target_group_write(group=TargetGroup(), values=values, members=members)


def target_group_member_add(
    *,
    group: TargetGroup,
    instance: Instance,
    weight: int | None = None,
    priority: int | None = None,
    enabled: bool = True,
) -> TargetGroupMember:
    """Add one instance to a group; weight and priority default to the model's (100 and 1)."""
    if group.members.filter(instance=instance).exists():
        raise DjangoValidationError(
            {"instance": f"{instance.instance_id} is already a member of {group.name}."}
        )
    member = TargetGroupMember(group=group, instance=instance, enabled=enabled)
    if weight is not None:
        member.weight = weight
    if priority is not None:
        member.priority = priority
    # The model's clean() refuses an instance of the other workload kind.
    member.full_clean()
    try:
        with transaction.atomic():
            member.save()
    except IntegrityError:  # added by someone else a moment ago
        raise DjangoValidationError(
            {"instance": f"{instance.instance_id} is already a member of {group.name}."}
        ) from None
    return member


def target_group_member_remove(*, member: TargetGroupMember) -> None:
    """Remove a member. A group may be empty, as in an imported document with `"members": []`:
    a route pointing at an empty group has nothing to try and the attempt moves to the next
    route."""
    member.delete()


def target_group_member_update(*, member: TargetGroupMember, **fields: Any) -> TargetGroupMember:
    for key, value in fields.items():
        setattr(member, key, value)
    member.full_clean()
    member.save()
    return member


def _usage_list(objects: Any) -> str:
    """Name what holds on to a protected row, for a 400 an operator can act on.

    The rows come from any layer (a route, a balancer's router model); each names its
    own use through `in_use_label`, so capacity never imports the layers above it.
    """
    uses = [obj.in_use_label if hasattr(obj, "in_use_label") else str(obj) for obj in objects]
    return "; ".join(sorted(uses))


def _delete_unless_used(obj: Instance | TargetGroup, *, label: str, advice: str) -> None:
    """Delete `obj`, or refuse naming what still uses it (the PROTECT references)."""
    try:
        with transaction.atomic():
            obj.delete()
    except ProtectedError as exc:
        raise DjangoValidationError(
            f"{label} is in use ({_usage_list(exc.protected_objects)}); {advice}"
        ) from None


def instance_delete(*, instance: Instance) -> None:
    """Delete an instance nothing uses; otherwise refuse, naming what uses it."""
    _delete_unless_used(instance, label=instance.instance_id, advice="remove it from there first.")


def target_group_delete(*, group: TargetGroup) -> None:
    """Delete a group no route points at; otherwise refuse, naming the routes."""
    _delete_unless_used(group, label=group.name, advice="point those routes elsewhere first.")


CREDENTIAL_FIELDS = ("base_url", "api_version", "enabled")


def provider_credential_save(
    *, provider: str, api_key: str | None = None, **fields: Any
) -> ProviderCredential:
    """Create or change a provider's credential (one per provider). `api_key=None` keeps the
    stored key; "" clears it (refused for providers that need one)."""
    credential = ProviderCredential.objects.filter(provider=provider).first()
    credential = credential or ProviderCredential(provider=provider)
    for key, value in fields.items():
        if key not in CREDENTIAL_FIELDS:
            raise TypeError(f"not a credential field: {key}")
        setattr(credential, key, value)
    if api_key is not None:
        credential.api_key = api_key
    credential.full_clean()
    credential.save()
    return credential


def provider_credential_delete(*, credential: ProviderCredential) -> None:
    credential.delete()
