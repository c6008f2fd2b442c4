from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.roles import ROLES, STAFF, role_of


class Command(BaseCommand):
    help = (
        "Give a user a role: viewer (read-only pages, usage, playground), operator (also changes "
        "configuration and API keys), staff (also manages users in the admin), or none. Without "
        "arguments, list every user's role."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", nargs="?")
        parser.add_argument("role", nargs="?", choices=[*ROLES, "none"])

    @transaction.atomic
    def handle(
        self, *args: Any, username: str | None = None, role: str | None = None, **options: Any
    ) -> None:
        User = get_user_model()
        if username is None:
            for listed in User.objects.order_by("username"):
                self.stdout.write(f"{listed.username}\t{role_of(listed) or 'none'}")
            return
        if role is None:
            raise CommandError("Name the role: " + ", ".join([*ROLES, "none"]) + ".")
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(
                f"No user named {username!r} (manage.py createsuperuser, or the admin, creates "
                "one)."
            )
        user.groups.remove(*Group.objects.filter(name__in=ROLES))
        if role != "none":
            user.groups.add(Group.objects.get(name=role))
        user.is_staff = role == STAFF
        if role != STAFF:
            user.is_superuser = False
        user.save(update_fields=["is_staff", "is_superuser"])
        user = User.objects.get(pk=user.pk)  # a fresh permission cache
        self.stdout.write(f"{user.username} is now {role_of(user) or 'without a role'}.")
