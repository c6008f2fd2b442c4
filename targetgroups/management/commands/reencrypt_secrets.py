from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from targetgroups.encryption import UnreadableSecret, reencrypt
from targetgroups.models import Instance


class Command(BaseCommand):
    help = (
        "Rewrite every stored upstream API key under the first key of GATEWAY_ENCRYPTION_KEYS. "
        "Run it after putting a new key first; then the old key can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        done, unreadable = 0, []
        for pk, instance_id, token in Instance.objects.exclude(api_key_encrypted="").values_list(
            "pk", "instance_id", "api_key_encrypted"
        ):
            try:
                fresh = reencrypt(token)
            except UnreadableSecret:
                unreadable.append(instance_id)
                continue
            # update(): the secret itself is unchanged, so no config change and no new updated_at.
            Instance.objects.filter(pk=pk, api_key_encrypted=token).update(api_key_encrypted=fresh)
            done += 1
        self.stdout.write(
            f"Re-encrypted {done} upstream API key{'s' if done != 1 else ''} under the first key."
        )
        if unreadable:
            raise CommandError(
                "No key in GATEWAY_ENCRYPTION_KEYS opens the stored key of: "
                + ", ".join(unreadable)
                + ". Add the key that encrypted them back (after the first), or set those keys again."
            )
