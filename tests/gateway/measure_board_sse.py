"""What open live boards cost the gateway: run by hand, not in the suite (the file name is not test_*).

    TEST_DATABASE_NAME=test_x DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
    REDIS_URL=redis://127.0.0.1:6379/N python -m pytest -q -s tests/gateway/measure_board_sse.py

One LiveGateway (one uvicorn worker, Redis on) serves /v1 and the pages. The load is
CONCURRENCY clients sending chat requests to a simulator instance for SECONDS; it runs
once with no board open and once with BOARDS event streams open on the same balancer,
in alternation, ROUNDS times. Reported: requests/s served, the gateway process's CPU
seconds per run, and the events the boards received. The load generator runs on the
same machine (and the machine is shared): the figures compare the two runs, they are
not the gateway's capacity.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import make_api_key, make_balancer, make_instance
from tests.live_server import LiveGateway

BOARDS = 50
CONCURRENCY = 16
SECONDS = 10.0
ROUNDS = 3


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


async def load(url: str, secret: str, seconds: float) -> int:
    done = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(
        timeout=10,
        headers={"Authorization": f"Bearer {secret}"},
        limits=httpx.Limits(max_connections=CONCURRENCY),
    ) as client:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                r = await client.post(
                    url,
                    json={
                        "model": "measure-board",
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                )
                assert r.status_code == 200, r.text
                done += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done


async def boards(url: str, cookie: str, stop: asyncio.Event, received: list[int]) -> None:
    async def one() -> None:
        async with httpx.AsyncClient(timeout=None, cookies={"sessionid": cookie}) as client:
            async with client.stream("GET", url) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("event: requests"):
                        received[0] += 1
                    if stop.is_set():
                        return

    tasks = [asyncio.create_task(one()) for _ in range(BOARDS)]
    await stop.wait()
    await asyncio.sleep(0.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run(
    gateway: LiveGateway, secret: str, cookie: str, *, with_boards: bool
) -> dict[str, Any]:
    pid = worker_pid(gateway.process.pid)
    stop = asyncio.Event()
    received = [0]
    watchers = (
        asyncio.create_task(
            boards(
                gateway.base_url + "/balancers/measure-board/board/events/", cookie, stop, received
            )
        )
        if with_boards
        else None
    )
    await asyncio.sleep(2.0 if with_boards else 0.5)  # the streams open
    cpu, started = cpu_seconds(pid), time.monotonic()
    served = await load(gateway.v1 + "/chat/completions", secret, SECONDS)
    elapsed, cpu = time.monotonic() - started, cpu_seconds(pid) - cpu
    stop.set()
    if watchers is not None:
        await watchers
    return {"rps": served / elapsed, "cpu": cpu, "batches": received[0]}


def worker_pid(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if kids else pid


@pytest.mark.django_db(transaction=True)
def test_measure_open_boards_cost(django_user_model: Any) -> None:
    from django.test import Client

    instance = make_instance(instance_id="measure-sim", model="sim-measure")
    make_balancer(
        name="measure-board",
        serving_name="measure-board",
        routes=[
            {
                "name": "main",
                "intent": "Everything.",
                "instance": instance,
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    _, secret = make_api_key()
    user = django_user_model.objects.create_superuser("measure", "m@example.com", "x")
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value
    gateway = LiveGateway(extra_env={"GATEWAY_HTTPS": "0"})
    try:
        gateway.wait_for_config()
        asyncio.run(load(gateway.v1 + "/chat/completions", secret, 2.0))  # warm up
        results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for _ in range(ROUNDS):
            for with_boards in (False, True):
                results[with_boards].append(
                    asyncio.run(run(gateway, secret, cookie, with_boards=with_boards))
                )
    finally:
        gateway.stop()
    for with_boards, runs in results.items():
        label = f"{BOARDS} boards open" if with_boards else "no board open"
        print(
            f"\n{label}: "
            + "; ".join(
                f"{r['rps']:.0f} req/s, {r['cpu']:.2f} CPU s, {r['batches']} batches received"
                for r in runs
            )
        )
        print(
            f"  median {statistics.median(r['rps'] for r in runs):.0f} req/s, "
            f"CPU per 1000 requests {statistics.median(1000 * r['cpu'] / (r['rps'] * SECONDS) for r in runs):.3f} s"
        )
