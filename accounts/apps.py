from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def ensure_role_groups(sender: Any = None, using: str = "default", **kwargs: Any) -> None:
    """The role groups with their permissions, after every migrate and flush.

    The data migration creates them; a flush (tests, `manage.py flush`) empties the
    tables and only re-runs post_migrate, so this puts them back.
    """
    from django.contrib.auth.models import Group, Permission

    from accounts.roles import GROUP_PERMISSIONS

    for name, perms in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.using(using).get_or_create(name=name)
        for perm in perms:
            app_label, codename = perm.split(".")
            permission = (
                Permission.objects.using(using)
                .filter(content_type__app_label=app_label, codename=codename)
                .first()
            )
            if permission is not None:
                group.permissions.add(permission)


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and roles"

    def ready(self) -> None:
        post_migrate.connect(ensure_role_groups, sender=self)
