"""Open boards for bench/run.py: N logged-in SSE connections to a balancer's board stream.

    python bench/boards.py http://127.0.0.1:8000/balancers/bench/board/events/ \\
        --cookie sessionid=... --boards 50

Opens every stream (GET with the session cookie, as the board page's EventSource does), prints
``READY <n open>`` once each has answered 200 and sent its first line (or ``READY`` with fewer
when some failed within --connect-timeout), then reads every event until SIGTERM or SIGINT and
prints one JSON line: streams opened, statuses, events by type, the request events the boards
were sent (each ``requests`` message carries a batch, plus a count of the ones a board could
not draw), streams that ended early, and this client's own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import sys
import time
from typing import Any

import httpx
import orjson


class Tally:
    def __init__(self) -> None:
        self.statuses: collections.Counter[str] = collections.Counter()
        self.events: collections.Counter[str] = collections.Counter()
        self.request_events = 0  # requests drawn on a board (summed over the boards)
        self.request_skipped = 0  # requests a batch left out (summed over the boards)
        self.ended = 0  # streams that opened, then ended or broke before the stop
        self.opened = 0


async def board(
    client: httpx.AsyncClient, url: str, tally: Tally, opened: asyncio.Event, ready: list[int]
) -> None:
    was_open = False
    try:
        async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
            tally.statuses[str(response.status_code)] += 1
            if response.status_code != 200:
                return
            event = ""
            async for line in response.aiter_lines():
                if not was_open:
                    was_open = True
                    tally.opened += 1
                    ready[0] += 1
                    opened.set()
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    tally.events[event] += 1
                    if event == "requests":
                        with_batch = orjson.loads(line[6:])
                        tally.request_events += len(with_batch.get("events", ()))
                        tally.request_skipped += int(with_batch.get("skipped", 0))
                elif not line:
                    event = ""
    except httpx.HTTPError as exc:
        tally.statuses[type(exc).__name__] += 1
    # Reached only when the stream ended by itself: the stop cancels the task instead.
    tally.ended += was_open


async def run(url: str, cookie: str, boards: int, connect_timeout: float) -> dict[str, Any]:
    tally = Tally()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    name, _, value = cookie.partition("=")
    limits = httpx.Limits(max_connections=boards + 5, max_keepalive_connections=0)
    timeout = httpx.Timeout(connect_timeout, read=None)
    async with httpx.AsyncClient(cookies={name: value}, limits=limits, timeout=timeout) as client:
        opened = asyncio.Event()
        ready = [0]
        tasks = [loop.create_task(board(client, url, tally, opened, ready)) for _ in range(boards)]
        deadline = time.monotonic() + connect_timeout
        while ready[0] < boards and time.monotonic() < deadline:
            if all(t.done() for t in tasks):
                break
            await asyncio.sleep(0.05)
        print(f"READY {ready[0]}", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "boards": boards,
        "opened": tally.opened,
        "statuses": dict(tally.statuses),
        "events": dict(tally.events),
        "request_events": tally.request_events,
        "request_skipped": tally.request_skipped,
        "ended_early": tally.ended,
        "client_cpu_s": round(time.process_time(), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--cookie", required=True, help="name=value of the session cookie")
    parser.add_argument("--boards", type=int, default=50)
    parser.add_argument("--connect-timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.url, args.cookie, args.boards, args.connect_timeout))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
