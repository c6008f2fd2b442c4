"""Requests-per-minute limits per gateway API key.

A fixed one-minute window. With REDIS_URL the count is shared by every worker
(one pipelined INCR + EXPIRE per request, only for keys that have a limit);
without Redis each process counts on its own. While Redis is down or hung (see
gateway/hotpath/redis_client.py) each process counts locally, carrying on from the
last shared count it saw: a limiter outage must not become a gateway outage,
nor a wait.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

_local: dict[tuple[int, int], int] = {}


async def check_rate_limit(key_pk: int, limit: int) -> int | None:
    """None when allowed; else the seconds to wait (for Retry-After)."""
    now = time.time()
    window = int(now // 60)
    retry_after = max(1, int(60 - now % 60 + 0.999))
    count = _local.get((key_pk, window), 0) + 1
    if settings.REDIS_URL:
        from gateway.hotpath.redis_client import RedisUnavailable, call_async

        name = f"sb:rl:{key_pk}:{window}"

        async def incr(client: Any) -> int:
            async with client.pipeline(transaction=False) as pipe:
                pipe.incr(name)
                pipe.expire(name, 120)
                shared, _ = await pipe.execute()
            return int(shared)

        try:
            count = await call_async(incr)
        except RedisUnavailable:
            pass  # counted locally; the breaker logs the outage
    if len(_local) > 10_000:
        _local.clear()
    _local[(key_pk, window)] = count
    return retry_after if count > limit else None
