from __future__ import annotations

from django.apps import AppConfig


class TargetgroupsConfig(AppConfig):
    name = "targetgroups"

    def ready(self) -> None:
        from targetgroups import checks  # noqa: F401  (registers the deploy check)
