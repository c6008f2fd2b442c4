"""Usage events for the /v1 answers the proxy does not record itself.

gateway.hotpath.proxy records a usage event for every request it routes (answered,
failed upstream, cut short). Every other answer at the /v1 door is recorded
here, through the same off-the-hot-path recorder, so that N requests leave N
events: rejections (400 bad body, 401 no or bad key, 403 balancer or route
override not allowed, 404 unknown model or path, 405 wrong method, 413 body too
large, 429 rate limit, 503 configuration not loaded yet), and the answers that
route nothing (the model list, OPTIONS, /v1/explain).

What is known is kept: the status, the error code, the key when the request
carried a valid one, the serving name when the body (or path) named one, and
the endpoint. Such events cost nothing and carry no tokens; a status of 400 or
more counts as an error on the usage page and in the rollups.
"""

from __future__ import annotations

import random
import re
import time
from datetime import UTC, datetime
from typing import Any

from gateway.hotpath.snapshot import GatewayConfig, KeySpec, holder
from gateway.hotpath.usage import UsageRecord, recorder
from gateway.models import hash_api_key

# The /v1 endpoints, as the usage event's `endpoint` names them.
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/embeddings": "embeddings",
    "/v1/models": "models",
    "/v1/explain": "explain",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/responses": "responses",
    "/v1/completions": "completions",
}
UNKNOWN_ENDPOINT = "unknown"
_SERVING_NAME_MAX = 128  # UsageEvent.serving_name
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def is_recorded_path(path: str) -> bool:
    """The /v1 door (and its DRF-free twin); /healthz is not a client request."""
    return path == "/v1" or path.startswith("/v1/")


def request_id_for(given: str) -> str:
    """The client's X-Request-Id when it is a sane one, else a new id."""
    # Request ids need to be unique, not unguessable: the PRNG avoids a getrandom() syscall per
    # request.
    return given if given and _REQUEST_ID.match(given) else f"{random.getrandbits(128):032x}"


def endpoint_of(path: str) -> str:
    name = ENDPOINTS.get(path)
    if name is not None:
        return name
    if path.startswith("/v1/models/"):
        return "models"
    return "responses" if path.startswith("/v1/responses/") else UNKNOWN_ENDPOINT


def clean_serving_name(value: Any) -> str:
    """A client-given model name, fit to store: text, no NUL (PostgreSQL refuses it), bounded."""
    if not isinstance(value, str):
        return ""
    return value.replace("\x00", "")[:_SERVING_NAME_MAX]


def key_from_headers(headers: dict[str, Any], config: GatewayConfig | None) -> KeySpec | None:
    """The valid gateway key a request carried, if any (no error when it carried none)."""
    if config is None:
        return None
    from gateway.hotpath.auth import bearer_token

    token = bearer_token(headers)
    return config.keys.get(hash_api_key(token)) if token else None


def record_outcome(
    *,
    status: int,
    endpoint: str,
    request_id: str,
    started: float,
    created_at: datetime,
    error_code: str = "",
    key: KeySpec | None = None,
    serving_name: str = "",
    config: GatewayConfig | None = None,
) -> None:
    """One usage event for an answer the proxy did not record. O(1), no I/O."""
    config = config or holder.peek()
    balancer = (
        config.routing.balancers.get(serving_name) if config is not None and serving_name else None
    )
    recorder.record(
        UsageRecord(
            created_at=created_at,
            request_id=request_id,
            endpoint=endpoint,
            status_code=status,
            latency_ms=round((time.monotonic() - started) * 1000, 3),
            api_key_id=key.pk if key is not None else None,
            balancer_id=balancer.pk if balancer is not None else None,
            serving_name=serving_name,
            team_id=key.team_pk if key is not None else None,
            error_type=error_code[:60] if status >= 400 else "",
        )
    )


def now() -> tuple[float, datetime]:
    """(monotonic start, wall-clock created_at) of a request."""
    return time.monotonic(), datetime.now(UTC)
