"""Upstream API keys at rest: the plain `api_key` column becomes a Fernet token in
`api_key_encrypted` (targetgroups/encryption.py), existing keys encrypted in place."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.db import migrations, models


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in settings.GATEWAY_ENCRYPTION_KEYS])


def encrypt_keys(apps: Any, schema_editor: Any) -> None:
    Instance = apps.get_model("targetgroups", "Instance")
    fernet = _fernet()
    for instance in Instance.objects.exclude(api_key="").only("pk", "api_key"):
        token = fernet.encrypt(instance.api_key.encode()).decode()
        Instance.objects.filter(pk=instance.pk).update(api_key_encrypted=token)


def decrypt_keys(apps: Any, schema_editor: Any) -> None:
    Instance = apps.get_model("targetgroups", "Instance")
    fernet = _fernet()
    for instance in Instance.objects.exclude(api_key_encrypted="").only("pk", "api_key_encrypted"):
        plain = fernet.decrypt(instance.api_key_encrypted.encode()).decode()
        Instance.objects.filter(pk=instance.pk).update(api_key=plain)


class Migration(migrations.Migration):
    dependencies = [("targetgroups", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="instance",
            name="api_key_encrypted",
            field=models.TextField(
                blank=True,
                default="",
                editable=False,
                help_text="The upstream API key, encrypted. Write-only: never shown again.",
            ),
        ),
        migrations.RunPython(encrypt_keys, decrypt_keys),
        migrations.RemoveField(model_name="instance", name="api_key"),
    ]
