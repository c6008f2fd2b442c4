from __future__ import annotations

import asyncio

from celery import shared_task


@shared_task(ignore_result=True)
def probe_instances() -> int:
    """Probe every enabled instance (beat: every GATEWAY_PROBE_SECONDS)."""
    from gateway.probes import probe_all
    from gateway.upstream.http import close_pools

    async def probe_and_close() -> int:
        try:
            return len(await probe_all())
        finally:
            close_pools()  # this loop ends with the task: leave no idle connection behind

    return asyncio.run(probe_and_close())


@shared_task(ignore_result=True)
def rollup_usage() -> int:
    """Sum new usage events into hourly rollups and prune old raw events (beat: every GATEWAY_ROLLUP_SECONDS)."""
    from gateway.reporting.rollups import rollup_usage as run

    return run().events


@shared_task(ignore_result=True)
def purge_stored_responses() -> int:
    """Delete stored /v1/responses answers past their retention (beat: hourly)."""
    from gateway.services import stored_responses_purge

    return stored_responses_purge()
