"""The gateway through a PostgreSQL restart, and a usage row the database refuses (issue 10, points
1, 2, 13).

The restart tests run the real gateway (uvicorn, 2 workers) against a PostgreSQL
server of their own (tests/fault_servers.py), restart that server under traffic,
then revoke a key. The configuration is written by `manage.py` subprocesses
against that server, as an operator's API call would write it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import psycopg
import pytest

from gateway.hotpath.usage import UsageRecord, UsageRecorder
from gateway.models import UsageDeadLetter, UsageEvent
from tests.fault_servers import PostgresServer, own_postgres, own_redis
from tests.live_server import ROOT, LiveGateway

logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise

WORKERS = 2
OUTAGE_SECONDS = 6.0  # the server is down this long (longer than the old writer's backoff steps)
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


def manage(database_url: str, redis_url: str, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def django(database_url: str, redis_url: str, code: str) -> object:
    """Run `code` in a Django shell on that database; its last printed line, as JSON."""
    out = manage(database_url, redis_url, "shell", "-v", "0", "-c", code)
    return json.loads(out.strip().splitlines()[-1])


SEED = """
import json
from tests.factories import make_api_key, make_balancer, make_instance
inst = make_instance(instance_id="sim-{mode}")
make_balancer(name="pg-{mode}", serving_name="pg-{mode}",
              routes=[{{"name": "main", "intent": "x", "instance": inst,
                        "priority": 1, "is_default": True}}])
steady, steady_secret = make_api_key(name="steady-{mode}")
doomed, doomed_secret = make_api_key(name="doomed-{mode}")
print(json.dumps({{"steady": steady.pk, "steady_secret": steady_secret, "doomed": doomed.pk,
                  "doomed_secret": doomed_secret}}))
"""

CONFIG_CHANGE = """
import json
from gateway.hotpath.config_version import config_version_from_db
from targetgroups.models import Instance
inst = Instance.objects.get(instance_id="sim-{mode}")
inst.display_name = "changed before the restart"
inst.save()
print(json.dumps(config_version_from_db()))
"""

# Revoke as the API does (gateway.services), then say when it was committed (wall clock).
REVOKE = """
import json, time
from gateway.models import ApiKey
from gateway.services import api_key_revoke
api_key_revoke(key=ApiKey.objects.get(pk={pk}))
print(json.dumps(time.time()))
"""


def fresh_client(gateway: LiveGateway) -> httpx.Client:
    """A new connection per request, so that the requests spread over the workers."""
    return httpx.Client(
        base_url=gateway.base_url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
    )


def chat(client: httpx.Client, model: str, secret: str) -> int:
    response = client.post(
        "/v1/chat/completions",
        json={"model": model, **HELLO},
        headers={"Authorization": f"Bearer {secret}"},
    )
    return response.status_code


def applied(client: httpx.Client, model: str, secret: str, version: object) -> bool:
    """Whether the worker that answers routes from `version` (a request first: a worker loads its
    config then)."""
    return (
        chat(client, model, secret) == 200
        and client.get("/healthz").json()["config_version"] == version
    )


class Traffic(threading.Thread):
    """Requests on one key, one after another, until stopped; what each got, and when it was
    sent."""

    def __init__(self, gateway: LiveGateway, model: str, secret: str, pause: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.gateway, self.model, self.secret, self.pause = gateway, model, secret, pause
        self.answers: list[tuple[float, int | str]] = []  # (wall-clock time sent, status or error)
        self.halt = threading.Event()

    def run(self) -> None:
        with fresh_client(self.gateway) as client:
            while not self.halt.is_set():
                sent = time.time()
                try:
                    status: int | str = chat(client, self.model, self.secret)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.answers.append((sent, status))
                time.sleep(self.pause)

    @property
    def served(self) -> list[float]:
        return [sent for sent, status in self.answers if status == 200]

    @property
    def other(self) -> list[int | str]:
        return [status for _, status in self.answers if status != 200]

    def refused_since(self, moment: float, run: int = 10) -> float | None:
        """When the key began to get only 401s after `moment` (at least `run` in a row), if it
        has."""
        start, length = None, 0
        for sent, status in self.answers:
            if sent < moment:
                continue
            if status == 401:
                start, length = (start if length else sent), length + 1
            else:
                start, length = None, 0
        return start if length >= run else None

    def stop(self) -> None:
        self.halt.set()
        self.join(15)


def count_events(database_url: str, api_key_id: int, *, distinct: bool = False) -> int:
    what = "count(DISTINCT request_id)" if distinct else "count(*)"
    with psycopg.connect(database_url, connect_timeout=2) as conn:
        row = conn.execute(
            f"SELECT {what} FROM gateway_usageevent WHERE api_key_id = %s", (api_key_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for_events(
    database_url: str, api_key_id: int, wanted: int, timeout: float
) -> float | None:
    """Seconds until at least `wanted` events of that key are in the database (None: not within
    `timeout`)."""
    start = time.time()
    while time.time() - start < timeout:
        with contextlib.suppress(psycopg.Error):
            if count_events(database_url, api_key_id) >= wanted:
                return time.time() - start
        time.sleep(0.05)
    return None


@dataclass
class Restart:
    mode: str
    served_before_up: int  # requests answered before the restarted server took connections
    served: int  # every request answered 200 on the steady key, before, during and after
    events: int  # usage events of the steady key in the database at the end
    distinct_events: int  # of those, different request ids
    outage_events_after: (
        float | None
    )  # seconds from "up" until the events served before "up" were written
    revoked_after: float | None  # seconds from the revocation's commit until the key got only 401s
    log: str  # the gateway's log from the stop on


@pytest.fixture(scope="module")
def postgres() -> Iterator[tuple[PostgresServer, str]]:
    with own_postgres() as server:
        url = server.createdb("gateway")
        manage(url, "", "migrate", "--no-input", "-v", "0")
        yield server, url


@pytest.fixture(scope="module", params=["redis", "database"])
def restart(
    request: pytest.FixtureRequest, postgres: tuple[PostgresServer, str]
) -> Iterator[Restart]:
    """One PostgreSQL restart under traffic, workers reading the config version from Redis or from
    the database."""
    server, url = postgres
    mode: str = request.param
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(own_redis()).url if mode == "redis" else ""
        keys = django(url, redis_url, SEED.format(mode=mode))
        assert isinstance(keys, dict)
        model = f"pg-{mode}"
        gateway = LiveGateway(
            workers=WORKERS,
            extra_env={
                "DATABASE_URL": url,
                "REDIS_URL": redis_url,
                "GATEWAY_CONFIG_POLL_SECONDS": "0.5",
                "GATEWAY_USAGE_FLUSH_SECONDS": "0.2",
            },
        )
        stack.callback(gateway.stop)
        client = stack.enter_context(fresh_client(gateway))
        deadline = time.time() + 15
        while (
            chat(client, model, keys["doomed_secret"]) != 200
        ):  # not the steady key: its events are counted
            assert time.time() < deadline, gateway.log()
            time.sleep(0.1)
        # A config change every worker applies before the restart: their threads now hold
        # connections.
        version = django(url, redis_url, CONFIG_CHANGE.format(mode=mode))
        deadline = time.time() + 10
        while not all(applied(client, model, keys["doomed_secret"], version) for _ in range(10)):
            assert time.time() < deadline, "the workers did not apply the config change"
            time.sleep(0.1)
        assert chat(client, model, keys["doomed_secret"]) == 200

        traffic = Traffic(gateway, model, keys["steady_secret"])
        traffic.start()
        stack.callback(traffic.stop)
        time.sleep(1.0)
        log_start = len(gateway.log())
        server.stop()
        time.sleep(OUTAGE_SECONDS)
        server.start()
        up = time.time()
        served_before_up = sum(1 for at in traffic.served if at < up)
        catch_up: dict[str, float | None] = {}
        watcher = threading.Thread(
            target=lambda: catch_up.update(
                after=wait_for_events(url, keys["steady"], served_before_up, timeout=20)
            )
        )
        watcher.start()

        doomed = Traffic(gateway, model, keys["doomed_secret"])  # asks while the key is revoked
        doomed.start()
        stack.callback(doomed.stop)
        revoked_at = django(url, redis_url, REVOKE.format(pk=keys["doomed"]))
        assert isinstance(revoked_at, float)
        while time.time() - revoked_at < 20 and doomed.refused_since(revoked_at) is None:
            time.sleep(0.1)  # ten 401s in a row, on new connections: every worker applied it
        doomed.stop()
        refused = doomed.refused_since(revoked_at)
        revoked_after = None if refused is None else refused - revoked_at
        watcher.join(25)
        time.sleep(1.0)  # traffic after the restart too
        traffic.stop()
        assert not traffic.other, f"the steady key got {traffic.other}"
        wait_for_events(url, keys["steady"], len(traffic.served), timeout=15)
        yield Restart(
            mode=mode,
            served_before_up=served_before_up,
            served=len(traffic.served),
            events=count_events(url, keys["steady"]),
            distinct_events=count_events(url, keys["steady"], distinct=True),
            outage_events_after=catch_up.get("after"),
            revoked_after=revoked_after,
            log=gateway.log()[log_start:],
        )


def test_revoked_key_stops_working_within_a_second_of_postgres_answering_again(
    restart: Restart,
) -> None:
    print(
        f"[{restart.mode}] revoked key refused {restart.revoked_after} s after the revocation "
        "committed"
    )
    assert restart.revoked_after is not None, (
        f"the revoked key still works 20 s later:\n{restart.log[-3000:]}"
    )
    assert restart.revoked_after < 1.0


def test_no_usage_event_is_lost_across_a_postgres_restart(restart: Restart) -> None:
    print(
        f"[{restart.mode}] {restart.served} served ({restart.served_before_up} before the server "
        "was up), "
        f"{restart.events} events; the outage's events written {restart.outage_events_after} s "
        "after it was up"
    )
    assert restart.served_before_up > 50  # requests were answered while the database was down
    assert restart.events == restart.distinct_events == restart.served
    # The writer catches up within a few seconds of the database answering, not after a long
    # backoff.
    assert restart.outage_events_after is not None and restart.outage_events_after < 3.0


def test_a_postgres_restart_logs_one_failure_and_one_recovery_line_per_worker(
    restart: Restart,
) -> None:
    # The request log's one line per request (logger gateway.requests) is not what this counts.
    lines = [
        line for line in restart.log.splitlines() if line.strip() and "gateway.requests" not in line
    ]
    print(f"[{restart.mode}] the log through the restart:", *lines, sep="\n  ")
    refresh_failing = [line for line in lines if "config refresh fail" in line]
    if restart.mode == "database":  # every poll reads the version from the database
        assert len(refresh_failing) == WORKERS, restart.log
        assert sum("config refresh recovered after" in line for line in lines) == WORKERS, (
            restart.log
        )
    # the version is in Redis: nothing to fail until the config changes, and then it just reconnects
    else:
        assert refresh_failing == [], restart.log
    assert sum("usage writes failing" in line for line in lines) == WORKERS, restart.log
    assert sum("usage writes recovered after" in line for line in lines) == WORKERS, restart.log
    assert "Traceback" not in restart.log
    # Per worker: the poller's and the writer's two lines, and at most two of an embedded probe
    # or rollup run that fell in the outage.
    assert len(lines) <= 6 * WORKERS, restart.log


# A usage record the database refuses, injected into the recorder directly.


def usage_record(n: int, **values: object) -> UsageRecord:
    record = UsageRecord(
        created_at=datetime.now(UTC),
        request_id=f"req-{n}",
        endpoint="chat",
        status_code=200,
        latency_ms=1.0,
    )
    for name, value in values.items():
        setattr(record, name, value)
    return record


POISONS: dict[int, dict[str, object]] = {
    3: {"completion_tokens": -16},  # the column's check (CheckViolation)
    7: {"prompt_tokens": 5_000_000_000},  # past the integer column (NumericValueOutOfRange)
    8: {"prompt_tokens": 2**70},  # past 64 bits too
    12: {"attempts": 70_000},  # past a smallint
    20: {"serving_name": "x" * 500},  # longer than the column
    21: {"model": "a\x00b"},  # PostgreSQL text holds no NUL
    30: {"attempt_log": [{"unserialisable": object()}]},  # not JSON
    31: {"cost_usd": Decimal("1e30")},  # past numeric(16, 10)
    32: {"latency_ms": "fast"},  # not a number
    39: {"request_id": "bad\x00id", "completion_tokens": -1},  # poisoned, and so is its id
}


@pytest.mark.django_db(transaction=True)
def test_a_poisoned_usage_row_blocks_no_later_rows_and_is_kept_aside_with_its_reason() -> None:
    recorder = UsageRecorder(max_buffer=1000, flush_seconds=60)
    recorder._thread = object()  # no writer thread: we flush by hand
    for n in range(45):
        recorder.record(usage_record(n, **POISONS.get(n, {})))

    assert recorder.flush() == 45 - len(POISONS)
    assert recorder.pending == 0
    written = set(UsageEvent.objects.values_list("request_id", flat=True))
    assert written == {f"req-{n}" for n in range(45) if n not in POISONS}

    aside = {letter.request_id: letter for letter in UsageDeadLetter.objects.all()}
    assert recorder.set_aside == len(POISONS) == len(aside)
    assert "CheckViolation" in aside["req-3"].reason
    assert "NumericValueOutOfRange" in aside["req-7"].reason
    assert "StringDataRightTruncation" in aside["req-20"].reason
    assert "NUL" in aside["req-21"].reason
    assert "JSON" in aside["req-30"].reason or "serializ" in aside["req-30"].reason
    assert (
        json.loads(aside["req-3"].record)["completion_tokens"] == -16
    )  # the event as it was recorded
    assert "bad\\x00id" in aside  # kept, its NUL spelled out

    # The writer goes on: the next records are written as usual.
    recorder.record(usage_record(100))
    assert recorder.flush() == 1
    assert UsageEvent.objects.filter(request_id="req-100").exists()
