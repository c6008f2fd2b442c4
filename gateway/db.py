"""Database work in the gateway's long-lived threads: config poller, usage writer, probes, rollups.

Django checks its connections only around an HTTP request (`request_started` and
`request_finished` call `close_old_connections`). A thread that works outside a
request keeps the connection it opened (CONN_MAX_AGE), and after a PostgreSQL
restart that connection is dead for good: every later query fails with "the
connection is closed", and a config poller that never drops it never applies a
change again.

So every unit of work in such a thread starts with `close_old_connections()`: it
drops a connection that failed or outlived CONN_MAX_AGE, and with CONN_HEALTH_CHECKS
(on in settings) the unit's first query pings the connection and reconnects when
the ping fails. A unit that fails on the connection itself drops it at once, so the
next unit starts on a new one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import psycopg
from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, close_old_connections, connections

P = ParamSpec("P")
T = TypeVar("T")


def connection_lost(exc: BaseException) -> bool:
    """The database (or the way to it) failed, not the statement: worth retrying as is."""
    return isinstance(
        exc, OperationalError | InterfaceError | psycopg.OperationalError | psycopg.InterfaceError
    )


def drop_connections() -> None:
    """Close this thread's connections (no query: a dead one is just discarded)."""
    for connection in connections.all(initialized_only=True):
        try:
            connection.close()
        except Exception:  # closing a broken connection may raise; it is gone either way
            connection.connection = None


def unit_of_work(function: Callable[P, T]) -> Callable[P, T]:
    """Run `function` as one unit of database work in a long-lived thread (see the module's
    docstring)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        close_old_connections()
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            if connection_lost(exc):
                drop_connections()
            raise

    return wrapper


async def in_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`function` as a unit of work in a worker thread, awaited from the event loop."""
    return await sync_to_async(unit_of_work(function), thread_sensitive=False)(*args, **kwargs)
