"""Long-lived threads replace a database connection that died (gateway.db)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from gateway.db import drop_connections, in_thread
from gateway.hotpath.snapshot import build_config
from gateway.probes import probe_all
from gateway.reporting.rollups import rollup_usage_in_thread
from tests.factories import make_instance

pytestmark = pytest.mark.django_db(transaction=True)


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def terminate_elsewhere(pid: int) -> None:
    """What a PostgreSQL restart does to every connection: the server closes it (from another
    thread)."""

    def terminate() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as other:
        other.submit(terminate).result()


def test_jobs_in_worker_threads_reconnect_after_their_connection_is_closed_by_the_server():
    make_instance(provider="simulator")

    async def scenario() -> None:
        # One worker thread, as the event loop's executor: every job below runs on the same
        # connection.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        first = await in_thread(backend_pid)
        terminate_elsewhere(first)
        assert (await in_thread(build_config, 1)).instances  # the config poller's unit of work
        second = await in_thread(backend_pid)
        assert second != first
        terminate_elsewhere(second)
        await rollup_usage_in_thread()  # the rollups'
        terminate_elsewhere(await in_thread(backend_pid))
        assert [r.status for r in await probe_all()] == ["healthy"]  # the probes' reads and saves
        await in_thread(drop_connections)

    asyncio.run(scenario())
