from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def encryption_keys_from_the_environment(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """In production every process must share the keys: a key generated into one host's var/
    cannot decrypt what another host stored."""
    if (
        getattr(settings, "EMBEDDED", False)
        or os.environ.get("GATEWAY_ENCRYPTION_KEYS", "").strip()
    ):
        return []
    return [
        Warning(
            "GATEWAY_ENCRYPTION_KEYS is not set: upstream API keys are encrypted with a key "
            "generated into "
            f"{settings.VAR_DIR / 'encryption_keys'}, which other hosts and containers do not "
            "have.",
            hint="Set GATEWAY_ENCRYPTION_KEYS to the same Fernet key(s) on every process "
            "(docs/reliability.md).",
            id="targetgroups.W001",
        )
    ]
