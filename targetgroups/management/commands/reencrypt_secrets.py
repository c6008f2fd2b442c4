from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from targetgroups.encryption import UnreadableSecret, reencrypt
from targetgroups.models import Instance, ProviderCredential


class Command(BaseCommand):
    help = (
        "Rewrite every stored upstream API key (instances' and provider credentials') under the "
        "first key of GATEWAY_ENCRYPTION_KEYS. Run it after putting a new key first; then the old "
        "key can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        done, unreadable = 0, []
        for model, name_field, label in (
            (Instance, "instance_id", "instance"),
            (ProviderCredential, "provider", "provider credential"),
        ):
            rows = model.objects.exclude(api_key_encrypted="").values_list(
                "pk", name_field, "api_key_encrypted"
            )
            for pk, name, token in rows:
                try:
                    fresh = reencrypt(token)
                except UnreadableSecret:
                    unreadable.append(f"{label} {name}")
                    continue
                # update(): the secret itself is unchanged, so no config change, no new updated_at.
                model.objects.filter(pk=pk, api_key_encrypted=token).update(api_key_encrypted=fresh)
                done += 1
        self.stdout.write(
            f"Re-encrypted {done} upstream API key{'s' if done != 1 else ''} under the first key."
        )
        if unreadable:
            raise CommandError(
                "No key in GATEWAY_ENCRYPTION_KEYS opens the stored key of: "
                + ", ".join(unreadable)
                + ". Add the key that encrypted them back (after the first), or set those keys "
                "again."
            )
