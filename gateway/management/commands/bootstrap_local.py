from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from gateway.models import ApiKey
from gateway.services import api_key_create


class Command(BaseCommand):
    help = "First run only: create an admin login and a gateway API key, and print both once."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        lines: list[str] = []
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "", password)
            lines.append(f"  Admin login:  admin / {password}")
        if not ApiKey.objects.exists():
            _, secret = api_key_create(name="local")
            lines.append(f"  Gateway API key:  {secret}")
        if lines:
            self.stdout.write("\nShown once, keep them now:\n" + "\n".join(lines) + "\n")
        else:
            self.stdout.write(
                "An admin login and an API key exist already (manage.py changepassword admin; "
                "manage.py create_api_key --name NAME)."
            )
