from __future__ import annotations

import asyncio

from celery import shared_task


@shared_task(ignore_result=True)
def probe_instances() -> int:
    """Probe every enabled instance (beat: every GATEWAY_PROBE_SECONDS)."""
    from gateway.probes import probe_all

    return len(asyncio.run(probe_all()))
