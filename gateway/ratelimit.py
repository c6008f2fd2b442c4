"""Requests-per-minute limits per gateway API key.

A fixed one-minute window. With REDIS_URL the count is shared by every worker
(one pipelined INCR + EXPIRE per request, only for keys that have a limit);
without Redis each process counts on its own. If Redis is unreachable the
request is let through: a limiter outage must not become a gateway outage.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

logger = logging.getLogger(__name__)

_local: dict[tuple[int, int], int] = {}


async def check_rate_limit(key_pk: int, limit: int) -> int | None:
    """None when allowed; else the seconds to wait (for Retry-After)."""
    now = time.time()
    window = int(now // 60)
    retry_after = max(1, int(60 - now % 60 + 0.999))
    if settings.REDIS_URL:
        from gateway.redis_client import redis_async

        name = f"sb:rl:{key_pk}:{window}"
        try:
            async with redis_async().pipeline(transaction=False) as pipe:
                pipe.incr(name)
                pipe.expire(name, 120)
                count, _ = await pipe.execute()
        except Exception:
            logger.warning("rate limiter: Redis unreachable, letting the request through", exc_info=True)
            return None
    else:
        count = _local.get((key_pk, window), 0) + 1
        if len(_local) > 10_000:
            _local.clear()
        _local[(key_pk, window)] = count
    return retry_after if count > limit else None
