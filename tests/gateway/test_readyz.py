"""/readyz: ready only with the routing snapshot loaded and the database (and Redis) answering.

The outage test runs the real gateway (uvicorn) against a PostgreSQL server of its
own, stops it and starts it again; the machine's PostgreSQL is never touched.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tests.fault_servers import RedisServer, own_postgres, own_redis
from tests.live_server import ROOT, LiveGateway

pytestmark = pytest.mark.django_db(transaction=True)

READY_ENV = {"GATEWAY_READY_TIMEOUT_SECONDS": "0.5", "GATEWAY_READY_CACHE_SECONDS": "0.2"}


def wait_for_status(url: str, status: int, seconds: float) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    deadline = started + seconds
    while True:
        response = httpx.get(url, timeout=5)
        if response.status_code == status or time.monotonic() > deadline:
            return response, time.monotonic() - started
        time.sleep(0.1)


def test_readyz_is_ready_with_the_snapshot_database_and_redis_up() -> None:
    gateway = LiveGateway(extra_env=READY_ENV)
    try:
        # No /v1 request has loaded the snapshot: /readyz starts the load itself.
        response, _ = wait_for_status(gateway.base_url + "/readyz", 200, 10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ready"
        assert body["checks"] == {"routing_snapshot": "ok", "database": "ok", "redis": "ok"}
        assert isinstance(body["config_version"], int)
        assert "x-request-id" in response.headers
    finally:
        gateway.stop()


def migrate(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("TEST_DATABASE_NAME", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )


def test_readyz_fails_while_the_database_is_unreachable_and_recovers_after() -> None:
    with own_postgres() as postgres:
        url = postgres.createdb("readyz")
        migrate(url)
        gateway = LiveGateway(extra_env={**READY_ENV, "DATABASE_URL": url})
        try:
            ready = gateway.base_url + "/readyz"
            response, _ = wait_for_status(ready, 200, 10)
            assert response.status_code == 200, response.text

            postgres.stop()
            response, took = wait_for_status(ready, 503, 5)
            print(f"\n/readyz answered 503 {took:.2f} s after PostgreSQL stopped")
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "not_ready" and error["type"] == "server_error"
            assert error["message"].startswith("Not ready: database: ")
            assert "routing_snapshot" not in error["message"] and "redis" not in error["message"]
            # Liveness is not readiness: the process is alive and says so.
            assert httpx.get(gateway.base_url + "/healthz", timeout=5).status_code == 200

            postgres.start()
            response, took = wait_for_status(ready, 200, 10)
            print(f"/readyz answered 200 {took:.2f} s after PostgreSQL started again")
            assert response.status_code == 200, response.text
        finally:
            gateway.stop()
        log = gateway.log()
        # Logged when the verdict changes, not once per probe; no traceback.
        assert log.count("not ready: database:") == 1, log
        assert "Traceback" not in log, log


def test_readyz_names_redis_when_redis_is_down_and_recovers_after() -> None:
    with own_redis() as redis_server:
        gateway = LiveGateway(extra_env={**READY_ENV, "REDIS_URL": redis_server.url})
        try:
            ready = gateway.base_url + "/readyz"
            assert wait_for_status(ready, 200, 10)[0].status_code == 200
            redis_server.kill()
            response, _ = wait_for_status(ready, 503, 5)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["message"].startswith("Not ready: redis: ")
            restarted = RedisServer(port=redis_server.port)
            restarted.start()
            try:
                assert wait_for_status(ready, 200, 10)[0].status_code == 200
            finally:
                restarted.remove()
        finally:
            gateway.stop()


def test_readyz_keeps_its_verdict_for_the_cache_period(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.hotpath import readiness as module

    checks: list[str] = []
    settings.GATEWAY_READY_CACHE_SECONDS = 60
    monkeypatch.setattr(module, "holder", LoadedHolder())
    monkeypatch.setattr(module, "_database_ping", lambda: checks.append("database"))
    probe = module.Readiness()

    async def many() -> list[Any]:
        return await asyncio.gather(*(probe.verdict() for _ in range(20)))

    verdicts = asyncio.run(many()) + asyncio.run(many())
    assert checks == ["database"]  # 40 probes, one check
    assert all(verdict is verdicts[0] for verdict in verdicts)
    assert verdicts[0].ready and verdicts[0].config_version == 7


class LoadedHolder:
    def peek(self) -> Any:
        return SimpleNamespace(version=7)


def test_a_hung_dependency_is_named_within_the_bound_and_checked_once_at_a_time(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from gateway.hotpath import readiness as module

    release = threading.Event()
    calls: list[str] = []

    def hung_ping() -> None:
        calls.append("database")
        release.wait(10)

    settings.GATEWAY_READY_TIMEOUT_SECONDS = 0.1
    settings.GATEWAY_READY_CACHE_SECONDS = 0
    settings.GATEWAY_READY_CHECKS = ["database"]
    monkeypatch.setattr(module, "holder", LoadedHolder())
    monkeypatch.setattr(module, "_database_ping", hung_ping)
    probe = module.Readiness()
    try:
        started = time.monotonic()
        first = asyncio.run(probe.verdict())
        second = asyncio.run(probe.verdict())
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
    assert not first.ready and first.problems() == ["database: no answer within 0.1 s"]
    assert not second.ready and calls == [
        "database"
    ]  # the hung check is waited on, not started again


def test_dependencies_left_out_of_the_ready_checks_are_not_checked(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.hotpath import readiness as module

    def refused() -> None:
        raise ConnectionRefusedError("refused")

    settings.GATEWAY_READY_CHECKS = []
    monkeypatch.setattr(module, "holder", LoadedHolder())
    monkeypatch.setattr(module, "_database_ping", refused)
    monkeypatch.setattr(module, "_redis_ping", refused)
    verdict = asyncio.run(module.Readiness().verdict())
    assert verdict.ready
    assert verdict.checks == {
        "routing_snapshot": "ok",
        "database": "not checked",
        "redis": "not checked",
    }
    settings.GATEWAY_READY_CHECKS = ["database", "redis"]
    verdict = asyncio.run(module.Readiness().verdict())
    assert verdict.problems() == [
        "database: ConnectionRefusedError: refused",
        "redis: ConnectionRefusedError: refused",
    ]


def test_readyz_names_the_routing_snapshot_while_it_is_not_loaded_and_recovers(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot's first build fails, then takes a while: /readyz says so, then is ready."""
    import threading

    from django.db import connection

    from gateway.hotpath import readiness as module
    from gateway.hotpath import snapshot, v1_api
    from gateway.hotpath.asgi import GatewayASGIHandler

    settings.ALLOWED_HOSTS = ["*"]
    settings.GATEWAY_READY_CHECKS = []  # the snapshot alone (the others have their own tests)
    settings.GATEWAY_READY_CACHE_SECONDS = 0
    settings.GATEWAY_READY_TIMEOUT_SECONDS = 0.3
    real_build = snapshot.build_config
    release = threading.Event()
    builds: list[str] = []

    def build(version: int) -> Any:
        builds.append("build")
        if len(builds) == 1:
            raise RuntimeError("the snapshot build failed")
        release.wait(10)  # the second build takes longer than the readiness bound
        try:
            return real_build(version)
        finally:
            connection.close()  # the build thread's: the test database can be dropped after

    holder = snapshot.ConfigHolder()  # this process's, as a new worker's: nothing loaded yet
    monkeypatch.setattr(snapshot, "build_config", build)
    monkeypatch.setattr(module, "holder", holder)
    monkeypatch.setattr(v1_api, "readiness", module.Readiness())

    async def probes() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=GatewayASGIHandler())
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            failed = await client.get("/readyz")
            loading = await client.get("/readyz")
            release.set()
            deadline = time.monotonic() + 10
            while (ready := await client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, ready.text
                await asyncio.sleep(0.05)
            return [failed, loading, ready]

    failed, loading, ready = asyncio.run(probes())
    for response in (failed, loading):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "not_ready"
    assert failed.json()["error"]["message"] == (
        "Not ready: routing_snapshot: not loaded (RuntimeError: the snapshot build failed)."
    )
    assert loading.json()["error"]["message"] == "Not ready: routing_snapshot: loading."
    assert ready.json()["checks"]["routing_snapshot"] == "ok" and holder.peek() is not None
    assert builds == ["build", "build"]  # the failed build was retried by the next probe
