"""Open live boards must not each hold a database connection (found by make bench's boards point).

The board's event stream is an async view whose session and user look-ups run in the
request's own thread; Django closes that thread's database connection when the response
ends, which for an endless stream is when the board closes. 50 boards held 50 PostgreSQL
connections and the 51st page got "too many clients" (docs/benchmarks.md, the first run of
the cost points). The gateway runs in its own process here (uvicorn), as in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from django.conf import settings
from django.test import Client

from tests.factories import make_balancer, make_instance
from tests.live_server import LiveGateway, database_url

pytestmark = pytest.mark.django_db(transaction=True)

BOARDS = 8


@pytest.fixture
def live(transactional_db: Any) -> Iterator[LiveGateway]:
    server = LiveGateway()
    yield server
    server.stop()


def connections_to_the_test_database() -> int:
    name = settings.DATABASES["default"]["NAME"]
    with psycopg.connect(database_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_open_boards_do_not_each_hold_a_database_connection(live: LiveGateway) -> None:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    make_balancer(
        name="watched",
        serving_name="watched",
        routes=[
            {
                "name": "main",
                "intent": "x",
                "instance": make_instance(),
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    get_user_model().objects.create_user("board-viewer", password="a-long-test-password")
    call_command("set_role", "board-viewer", "viewer")
    client = Client()
    client.force_login(get_user_model().objects.get(username="board-viewer"))
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    url = live.base_url + "/balancers/watched/board/events/"

    worker = next(iter(live.worker_pids()), live.process.pid)  # one worker: uvicorn itself

    def threads() -> int:
        status = open(f"/proc/{worker}/status").read()
        return int(status.split("Threads:")[1].split()[0])

    async def watch() -> tuple[int, int, list[int]]:
        from django.db import connections

        await asyncio.to_thread(connections.close_all)  # this process's own, out of the count
        before = await asyncio.to_thread(connections_to_the_test_database)
        threads_before.append(threads())
        opened = asyncio.Queue[int]()
        stop = asyncio.Event()

        async def board(http: httpx.AsyncClient) -> None:
            async with http.stream("GET", url) as response:
                await opened.put(response.status_code)
                if response.status_code == 200:
                    async for _line in response.aiter_lines():
                        if stop.is_set():
                            return

        async with httpx.AsyncClient(
            timeout=httpx.Timeout(20, read=None),
            cookies={settings.SESSION_COOKIE_NAME: cookie},
            limits=httpx.Limits(max_connections=BOARDS + 2),
        ) as http:
            tasks = [asyncio.create_task(board(http)) for _ in range(BOARDS)]
            statuses = [await asyncio.wait_for(opened.get(), 30) for _ in range(BOARDS)]
            await asyncio.sleep(1.5)  # every stream open, the lanes rendered at least once
            during = await asyncio.to_thread(connections_to_the_test_database)
            threads_during.append(threads())
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return before, during, statuses

    threads_before: list[int] = []
    threads_during: list[int] = []
    before, during, statuses = asyncio.run(watch())
    assert statuses == [200] * BOARDS
    # The state watcher (one per watched balancer) and the hub may hold one or two; never
    # one per open board.
    assert during - before <= 2, f"{during - before} connections held by {BOARDS} open boards"
    # Nor a thread each (Django's handler gave each stream its own, kept while it was open: 50
    # boards took the worker from 9 to 59 threads); they share one, the state watcher another.
    assert threads_during[0] - threads_before[0] <= 3, (
        f"{threads_during[0] - threads_before[0]} threads started by {BOARDS} open boards"
    )
