"""Gateway API key authentication: hashed keys, looked up in the process's snapshot."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication

from gateway.hotpath import errors
from gateway.hotpath.snapshot import GatewayConfig, KeySpec
from gateway.models import hash_api_key


def bearer_token(meta: dict[str, Any]) -> str | None:
    header = meta.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    # Azure-style `api-key`, Anthropic-style `x-api-key`
    return meta.get("HTTP_API_KEY") or meta.get("HTTP_X_API_KEY") or None


def authenticate_key(meta: dict[str, Any], config: GatewayConfig) -> KeySpec:
    token = bearer_token(meta)
    if token is None:
        raise errors.unauthorized()
    key = config.keys.get(hash_api_key(token))
    if key is None:
        raise errors.unauthorized("Invalid API key.")
    return key


class GatewayPrincipal:
    """What DRF sees as `request.user` on the gateway views."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, key: KeySpec) -> None:
        self.key = key


class GatewayKeyAuthentication(BaseAuthentication):
    """DRF authentication class for gateway keys; the config is loaded before DRF runs."""

    def authenticate(self, request: Any) -> tuple[GatewayPrincipal, None]:
        config: GatewayConfig = request._request.gateway_config
        return GatewayPrincipal(authenticate_key(config=config, meta=request._request.META)), None

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="smart-balancers"'
