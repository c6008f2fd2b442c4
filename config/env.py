"""Typed helpers that read settings from the environment and fail loudly.

A bad value raises ImproperlyConfigured naming the variable, so a typo in a
deployment stops the process at start instead of misbehaving later.
"""

from __future__ import annotations

import math
import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), got {raw!r}")


def envint(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def envfloat(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name} must be a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        # An interval of 0 would be a busy loop: every float setting names its floor.
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def envlist(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def envproxyheader(name: str) -> tuple[str, str] | None:
    """A header a TLS-terminating proxy sets, as "X-Forwarded-Proto: https" (Django's
    SECURE_PROXY_SSL_HEADER); unset or empty: None."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    header, sep, value = raw.partition(":")
    if not sep or not header.strip() or not value.strip():
        raise ImproperlyConfigured(f'{name} must look like "X-Forwarded-Proto: https", got {raw!r}')
    return "HTTP_" + header.strip().upper().replace("-", "_"), value.strip()


# Django's own bar for a SECRET_KEY (security.W009): long, varied, not the startproject default.
SECRET_MIN_LENGTH = 50
SECRET_MIN_DISTINCT_CHARACTERS = 5


def _write_private(path: Path, value: str) -> None:
    """Write a generated secret readable by this user only, all at once (no half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    os.replace(partial, path)


def envsecret(name: str, *, fallback_file: Path) -> str:
    """The secret from the environment, else one generated once into a file.

    A weak secret (short, few distinct characters, Django's insecure default) stops the
    process: sessions, CSRF tokens and password resets are signed with it.
    """
    value = os.environ.get(name)
    if value:
        if len(value) < SECRET_MIN_LENGTH or len(set(value)) < SECRET_MIN_DISTINCT_CHARACTERS:
            raise ImproperlyConfigured(
                f"{name} is too weak: use at least {SECRET_MIN_LENGTH} characters with at least "
                f"{SECRET_MIN_DISTINCT_CHARACTERS} different ones, e.g. the output of "
                "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
            )
        if value.startswith("django-insecure-"):
            raise ImproperlyConfigured(
                f"{name} is Django's generated development key; make a new one"
            )
        return value
    if fallback_file.exists():
        return fallback_file.read_text().strip()
    value = secrets.token_urlsafe(50)
    _write_private(fallback_file, value)
    return value


def envfernetkeys(name: str, *, fallback_file: Path) -> list[str]:
    """Fernet keys, comma-separated: the first encrypts, every one decrypts.

    Unset: one key generated once into `fallback_file` (embedded mode, like the secret key).
    Several hosts must share the keys: set the variable there.
    """
    from cryptography.fernet import Fernet

    raw = os.environ.get(name, "").strip()
    if raw:
        keys = [key.strip() for key in raw.split(",") if key.strip()]
    elif fallback_file.exists():
        keys = [
            key.strip()
            for key in fallback_file.read_text().replace("\n", ",").split(",")
            if key.strip()
        ]
    else:
        keys = [Fernet.generate_key().decode()]
        try:
            _write_private(fallback_file, keys[0] + "\n")
        except OSError as exc:
            raise ImproperlyConfigured(
                f"{name} is not set and no key can be kept in {fallback_file} ({exc})"
            ) from None
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: key {position} is not a Fernet key (32 url-safe base64-encoded bytes; "
                "make one with "
                "python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from None
    return keys
