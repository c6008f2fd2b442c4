from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from balancers.demo import seed_demo


class Command(BaseCommand):
    help = "Create the demo instances, target groups and balancers that are missing (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = seed_demo()
        if created:
            self.stdout.write("Seeded: " + ", ".join(created) + ".")
        else:
            self.stdout.write("Demo data already present; nothing changed.")
