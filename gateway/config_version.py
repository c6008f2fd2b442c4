"""The config version: bumped on every configuration write, read by gateway workers.

The database row is the record; with REDIS_URL set the number is mirrored to a
Redis key so that every worker on every host sees a change within one poll
interval without touching the database.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import transaction

from gateway.models import ConfigState
from gateway.redis_client import redis_sync

logger = logging.getLogger(__name__)

REDIS_KEY = "sb:config_version"


def config_version_bump() -> int:
    # Versions are compared for inequality only. Taking the clock in milliseconds when it
    # is ahead keeps a version from ever repeating, even after the row or Redis is reset.
    with transaction.atomic():
        state, _ = ConfigState.objects.select_for_update().get_or_create(pk=1)
        state.version = max(state.version + 1, int(time.time() * 1000))
        state.save(update_fields=["version", "updated_at"])
    if settings.REDIS_URL:
        try:
            redis_sync().set(REDIS_KEY, state.version)
        except Exception:  # Redis down: workers still see the DB row on their next poll
            logger.warning("could not publish config version to Redis", exc_info=True)
    return state.version


def config_version_from_db() -> int:
    return ConfigState.objects.filter(pk=1).values_list("version", flat=True).first() or 0
