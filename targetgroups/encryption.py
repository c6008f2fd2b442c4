"""Upstream API keys at rest: Fernet tokens under GATEWAY_ENCRYPTION_KEYS.

Fernet is AES-128-CBC with an HMAC-SHA256 over the token (`cryptography`), so a
token can be neither read nor altered without the key. The keys come from the
environment, comma-separated: the first encrypts, every one decrypts
(MultiFernet). To rotate: put a new key first, run `manage.py reencrypt_secrets`
(every stored key is rewritten under the new one), then drop the old key.

Decryption happens when the gateway compiles its routing snapshot (and when a
page or form needs the stored key back), never per request.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class UnreadableSecret(Exception):
    """A stored token that none of GATEWAY_ENCRYPTION_KEYS opens."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.GATEWAY_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    """The token for a secret; "" stays "" (no key stored)."""
    if not plaintext:
        return ""
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken:
        raise UnreadableSecret(
            "a stored upstream key cannot be decrypted with GATEWAY_ENCRYPTION_KEYS (was the key "
            "that encrypted it removed?)"
        ) from None


def reencrypt(token: str) -> str:
    """The same secret under the first (newest) key."""
    if not token:
        return ""
    try:
        return _current().rotate(token.encode()).decode()
    except InvalidToken:
        raise UnreadableSecret(
            "a stored upstream key cannot be decrypted with GATEWAY_ENCRYPTION_KEYS"
        ) from None
