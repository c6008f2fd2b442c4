"""Upstream API keys are stored encrypted (Fernet) and decrypted when the snapshot compiles."""

from __future__ import annotations

import io
import json

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from config.env import envfernetkeys
from gateway.hotpath.snapshot import build_config
from targetgroups.models import Instance
from tests.factories import make_instance

SECRET = "sk-UPSTREAM-SECRET-4242"


def stored_value(instance: Instance) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT api_key_encrypted FROM targetgroups_instance WHERE id = %s", [instance.pk]
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_dumpdata_never_prints_an_upstream_key() -> None:
    make_instance(provider="openai", base_url="http://127.0.0.1:9/v1", api_key=SECRET)
    out = io.StringIO()

    call_command("dumpdata", "targetgroups.instance", stdout=out)

    assert SECRET not in out.getvalue()
    (row,) = json.loads(out.getvalue())
    assert row["fields"]["api_key_encrypted"].startswith("gAAAAA")


@pytest.mark.django_db
def test_the_database_holds_a_token_and_the_snapshot_the_key() -> None:
    instance = make_instance(provider="openai", base_url="http://127.0.0.1:9/v1", api_key=SECRET)

    assert SECRET not in stored_value(instance) and stored_value(instance).startswith("gAAAAA")
    assert build_config(1).instances[instance.pk].api_key == SECRET
    assert Instance.objects.get(pk=instance.pk).has_api_key


@pytest.mark.django_db
def test_the_api_and_the_instance_page_stay_write_only(admin_client) -> None:
    created = admin_client.post(
        "/api/instances/",
        {
            "instance_id": "inst_k",
            "provider": "openai",
            "model": "m",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": SECRET,
        },
        content_type="application/json",
    )
    assert (
        created.status_code == 201
        and SECRET not in created.content.decode()
        and created.json()["has_api_key"]
    )
    page = admin_client.get("/instances/inst_k/").content.decode()
    assert SECRET not in page and "stored" in page
    # A blank key field keeps the stored key; the clear box removes it.
    instance = Instance.objects.get(instance_id="inst_k")
    form = {
        "instance_id": "inst_k",
        "provider": "openai",
        "model": "m2",
        "base_url": "http://127.0.0.1:9/v1",
        "workload_kind": "chat",
        "input_price_per_million": "0",
        "output_price_per_million": "0",
        "quality_tier": "3",
        "connect_timeout": "5",
        "first_byte_timeout": "60",
        "request_timeout": "300",
        "enabled": "on",
        "api_key": "",
    }
    assert admin_client.post("/instances/inst_k/", form).status_code == 302
    instance.refresh_from_db()
    assert instance.model == "m2" and instance.api_key == SECRET
    assert (
        admin_client.post("/instances/inst_k/", {**form, "clear_api_key": "on"}).status_code == 302
    )
    instance.refresh_from_db()
    assert not instance.has_api_key


@pytest.mark.django_db
def test_keys_set_in_the_admin_are_stored_encrypted(admin_client) -> None:
    form = {
        "instance_id": "inst_adm",
        "provider": "openai",
        "model": "m",
        "base_url": "http://127.0.0.1:9/v1",
        "workload_kind": "chat",
        "input_price_per_million": "0",
        "output_price_per_million": "0",
        "quality_tier": "3",
        "connect_timeout": "5",
        "first_byte_timeout": "60",
        "request_timeout": "300",
        "options": "{}",
        "enabled": "on",
        "api_key": SECRET,
    }
    response = admin_client.post("/admin/targetgroups/instance/add/", form)
    assert response.status_code == 302, response.content.decode()[-3000:]
    instance = Instance.objects.get(instance_id="inst_adm")
    assert instance.api_key == SECRET and SECRET not in stored_value(instance)


@pytest.mark.django_db
def test_rotation_reencrypts_every_key_under_the_new_one(settings) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.GATEWAY_ENCRYPTION_KEYS = [old]
    instance = make_instance(provider="openai", base_url="http://127.0.0.1:9/v1", api_key=SECRET)
    make_instance()  # no key: left alone

    settings.GATEWAY_ENCRYPTION_KEYS = [new, old]
    out = io.StringIO()
    call_command("reencrypt_secrets", stdout=out)
    assert "Re-encrypted 1 upstream API key" in out.getvalue()

    settings.GATEWAY_ENCRYPTION_KEYS = [new]  # the old key is gone
    assert Instance.objects.get(pk=instance.pk).api_key == SECRET
    assert Fernet(new).decrypt(stored_value(instance).encode()).decode() == SECRET


@pytest.mark.django_db
def test_a_key_no_configured_key_opens_is_reported_not_sent(settings, caplog) -> None:
    settings.GATEWAY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    instance = make_instance(provider="openai", base_url="http://127.0.0.1:9/v1", api_key=SECRET)
    settings.GATEWAY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    assert build_config(1).instances[instance.pk].api_key == ""
    assert f"instance {instance.instance_id}" in caplog.text
    with pytest.raises(CommandError, match=instance.instance_id):
        call_command("reencrypt_secrets", stdout=io.StringIO())


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_existing_plain_keys() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("targetgroups", "0001_initial")])
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO targetgroups_instance (instance_id, display_name, provider, base_url, "
                "model, api_key, workload_kind, input_price_per_million, output_price_per_million, "
                "quality_tier, connect_timeout, first_byte_timeout, request_timeout, options, "
                "enabled, created_at, updated_at) VALUES ('inst_old', '', 'openai', "
                "'http://127.0.0.1:9/v1', 'm', %s, 'chat', 0, 0, 3, 5, 60, 300, '{}', true, now(), "
                "now())",
                [SECRET],
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    instance = Instance.objects.get(instance_id="inst_old")
    assert instance.api_key == SECRET and SECRET not in stored_value(instance)


def test_a_bad_encryption_key_stops_the_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SB_KEYS", "not-a-key")
    with pytest.raises(ImproperlyConfigured, match="SB_KEYS: key 1 is not a Fernet key"):
        envfernetkeys("SB_KEYS", fallback_file=tmp_path / "keys")
    good = Fernet.generate_key().decode()
    monkeypatch.setenv("SB_KEYS", f"{good}, {Fernet.generate_key().decode()}")
    assert envfernetkeys("SB_KEYS", fallback_file=tmp_path / "keys")[0] == good


def test_embedded_mode_generates_one_key_into_a_private_file(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SB_KEYS", raising=False)
    path = tmp_path / "var" / "encryption_keys"
    first = envfernetkeys("SB_KEYS", fallback_file=path)
    assert envfernetkeys("SB_KEYS", fallback_file=path) == first and len(first) == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"
