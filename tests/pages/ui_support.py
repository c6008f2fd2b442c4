"""Fixtures shared by the page tests and the browser tests (tests/browser imports them too)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # Every test logs an operator in; the production hasher costs most of a second each time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def _close_stray_connections(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """Let the test database be dropped at the end.

    The in-process gateway (smoke tests) reads the configuration and writes usage events
    from worker threads whose database connections outlive the tests.
    """
    yield
    from django.db import connection

    from gateway.hotpath.usage import recorder

    with django_db_blocker.unblock():
        recorder.stop(timeout=2)  # its last flush writes what is pending, from this thread
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND pid <> pg_backend_pid()"
                )


def usage_writer_reset() -> None:
    """Write what the in-process gateway recorded, and stop the writer thread it started.

    Left running, the thread wakes every second for the rest of the session, and a tick
    that lands in another test's database flush can deadlock it. The next usage event
    starts a fresh thread, as in a fresh process.
    """
    from gateway.hotpath.usage import recorder

    recorder.flush()
    if recorder._thread is not None:
        recorder.stop(timeout=2)
        recorder._thread = None
        recorder._stop.clear()


@pytest.fixture
def usage_writer() -> Iterator[None]:
    yield
    usage_writer_reset()


@pytest.fixture
def demo(db: Any) -> None:
    from balancers.demo import seed_demo

    seed_demo()
