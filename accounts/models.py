from __future__ import annotations

from django.db import models


class Role(models.Model):
    """No table: it only carries the two permissions the role groups are made of.

    The groups themselves (viewer, operator, staff) are created by a data migration;
    `accounts.roles` says what each one may do.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("observe", "See boards, usage and configuration; use the playground"),
            ("operate", "Change configuration and gateway API keys"),
        ]

    def __str__(self) -> str:
        return "role"
