from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from targetgroups.documents import target_group_document
from targetgroups.models import TargetGroup


class Command(BaseCommand):
    help = "Print a target group as target-group JSON."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        group = TargetGroup.objects.filter(name=name).first()
        if group is None:
            raise CommandError(f"no target group named {name!r}")
        self.stdout.write(json.dumps(target_group_document(group), indent=2))
