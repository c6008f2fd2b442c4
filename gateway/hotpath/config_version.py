"""The config version: bumped on every configuration write, read by gateway workers.

The database row is the record; with REDIS_URL set the number is mirrored to a Redis key so that
every worker on every host sees a change within one poll interval without touching the database, and
published on the channel `push_channel()` so that a worker need not wait for its poll: it rebuilds
its snapshot as soon as the message arrives (gateway.hotpath.snapshot). The poll stays: a message
lost while Redis was away is picked up on the next tick. Versions only grow, so the key is only ever
raised (`SET_IF_GREATER`): a worker that read a newer version from the database while Redis was away
(or empty after a restart) raises the key when Redis is back, and a late writer never lowers it.
"""

from __future__ import annotations

import functools
import time

from django.conf import settings
from django.db import transaction

from gateway.hotpath.redis_client import RedisUnavailable, call_sync
from gateway.models import ConfigState

REDIS_KEY = "sb:config_version"
CHANNEL_PREFIX = "sb:config:"  # then the Redis database number
# KEYS[1] = max(KEYS[1], ARGV[1]); answers the value now held.
SET_IF_GREATER = """
local current = redis.call('GET', KEYS[1])
if not current or tonumber(ARGV[1]) > tonumber(current) then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return current
"""


def config_version_bump() -> int:
    # Versions are compared for inequality only. Taking the clock in milliseconds when it
    # is ahead keeps a version from ever repeating, even after the row or Redis is reset.
    with transaction.atomic():
        state, _ = ConfigState.objects.select_for_update().get_or_create(pk=1)
        state.version = max(state.version + 1, int(time.time() * 1000))
        state.save(update_fields=["version", "updated_at"])
    if settings.REDIS_URL:
        try:
            call_sync(
                lambda client: (
                    client.pipeline(transaction=False)
                    .eval(SET_IF_GREATER, 1, REDIS_KEY, state.version)
                    .publish(push_channel(settings.REDIS_URL), state.version)
                    .execute()
                )
            )
        except RedisUnavailable:
            pass  # workers read the DB row while Redis is away, and raise the key when it is back
    return state.version


@functools.lru_cache(maxsize=8)
def push_channel(redis_url: str) -> str:
    """The channel of the deployment on `redis_url`: pub/sub ignores the database number, so two
    deployments sharing one Redis server on different databases must not wake each other."""
    from redis.connection import parse_url

    return f"{CHANNEL_PREFIX}{parse_url(redis_url).get('db', 0) or 0}"


def config_version_from_db() -> int:
    return ConfigState.objects.filter(pk=1).values_list("version", flat=True).first() or 0
