"""Production defaults: `check --deploy` is clean, cookies are secure, HSTS is on, and a weak
SECRET_KEY stops the process."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config.env import envproxyheader, envsecret

ROOT = Path(__file__).resolve().parents[2]
PRINT_SETTINGS = (
    "from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, "
    "s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER)"
)


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What `make serve` runs with, and none of the test suite's own settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_", "SESSION_", "CSRF_", "GATEWAY_", "DJANGO_", "DEBUG"))
    }
    db = settings.DATABASES["default"]
    env.update(
        DATABASE_URL=(
            f"postgres://{db.get('USER') or 'postgres'}@{db.get('HOST') or '127.0.0.1'}"
            f":{db.get('PORT') or 5432}/{db['NAME']}"
        ),
        REDIS_URL=settings.REDIS_URL or "redis://127.0.0.1:6379/0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="gateway.example.com",
        GATEWAY_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_under_production_settings(tmp_path) -> None:
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_defaults_to_https_and_plain_http_is_a_choice(tmp_path) -> None:
    secure = manage(production_env(tmp_path), "shell", "-v", "0", "-c", PRINT_SETTINGS)
    plain = manage(
        production_env(tmp_path, GATEWAY_HTTPS="0"), "shell", "-v", "0", "-c", PRINT_SETTINGS
    )
    proxied = manage(
        production_env(
            tmp_path, SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https", SECURE_HSTS_SECONDS="3600"
        ),
        "shell",
        "-v",
        "0",
        "-c",
        PRINT_SETTINGS,
    )

    assert secure.stdout.split() == ["True", "True", "True", "31536000", "None"], secure.stderr
    assert plain.stdout.split() == ["False", "False", "False", "0", "None"], plain.stderr
    assert proxied.stdout.strip() == "True True True 3600 ('HTTP_X_FORWARDED_PROTO', 'https')", (
        proxied.stderr
    )


def test_embedded_mode_stays_on_plain_http(tmp_path) -> None:
    env = production_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3")
    result = manage(env, "shell", "-v", "0", "-c", PRINT_SETTINGS)
    assert result.stdout.split() == ["False", "False", "False", "0", "None"], result.stderr


@pytest.mark.parametrize(
    "weak",
    [
        "a" * 32,
        "a" * 80,
        "abcd" * 20,
        secrets.token_urlsafe(30),
        "django-insecure-" + secrets.token_urlsafe(50),
    ],
)
def test_a_weak_secret_key_is_refused(weak: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SB_SECRET", weak)
    with pytest.raises(ImproperlyConfigured, match="SB_SECRET"):
        envsecret("SB_SECRET", fallback_file=tmp_path / "secret_key")


def test_a_weak_secret_key_stops_the_process(tmp_path) -> None:
    result = manage(production_env(tmp_path, SECRET_KEY="a" * 32), "check")
    assert result.returncode != 0 and "SECRET_KEY is too weak" in result.stderr


def test_a_strong_secret_key_is_accepted(tmp_path, monkeypatch) -> None:
    strong = secrets.token_urlsafe(50)
    monkeypatch.setenv("SB_SECRET", strong)
    assert envsecret("SB_SECRET", fallback_file=tmp_path / "secret_key") == strong


def test_the_proxy_header_setting_is_checked(monkeypatch) -> None:
    monkeypatch.setenv("SB_PROXY", "X-Forwarded-Proto")
    with pytest.raises(ImproperlyConfigured, match="SB_PROXY"):
        envproxyheader("SB_PROXY")
    monkeypatch.setenv("SB_PROXY", "x-forwarded-proto: https")
    assert envproxyheader("SB_PROXY") == ("HTTP_X_FORWARDED_PROTO", "https")


@pytest.mark.django_db
def test_only_browsers_are_redirected_to_https(client, settings) -> None:
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/balancers/")["Location"].startswith("https://")
    assert client.get("/admin/").status_code == 301
    for path in ("/healthz", "/v1/models", "/api/instances/", "/api/schema/"):
        assert client.get(path).status_code != 301, path


def test_check_deploy_warns_when_the_encryption_keys_are_not_shared(tmp_path) -> None:
    env = production_env(tmp_path)
    del env["GATEWAY_ENCRYPTION_KEYS"]
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0 and "targetgroups.W001" in result.stderr + result.stdout
