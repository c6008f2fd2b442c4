"""Reads of instances and target groups."""

from __future__ import annotations

from django.db.models import QuerySet

from targetgroups.models import Instance, TargetGroup


def instance_list() -> QuerySet[Instance]:
    return Instance.objects.order_by("instance_id")


def instance_get(*, instance_id: str) -> Instance | None:
    return Instance.objects.filter(instance_id=instance_id).first()


def target_group_list() -> QuerySet[TargetGroup]:
    return TargetGroup.objects.order_by("name")


def target_group_get(*, name: str) -> TargetGroup | None:
    return TargetGroup.objects.filter(name=name).first()
