from __future__ import annotations

from django.apps import AppConfig


class TargetgroupsConfig(AppConfig):
    name = "targetgroups"
