"""Fit each balancer's built-in router once per configuration content, and share it through Redis.

A configuration change makes every worker build a new snapshot; without sharing, each one
fits the same router from the same routes at the same moment. With Redis:

- the model is stored under `sb:router:<fingerprint>` (router_models.fitted.fit_fingerprint:
  the routes' names, intents and examples, and the fitting code), for TTL_SECONDS;
- a worker that finds it loads it (router_models.blob: signed with a key derived from
  SECRET_KEY, bounded in size, its shapes and values checked against the routes) instead of
  fitting; a blob it refuses (corrupt, another key, other routes or code) is logged and the
  worker fits locally, then stores its own over it;
- the first worker to miss claims the fit (`SET NX` on `sb:router:<fingerprint>:fitting`,
  CLAIM_SECONDS); the others wait for the stored model while the claim stands, and fit
  locally if it lapses without one (the claimant died or Redis went away).

Without Redis, or while it is unavailable, every worker fits for itself, as before. This runs
at snapshot build, in a thread: requests are served from the previous snapshot meanwhile.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from gateway.hotpath.redis_client import RedisUnavailable, call_sync
from gateway.router_models.blob import MAX_BYTES, BlobRefused
from gateway.router_models.fitted import FittedIntentClassifier, LocalRouter, build_local_router
from gateway.router_models.local import RouteIntent

logger = logging.getLogger(__name__)

KEY_PREFIX = "sb:router:"
TTL_SECONDS = 24 * 3600
CLAIM_SECONDS = 2.0
WAIT_SECONDS = 0.01  # between two looks for the claimant's model

# How this process came by its fitted routers: "fitted", "loaded", "refused" (tests, /metrics).
counts: collections.Counter[str] = collections.Counter()


@functools.lru_cache(maxsize=4)
def blob_key(secret_key: str) -> bytes:
    return hashlib.sha256(b"smart-balancers router blob\0" + secret_key.encode()).digest()


def _load(routes: Sequence[RouteIntent], key: str) -> tuple[FittedIntentClassifier | None, bool]:
    """The stored model (None if absent or refused) and whether a claim on fitting it stands."""
    try:
        data, claimed = call_sync(
            lambda client: (
                client.pipeline(transaction=False).get(key).exists(key + ":fitting").execute()
            )
        )
    except RedisUnavailable:
        return None, False
    if data is None:
        return None, bool(claimed)
    try:
        model = FittedIntentClassifier.from_blob(routes, data, blob_key(settings.SECRET_KEY))
    except BlobRefused as exc:
        counts["refused"] += 1
        logger.warning("shared router model %s refused (%s): fitting it here", key, exc)
        return None, False
    counts["loaded"] += 1
    return model, False


def _claim(key: str) -> bool:
    """True when this worker should fit (it claimed the fit, or Redis cannot say)."""
    try:
        return bool(
            call_sync(
                lambda client: client.set(
                    key + ":fitting", 1, nx=True, px=int(CLAIM_SECONDS * 1000)
                )
            )
        )
    except RedisUnavailable:
        return True


def _store(key: str, model: FittedIntentClassifier, claimed: bool) -> None:
    data = model.to_blob(blob_key(settings.SECRET_KEY))
    if len(data) > MAX_BYTES:
        logger.info("router model %s not shared: %d bytes, over %d", key, len(data), MAX_BYTES)
        data = b""

    def write(client: Any) -> Any:
        pipe = client.pipeline(transaction=False)
        if data:
            pipe.set(key, data, ex=TTL_SECONDS)
        if claimed:
            pipe.delete(key + ":fitting")
        return pipe.execute()

    try:
        call_sync(write)
    except RedisUnavailable:
        pass


def shared_router(routes: Sequence[RouteIntent], fingerprint: str) -> LocalRouter:
    """The built-in router for `routes`: loaded from another worker's fit when there is one."""
    if not any(e.strip() for r in routes for e in r.examples):
        return build_local_router(routes)  # zero-shot models are built, not fitted: cheap
    if not settings.REDIS_URL:
        counts["fitted"] += 1
        return FittedIntentClassifier(routes)
    key = KEY_PREFIX + fingerprint
    model, _ = _load(routes, key)
    if model is not None:
        return model
    claimed = _claim(key)
    if not claimed:
        deadline = time.monotonic() + CLAIM_SECONDS
        while time.monotonic() < deadline:
            time.sleep(WAIT_SECONDS)
            model, pending = _load(routes, key)
            if model is not None:
                return model
            if not pending:  # the claimant gave up, or its model was refused
                break
    try:
        fitted = FittedIntentClassifier(routes)
        counts["fitted"] += 1
    except BaseException:
        if claimed:
            _store_nothing(key)
        raise
    _store(key, fitted, claimed)
    return fitted


def _store_nothing(key: str) -> None:
    """Release a claim without a model (the fit failed): the others fit for themselves."""
    try:
        call_sync(lambda client: client.delete(key + ":fitting"))
    except RedisUnavailable:
        pass
