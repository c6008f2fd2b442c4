"""ASGI lifespan: write out buffered usage events, metrics and request log lines at shutdown.

Django answers no lifespan messages itself, and uvicorn ends a process stopped by
SIGTERM by re-raising the signal after its graceful shutdown, so atexit handlers
never run there; the lifespan shutdown event is the one reliable moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

ASGIApp = Callable[
    [
        dict[str, Any],
        Callable[[], Awaitable[dict[str, Any]]],
        Callable[[dict[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


def with_lifespan(app: ASGIApp) -> ASGIApp:
    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                from gateway.hotpath import accesslog, metrics
                from gateway.hotpath.usage import recorder

                await asyncio.to_thread(recorder.stop)
                metrics.flush()  # the counts waiting for the next tick
                await asyncio.to_thread(accesslog.stop)  # the request log lines still queued
                await send({"type": "lifespan.shutdown.complete"})
                return

    return application
