"""The project's own fault suite: the production topology under a bounded soak, faults injected.

    .venv/bin/python scripts/soak.py            # make soak: the full run (~5 minutes)
    .venv/bin/python scripts/soak.py --smoke    # make soak-smoke: a few seconds per fault (CI)

What runs, all on 127.0.0.1 and all of this run's own (docs/reliability.md, "The soak"):
- a PostgreSQL cluster and a redis-server of its own on free ports (tests/fault_servers.py),
  so that restarting, killing and freezing them never touches the machine's 5432 or 6379;
- a flapping upstream (an OpenAI-compatible HTTP server in this process): model ``flappy``
  fails a share of requests and is broken outright for part of every cycle, model
  ``steady`` always answers;
- the gateway as ``make serve`` runs it (uvicorn, 2 workers, uvloop, httptools), migrated
  and seeded with a balancer ``soak`` in ordered mode: route ``primary`` (the flappy
  instance) first, route ``fallback`` (the steady instance, the default) second; two
  rate-limited gateway keys (``soak-client``, and ``soak-victim`` which the key-revocation
  phase revokes) and a staff token for the management API;
- Celery worker with beat (probes and rollups) on the same database and Redis.

Then a paced client (httpx, a different prompt on every request, every 5th one streamed,
bounded in count and time) runs through one phase per fault, in order: a baseline without a
fault, PostgreSQL restart, Redis kill and restart, Redis hang (SIGSTOP, then SIGCONT), a
config change (the primary route disabled and enabled again through the management API), a
key revocation, a gateway worker's SIGTERM, another's SIGKILL. Each phase prints one row:
requests, client errors, usage events of accepted requests, recovery time. Exits 1 when a
request was lost or a phase broke its allowance (see `allowances`), 2 when the harness broke.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fault_servers import PostgresServer, RedisServer, free_port  # noqa: E402

PY = sys.executable
# The config change and the revocation come right after the database and Redis faults, so
# they are applied by the workers that lived through those (a replaced worker starts afresh).
FAULTS = (
    "baseline",
    "postgres-restart",
    "redis-kill",
    "redis-hang",
    "config-change",
    "key-revocation",
    "worker-sigterm",
    "worker-sigkill",
)
SERVING_NAME = "soak"
VICTIM_SHARE = (
    4  # every 4th request uses the key that the key-revocation phase revokes (until then)
)
STREAM_SHARE = 5  # every 5th request streams (SSE)
STREAM_BROKEN = 599  # the status recorded for a 200 stream that ended without `data: [DONE]`


class HarnessError(RuntimeError):
    """The harness itself could not run: a server that did not start, a seed that failed..."""


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Plan:
    smoke: bool
    faults: tuple[str, ...]
    seconds: float  # one phase; config-change and key-revocation get half as long again
    lead: float  # seconds of traffic in a phase before its fault
    outage: float  # how long PostgreSQL / Redis stays down or frozen
    rate: float  # requests per second, at most
    concurrency: int
    client_timeout: float
    effect_limit: float  # a config change or revocation must take effect within this
    flap_period: float  # the upstream's cycle: healthy, then broken for flap_broken seconds
    flap_broken: float
    flap_error_share: float  # share of requests failed while "healthy"
    flush_seconds: float  # GATEWAY_USAGE_FLUSH_SECONDS for the gateway
    out: Path

    def phase_seconds(self, fault: str) -> float:
        return self.seconds * 1.5 if fault in ("config-change", "key-revocation") else self.seconds

    @property
    def max_requests(self) -> int:
        return int(self.rate * sum(self.phase_seconds(f) for f in self.faults) * 1.1) + 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds per fault (CI): < 2 minutes in all"
    )
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated, run in the order given; default: {','.join(FAULTS)}",
    )
    parser.add_argument("--seconds", type=float, help="seconds per phase (full 25, smoke 6)")
    parser.add_argument(
        "--outage", type=float, help="seconds a server stays down or frozen (full 5, smoke 2)"
    )
    parser.add_argument("--rate", type=float, help="requests per second (full 25, smoke 20)")
    parser.add_argument("--concurrency", type=int, default=8, help="client connections (default 8)")
    parser.add_argument(
        "--effect-limit",
        type=float,
        default=3.0,
        help="seconds a config change or revocation may take to apply everywhere (default 3)",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "var" / "soak"), help="logs and report.json (default var/soak)"
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        raise SystemExit(
            f"unknown fault(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(FAULTS)}"
        )
    smoke = args.smoke
    seconds = args.seconds or (6.0 if smoke else 25.0)
    outage = args.outage or (2.0 if smoke else 5.0)
    lead = min(5.0, max(1.0, seconds * 0.2))
    if lead + outage >= seconds - 1:
        raise SystemExit(
            f"--seconds {seconds:g} leaves no time to recover after a {outage:g} s outage"
        )
    if args.concurrency < 1:
        raise SystemExit("--concurrency must be at least 1")
    return Plan(
        smoke=smoke,
        faults=faults,
        seconds=seconds,
        lead=lead,
        outage=outage,
        rate=args.rate or (20.0 if smoke else 25.0),
        concurrency=args.concurrency,
        client_timeout=30.0,
        effect_limit=args.effect_limit,
        flap_period=4.0 if smoke else 12.0,
        flap_broken=1.0 if smoke else 4.0,
        flap_error_share=0.1,
        flush_seconds=1.0,
        out=Path(args.out),
    )


# ---------------------------------------------------------------- what happened, and the verdict


@dataclass(frozen=True)
class Outcome:
    """One client request."""

    phase: str
    request_id: str
    key: str  # client | victim
    started: float  # seconds since the soak began
    ended: float
    status: int | None  # None: no HTTP answer (connection error, timeout)
    route: str = ""
    attempts: int = 0
    decision: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class PhaseLog:
    """When a phase's fault happened (seconds since the soak began) and what it found."""

    fault: str
    started: float
    ended: float = 0.0
    fault_at: float | None = None  # the fault injected; for changes, the API call that made it
    fault_end: float | None = None  # the server back (outages) or the change reverted
    failed: str = ""  # the fault could not be injected
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    fault: str
    requests: int
    accepted: int
    client_errors: int
    allowed_errors: int
    events: int  # usage events written for the accepted requests
    allowed_lost: int
    recovery_s: float | None  # None: never, within the phase
    max_latency_s: float
    problems: tuple[str, ...]

    @property
    def lost(self) -> int:
        return self.accepted - self.events


def stream_complete(text: str) -> bool:
    """A 200 stream that reached its end: `data: [DONE]`, and no error event before it."""
    return text.rstrip().endswith("data: [DONE]") and '"error"' not in text


def expected_401(outcome: Outcome, revoked_at: float | None) -> bool:
    return (
        outcome.key == "victim"
        and outcome.status == 401
        and revoked_at is not None
        and outcome.started >= revoked_at
    )


def settle_time(
    outcomes: Iterable[Outcome], since: float, is_old: Callable[[Outcome], bool]
) -> float | None:
    """Seconds from `since` until every request started afterwards saw the new state.

    The new state holds from the first request started after the last old one; 0 when no
    request saw the old state. None when the last request started still saw the old state.
    """
    after = sorted((o for o in outcomes if o.started >= since), key=lambda o: o.started)
    old = [i for i, o in enumerate(after) if is_old(o)]
    if not old:
        return 0.0
    if old[-1] == len(after) - 1:
        return None
    return after[old[-1] + 1].started - since


def recovery_time(
    outcomes: Iterable[Outcome], fault_at: float, is_error: Callable[[Outcome], bool]
) -> float | None:
    """Seconds from the fault until requests succeed again: the end of the last failed request
    (0 without one); None when no request succeeded after it."""
    after = [o for o in outcomes if o.ended >= fault_at]
    failures = [o for o in after if is_error(o)]
    if not failures:
        return 0.0
    last = max(o.ended for o in failures)
    if not any(o.ok and o.started >= last for o in after):
        return None
    return last - fault_at


def primary_in_force(outcome: Outcome) -> bool:
    """The primary route was tried: it answered, or it failed and the fallback answered."""
    return outcome.route == "primary" or outcome.attempts > 1


def allowances(phase: PhaseLog, outcomes: list[Outcome], plan: Plan) -> tuple[int, int]:
    """(client errors, lost usage events) a phase may show without failing the soak.

    Zero and zero for every fault but a worker's SIGKILL: that one may fail the requests in
    flight on the killed worker (at most one per client connection), and may lose the usage
    events the killed worker held in memory (at most the requests answered in the two flush
    intervals before the kill): a SIGKILL is not a clean shutdown.
    """
    if phase.fault != "worker-sigkill" or phase.fault_at is None:
        return 0, 0
    window = 2 * plan.flush_seconds
    buffered = sum(
        1 for o in outcomes if o.ok and phase.fault_at - window <= o.ended <= phase.fault_at
    )
    return plan.concurrency, buffered


def phase_row(
    phase: PhaseLog,
    outcomes: list[Outcome],
    event_ids: set[str],
    plan: Plan,
    revoked_at: float | None = None,
) -> Row:
    mine = [o for o in outcomes if o.phase == phase.fault]

    def is_error(o: Outcome) -> bool:
        return not o.ok and not expected_401(o, revoked_at)

    accepted = [o for o in mine if o.ok]
    errors = sum(1 for o in mine if is_error(o))
    events = sum(1 for o in accepted if o.request_id in event_ids)
    allowed_errors, allowed_lost = allowances(phase, mine, plan)
    problems: list[str] = []
    recovery: float | None = 0.0
    if phase.failed:
        problems.append(f"fault not injected: {phase.failed}")
    if phase.fault == "config-change" and phase.fault_at is not None:
        until = phase.fault_end if phase.fault_end is not None else phase.ended
        window = [o for o in mine if o.key == "client" and o.ok and o.started < until]
        recovery = settle_time(window, phase.fault_at, primary_in_force)
    elif phase.fault == "key-revocation" and phase.fault_at is not None:
        victims = [o for o in mine if o.key == "victim" and (o.ok or o.status == 401)]
        recovery = settle_time(victims, phase.fault_at, lambda o: o.ok)
    elif phase.fault_at is not None:
        recovery = recovery_time(mine, phase.fault_at, is_error)
    if phase.fault in ("config-change", "key-revocation") and phase.fault_at is not None:
        what = "the route change" if phase.fault == "config-change" else "the revocation"
        if recovery is None:
            problems.append(f"{what} had not taken effect by the end of the phase")
        elif recovery > plan.effect_limit:
            problems.append(f"{what} took {recovery:.2f} s (allowed {plan.effect_limit:g} s)")
    elif recovery is None:
        problems.append("requests did not succeed again within the phase")
    if errors > allowed_errors:
        problems.append(f"{errors} client errors (allowed {allowed_errors})")
    if len(accepted) - events > allowed_lost:
        problems.append(
            f"{len(accepted) - events} accepted requests without a usage event (allowed "
            f"{allowed_lost})"
        )
    if not mine:
        problems.append("no request was sent")
    return Row(
        fault=phase.fault,
        requests=len(mine),
        accepted=len(accepted),
        client_errors=errors,
        allowed_errors=allowed_errors,
        events=events,
        allowed_lost=allowed_lost,
        recovery_s=recovery,
        max_latency_s=max((o.ended - o.started for o in mine), default=0.0),
        problems=tuple(problems),
    )


def render_table(rows: list[Row]) -> str:
    lines = [
        "| fault | requests | client errors (allowed) | usage events / accepted | recovery s | max "
        "latency s | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        recovery = "never" if row.recovery_s is None else f"{row.recovery_s:.2f}"
        lost = f" (allowed {row.allowed_lost} lost)" if row.allowed_lost else ""
        verdict = "ok" if not row.problems else "FAIL: " + "; ".join(row.problems)
        lines.append(
            f"| {row.fault} | {row.requests} | {row.client_errors} ({row.allowed_errors}) | "
            f"{row.events}/{row.accepted}{lost} | {recovery} | {row.max_latency_s:.2f} | "
            f"{verdict} |"
        )
    return "\n".join(lines)


def exit_status(rows: list[Row]) -> int:
    return 1 if any(row.problems for row in rows) else 0


# ---------------------------------------------------------------- the flapping upstream


class FlappingUpstream:
    """OpenAI-compatible, on loopback, in a thread of this process.

    ``/flappy/v1``: broken (503 on everything, /models included) for the last `broken`
    seconds of every `period`, and a 500 on `error_share` of requests otherwise.
    ``/steady/v1``: always a 200. Both answer after 5-30 ms.
    """

    def __init__(self, *, period: float, broken: float, error_share: float) -> None:
        self.period, self.broken, self.error_share = period, broken, error_share
        self.port = free_port()
        self.started = time.monotonic()
        self.counts: dict[str, int] = {"flappy": 0, "steady": 0, "flappy_failed": 0}
        self._random = random.Random(7)

    def base_url(self, model: str) -> str:
        """Each model under its own path, so that probing one never reads the other's health."""
        return f"http://127.0.0.1:{self.port}/{model}/v1"

    def is_broken(self) -> bool:
        return (time.monotonic() - self.started) % self.period >= self.period - self.broken

    def start(self) -> FlappingUpstream:
        from aiohttp import web

        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_post("/{model}/v1/chat/completions", self._chat)
            app.router.add_get("/{model}/v1/models", self._models)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="flapping-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise HarnessError("the flapping upstream did not start")
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    async def _models(self, request: Any) -> Any:
        from aiohttp import web

        model = request.match_info["model"]
        if model == "flappy" and self.is_broken():
            return web.json_response({"error": {"message": "flapping: broken"}}, status=503)
        return web.json_response({"object": "list", "data": [{"id": model, "object": "model"}]})

    async def _chat(self, request: Any) -> Any:
        from aiohttp import web

        payload = await request.json()
        model = request.match_info["model"]
        self.counts[model] = self.counts.get(model, 0) + 1
        await asyncio.sleep(self._random.uniform(0.005, 0.03))
        if model == "flappy" and (self.is_broken() or self._random.random() < self.error_share):
            self.counts["flappy_failed"] += 1
            status = 503 if self.is_broken() else 500
            return web.json_response(
                {
                    "error": {
                        "message": f"flapping upstream: {status}",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
                status=status,
            )
        prompt = " ".join(str(m.get("content", "")) for m in payload.get("messages", []))
        prompt_tokens = max(1, len(prompt) // 4)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 2,
            "total_tokens": prompt_tokens + 2,
        }
        if payload.get("stream"):
            return await self._stream(request, model, usage)
        return web.json_response(
            {
                "id": "chatcmpl-soak",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Noted."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )

    async def _stream(self, request: Any, model: str, usage: dict[str, int]) -> Any:
        from aiohttp import web

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        def event(data: dict[str, Any]) -> bytes:
            return (
                b"data: "
                + json.dumps(
                    {
                        "id": "chatcmpl-soak",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": model,
                        **data,
                    }
                ).encode()
                + b"\n\n"
            )

        try:
            for delta, finish in (
                ({"role": "assistant", "content": ""}, None),
                ({"content": "Noted"}, None),
                ({"content": "."}, None),
                ({}, "stop"),
            ):
                await response.write(
                    event({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                )
                await asyncio.sleep(0.005)
            await response.write(event({"choices": [], "usage": usage}))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:  # the gateway went away mid-stream (a killed worker)
            pass
        return response


# ---------------------------------------------------------------- the topology

SEED_SCRIPT = r"""
import io, json, os, secrets
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from balancers.services import balancer_save
from gateway.models import ApiKey
from targetgroups.models import Instance

def instance(instance_id, model):
    base = os.environ["SOAK_UPSTREAM_URL"].replace("MODEL", model)
    obj = Instance(instance_id=instance_id, display_name=instance_id, provider="openai",
                   base_url=base, model=model, api_key="sk-soak-upstream", workload_kind="chat",
                   input_price_per_million="0.50", output_price_per_million="1.50",
                   connect_timeout=2, first_byte_timeout=10, request_timeout=20)
    obj.full_clean()
    obj.save()
    return obj

flappy = instance("flappy", "flappy")
steady = instance("steady", "steady")
balancer_save(
    fields={
        "name": "soak", "serving_name": "soak", "workload_kind": "chat", "routing_mode": "ordered"
    },
    routes=[
        {"name": "primary", "instance": flappy, "priority": 1, "is_default": False},
        {"name": "fallback", "instance": steady, "priority": 2, "is_default": True},
    ],
)
keys = {}
for name in ("soak-client", "soak-victim"):
    out = io.StringIO()
    # Rate-limited (far above the soak's rate): every request takes the limiter's path to Redis.
    call_command("create_api_key", name=name, rpm=100000, stdout=out)
    keys[name] = out.getvalue().strip().splitlines()[-1]
admin = get_user_model().objects.create_superuser(
    "soak-admin", "soak@example.invalid", secrets.token_urlsafe(24)
)
print("SOAK_SEED " + json.dumps({
    "client_key": keys["soak-client"], "victim_key": keys["soak-victim"],
    "victim_id": ApiKey.objects.get(name="soak-victim").pk,
    "token": Token.objects.create(user=admin).key,
}))
"""


class Topology:
    """Every server of the run, each stopped by its own pid however the run ends."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.logs = plan.out
        self.logs.mkdir(parents=True, exist_ok=True)
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.upstream: FlappingUpstream | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.celery: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.seed: dict[str, Any] = {}
        self.database_url = ""
        self.secret_key = "soak-" + secrets.token_urlsafe(48)
        self.encryption_key = base64.urlsafe_b64encode(
            secrets.token_bytes(32)
        ).decode()  # a Fernet key

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        assert self.redis is not None
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GATEWAY_", "DJANGO_", "CELERY_"))
        }
        env.pop("TEST_DATABASE_NAME", None)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis.url,
            SECRET_KEY=self.secret_key,
            ALLOWED_HOSTS="127.0.0.1,localhost",
            DEBUG="0",
            VAR_DIR=str(self.logs / "var"),
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
            GATEWAY_USAGE_FLUSH_SECONDS=str(self.plan.flush_seconds),
            # Probes and rollups often enough that the soak sees Celery work through every fault.
            GATEWAY_PROBE_SECONDS="5",
            GATEWAY_ROLLUP_SECONDS="10",
            # The egress policy: the soak's upstream is on loopback, as local model servers are.
            GATEWAY_EGRESS_ALLOW_PRIVATE="1",
            # Every process of a deployment shares the key that encrypts upstream keys.
            GATEWAY_ENCRYPTION_KEYS=self.encryption_key,
        )
        return env

    def start(self) -> None:
        started = time.monotonic()
        self.postgres = PostgresServer()
        self.postgres.start()
        self.database_url = self.postgres.createdb("soak")
        self.redis = RedisServer()
        self.redis.start()
        self.upstream = FlappingUpstream(
            period=self.plan.flap_period,
            broken=self.plan.flap_broken,
            error_share=self.plan.flap_error_share,
        ).start()
        log(
            f"PostgreSQL on :{self.postgres.port}, Redis on :{self.redis.port}, upstream on "
            f":{self.upstream.port}"
        )
        env = self.env()
        self._manage(["migrate", "--no-input", "-v", "0"], env, "migrate")
        seeded = self._manage(
            ["shell", "-c", SEED_SCRIPT],
            {**env, "SOAK_UPSTREAM_URL": self.upstream.base_url("MODEL")},
            "seed",
        )
        line = next((x for x in seeded.splitlines() if x.startswith("SOAK_SEED ")), None)
        if line is None:
            raise HarnessError(f"the seed printed no keys:\n{seeded[-2000:]}")
        self.seed = json.loads(line.split(" ", 1)[1])
        self.gateway = self._spawn(
            "gateway",
            [
                PY,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "2",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "30",
            ],
            env,
        )
        self.celery = self._spawn(
            "celery",
            [
                PY,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-B",
                "--concurrency",
                "1",
                "--loglevel",
                "WARNING",
                "--schedule",
                str(self.logs / "celerybeat-schedule"),
                "--without-mingle",
                "--without-gossip",
            ],
            env,
        )
        self._wait_ready()
        log(
            f"topology up in {time.monotonic() - started:.1f} s: gateway {self.base_url} (workers "
            f"{self.worker_pids()})"
        )

    def _manage(self, argv: list[str], env: dict[str, str], what: str) -> str:
        result = subprocess.run(
            [PY, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        if result.returncode:
            raise HarnessError(
                f"{what} failed (exit "
                f"{result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as handle:
            return subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + 90
        last = ""
        body = {"model": SERVING_NAME, "messages": [{"role": "user", "content": "ready?"}]}
        while time.monotonic() < deadline:
            assert self.gateway is not None
            if self.gateway.poll() is not None:
                raise HarnessError(f"the gateway exited at start:\n{self.tail('gateway')}")
            try:
                response = httpx.post(
                    f"{self.base_url}/v1/chat/completions",
                    json=body,
                    timeout=5,
                    headers={"Authorization": f"Bearer {self.seed['client_key']}"},
                )
                if response.status_code == 200 and len(self.worker_pids()) == 2:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.3)
        raise HarnessError(
            f"the gateway did not answer within 90 s ({last}):\n{self.tail('gateway')}"
        )

    def tail(self, name: str, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(
                (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
            )
        return ""

    def worker_pids(self) -> list[int]:
        """The uvicorn supervisor's worker processes (not multiprocessing's resource tracker)."""
        if self.gateway is None:
            return []
        pids = []
        with contextlib.suppress(OSError):
            for child in (
                Path(f"/proc/{self.gateway.pid}/task/{self.gateway.pid}/children")
                .read_text()
                .split()
            ):
                with contextlib.suppress(OSError):
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                    if b"spawn_main" in cmdline or b"uvicorn" in cmdline:
                        pids.append(int(child))
        return sorted(pids)

    def stop_gateway(self) -> int | None:
        """A clean stop (SIGTERM to the supervisor): the workers write out their usage events."""
        if self.gateway is None:
            return None
        if self.gateway.poll() is None:
            self.gateway.send_signal(signal.SIGTERM)
            try:
                self.gateway.wait(60)
            except subprocess.TimeoutExpired:
                log("the gateway did not stop within 60 s of SIGTERM; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.gateway.pid, signal.SIGKILL)
                self.gateway.wait(10)
        return self.gateway.returncode

    def stop(self) -> None:
        for proc in (self.gateway, self.celery):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in (self.gateway, self.celery):
            if proc is None:
                continue
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # Workers the supervisor never reaped (it was killed first) are in the same session.
        if self.gateway is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.gateway.pid, signal.SIGKILL)
        if self.upstream is not None:
            self.upstream.stop()
        if self.redis is not None:
            self.redis.remove()
        if self.postgres is not None:
            self.postgres.remove()

    # -- what the database holds

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def usage_event_ids(self) -> set[str]:
        rows = self.query(
            "SELECT request_id FROM gateway_usageevent WHERE request_id LIKE %s", ("soak-%",)
        )
        return {row[0] for row in rows}


# ---------------------------------------------------------------- the load


class Load:
    """Paced requests at `rate` per second over `concurrency` connections, each with its own
    prompt and request id, tagged with the phase current when it started."""

    def __init__(self, plan: Plan, topology: Topology, t0: float) -> None:
        self.plan, self.topology, self.t0 = plan, topology, t0
        self.phase = ""
        self.victim_retired = False  # set once the revocation phase is over
        self.outcomes: list[Outcome] = []
        self._next = 0.0
        self._count = 0
        self._stop = False
        self._words = (
            "invoice",
            "refund",
            "latency",
            "summary",
            "router",
            "cache",
            "budget",
            "retry",
            "shipping",
            "password",
            "outage",
            "contract",
            "schema",
            "timeout",
            "upgrade",
            "quota",
        )

    def now(self) -> float:
        return time.monotonic() - self.t0

    def prompt(self, n: int) -> str:
        rng = random.Random(n)
        return (
            f"Request {n}: "
            + " ".join(rng.choice(self._words) for _ in range(rng.randint(4, 24)))
            + "?"
        )

    async def run(self) -> None:
        import httpx

        limits = httpx.Limits(
            max_connections=self.plan.concurrency, max_keepalive_connections=self.plan.concurrency
        )
        async with httpx.AsyncClient(
            base_url=self.topology.base_url, limits=limits, timeout=self.plan.client_timeout
        ) as client:
            await asyncio.gather(*(self._worker(client) for _ in range(self.plan.concurrency)))

    def stop(self) -> None:
        self._stop = True

    async def _worker(self, client: Any) -> None:
        import httpx

        interval = 1.0 / self.plan.rate
        while not self._stop and self._count < self.plan.max_requests:
            now = self.now()
            slot = max(self._next, now)
            self._next = slot + interval
            await asyncio.sleep(slot - now)
            if self._stop:
                return
            self._count += 1
            n = self._count
            victim = n % VICTIM_SHARE == 0 and not self.victim_retired
            key = self.topology.seed["victim_key" if victim else "client_key"]
            request_id = f"soak-{n:07d}"
            phase, started = self.phase, self.now()
            stream = n % STREAM_SHARE == 1
            body = {
                "model": SERVING_NAME,
                "messages": [{"role": "user", "content": self.prompt(n)}],
                "max_tokens": 16,
                "stream": stream,
            }
            status, route, attempts, decision, error = None, "", 0, "", ""
            headers = {"Authorization": f"Bearer {key}", "X-Request-Id": request_id}
            try:
                async with client.stream(
                    "POST", "/v1/chat/completions", json=body, headers=headers
                ) as response:
                    text = (await response.aread()).decode(errors="replace")
                status = response.status_code
                route = response.headers.get("x-balancer-route", "")
                attempts = int(response.headers.get("x-balancer-attempts", "0") or 0)
                decision = response.headers.get("x-balancer-decision", "")
                if status >= 300:
                    error = text[:200]
                elif stream and not stream_complete(text):
                    # The headers said 200 but the stream broke: the client saw an error.
                    status, error = STREAM_BROKEN, text[-200:]
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
            self.outcomes.append(
                Outcome(
                    phase=phase,
                    request_id=request_id,
                    key="victim" if victim else "client",
                    started=started,
                    ended=self.now(),
                    status=status,
                    route=route,
                    attempts=attempts,
                    decision=decision,
                    error=error,
                )
            )


# ---------------------------------------------------------------- the faults


def started_at(pid: int) -> int:
    """When a process started, in clock ticks since boot (pids wrap around; this does not)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


class Soak:
    def __init__(self, plan: Plan, topology: Topology) -> None:
        self.plan, self.topology = plan, topology
        self.t0 = time.monotonic()
        self.load = Load(plan, topology, self.t0)
        self.phases: list[PhaseLog] = []
        self.revoked_at: float | None = None

    async def run(self) -> None:
        load = asyncio.create_task(self.load.run())
        try:
            for fault in self.plan.faults:
                await self._phase(fault)
        finally:
            self.load.stop()
            await load

    async def _phase(self, fault: str) -> None:
        phase = PhaseLog(fault=fault, started=self.load.now())
        self.phases.append(phase)
        self.load.phase = fault
        length = self.plan.phase_seconds(fault)
        log(f"phase {fault} ({length:g} s)")
        await asyncio.sleep(self.plan.lead)
        try:
            await getattr(self, "_" + fault.replace("-", "_"))(phase)
        except Exception as exc:  # a fault that could not be injected fails its row, not the run
            phase.failed = f"{type(exc).__name__}: {exc}"[:300]
            log(f"{fault}: {phase.failed}")
        remaining = phase.started + length - self.load.now()
        if remaining > 0:
            await asyncio.sleep(remaining)
        phase.ended = self.load.now()
        if fault == "key-revocation":
            self.load.victim_retired = True

    async def _baseline(self, phase: PhaseLog) -> None:
        return None

    async def _outage(
        self, phase: PhaseLog, down: Callable[[], None], up: Callable[[], None]
    ) -> None:
        phase.fault_at = self.load.now()
        await asyncio.to_thread(down)
        await asyncio.sleep(self.plan.outage)
        await asyncio.to_thread(up)
        phase.fault_end = self.load.now()
        phase.notes.append(f"down {phase.fault_end - phase.fault_at:.1f} s")

    async def _postgres_restart(self, phase: PhaseLog) -> None:
        pg = self.topology.postgres
        assert pg is not None
        await self._outage(phase, lambda: pg.stop("fast"), pg.start)

    async def _redis_kill(self, phase: PhaseLog) -> None:
        redis = self.topology.redis
        assert redis is not None
        await self._outage(phase, redis.kill, redis.start)

    async def _redis_hang(self, phase: PhaseLog) -> None:
        redis = self.topology.redis
        assert redis is not None
        await self._outage(phase, redis.pause, redis.resume)

    async def _worker_signal(self, phase: PhaseLog, sig: signal.Signals) -> None:
        before = self.topology.worker_pids()
        if len(before) < 2:
            raise HarnessError(f"expected 2 gateway workers, found {before}")
        victim = min(before, key=started_at)  # the oldest: it has lived through every earlier fault
        phase.fault_at = self.load.now()
        os.kill(victim, sig)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = self.topology.worker_pids()
            if victim not in now and len(now) == 2:
                phase.fault_end = self.load.now()
                phase.notes.append(
                    f"worker {victim} replaced by {sorted(set(now) - set(before))} after "
                    f"{phase.fault_end - phase.fault_at:.1f} s"
                )
                return
            await asyncio.sleep(0.05)
        phase.notes.append(
            f"worker {victim} not replaced within 30 s (workers now {self.topology.worker_pids()})"
        )

    async def _worker_sigterm(self, phase: PhaseLog) -> None:
        await self._worker_signal(phase, signal.SIGTERM)

    async def _worker_sigkill(self, phase: PhaseLog) -> None:
        await self._worker_signal(phase, signal.SIGKILL)

    async def _api(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[float, Any]:
        """A management API call, retried for up to 10 s; returns when the successful try began."""
        import httpx

        headers = {"Authorization": f"Token {self.topology.seed['token']}"}
        last = ""
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(base_url=self.topology.base_url, timeout=10) as client:
            while time.monotonic() < deadline:
                began = self.load.now()
                try:
                    response = await client.request(method, path, json=body, headers=headers)
                    if response.status_code < 300:
                        return began, response.json() if response.content else None
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.5)
        raise HarnessError(f"{method} {path} failed for 10 s: {last}")

    def _routes(self, *, primary_enabled: bool) -> list[dict[str, Any]]:
        return [
            {
                "name": "primary",
                "instance": "flappy",
                "priority": 1,
                "is_default": False,
                "enabled": primary_enabled,
            },
            {
                "name": "fallback",
                "instance": "steady",
                "priority": 2,
                "is_default": True,
                "enabled": True,
            },
        ]

    async def _config_change(self, phase: PhaseLog) -> None:
        # Change while the primary serves (between the upstream's broken spells and cooldowns),
        # or the change would show no effect for the trivial reason that the fallback served anyway.
        deadline = self.load.now() + 2 * self.plan.flap_period
        while self.load.now() < deadline:
            recent = [o for o in self.load.outcomes[-6:] if o.key == "client" and o.ok]
            if recent and all(o.route == "primary" and o.attempts == 1 for o in recent):
                break
            await asyncio.sleep(0.05)
        else:
            phase.notes.append("the primary was not serving when the route was disabled")
        phase.fault_at, _ = await self._api(
            "PATCH",
            f"/api/balancers/{SERVING_NAME}/",
            {"routes": self._routes(primary_enabled=False)},
        )
        await asyncio.sleep(self.plan.effect_limit + 1.5)
        phase.fault_end, _ = await self._api(
            "PATCH",
            f"/api/balancers/{SERVING_NAME}/",
            {"routes": self._routes(primary_enabled=True)},
        )
        phase.notes.append(
            f"primary route disabled at {phase.fault_at - phase.started:.1f} s, "
            f"enabled again at {phase.fault_end - phase.started:.1f} s"
        )

    async def _key_revocation(self, phase: PhaseLog) -> None:
        began, _ = await self._api(
            "POST", f"/api/api-keys/{self.topology.seed['victim_id']}/revoke/"
        )
        phase.fault_at = self.revoked_at = began


# ---------------------------------------------------------------- the run


def wait_for_events(topology: Topology, accepted: set[str], seconds: float) -> set[str]:
    """Poll the database until every accepted request has its usage event, or `seconds` pass."""
    deadline = time.monotonic() + seconds
    ids: set[str] = set()
    while True:
        with contextlib.suppress(Exception):
            ids = topology.usage_event_ids()
        if accepted <= ids or time.monotonic() > deadline:
            return ids
        time.sleep(0.5)


def commit() -> str:
    """The commit measured, with a + when the work tree has changes."""

    def git(*argv: str) -> str:
        result = subprocess.run(
            ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


def log_summary(path: Path) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = text.splitlines()
    return f"{len(lines)} lines, {sum('Traceback' in x for x in lines)} tracebacks"


def run(plan: Plan) -> int:
    topology = Topology(plan)
    try:
        topology.start()
        soak = Soak(plan, topology)
        asyncio.run(soak.run())
        outcomes = soak.load.outcomes
        accepted = {o.request_id for o in outcomes if o.ok}
        log(f"{len(outcomes)} requests sent; waiting for the usage writers")
        before_stop = wait_for_events(topology, accepted, 10 if plan.smoke else 20)
        pending = len(accepted - before_stop)
        code = topology.stop_gateway()
        event_ids = wait_for_events(topology, accepted, 5)
        rows = [phase_row(p, outcomes, event_ids, plan, soak.revoked_at) for p in soak.phases]
        upstream = topology.upstream.counts if topology.upstream else {}
        probe_rows = topology.query(
            "SELECT i.instance_id, h.status, extract(epoch from now() - h.checked_at) FROM "
            "gateway_instancehealth h JOIN targetgroups_instance i ON i.id = h.instance_id ORDER "
            "BY 1"
        )
        celery_alive = topology.celery is not None and topology.celery.poll() is None
    finally:
        topology.stop()

    print()
    print(render_table(rows))
    print()
    for phase in soak.phases:
        if phase.notes:
            print(f"- {phase.fault}: {'; '.join(phase.notes)}")
    print(
        f"- usage events still unwritten before the gateway's clean stop: {pending} (supervisor "
        f"exit {code})"
    )
    print(
        f"- upstream: {upstream.get('flappy', 0)} calls to flappy "
        f"({upstream.get('flappy_failed', 0)} failed), "
        f"{upstream.get('steady', 0)} to steady"
    )
    probes = (
        ", ".join(f"{iid} {status} {age:.0f} s ago" for iid, status, age in probe_rows) or "none"
    )
    print(
        f"- last probes (Celery): {probes}; Celery {'running' if celery_alive else 'EXITED'} at "
        "the end"
    )
    print(
        f"- logs in {plan.out}: gateway {log_summary(plan.out / 'gateway.log')}, "
        f"celery {log_summary(plan.out / 'celery.log')}"
    )
    errors = [o for o in outcomes if not o.ok and not expected_401(o, soak.revoked_at)]
    for o in errors[:10]:
        print(
            f"  error: {o.phase} {o.request_id} at {o.started:.2f} s: {o.status} {o.decision} "
            f"{o.error}"
        )
    report = {
        "commit": commit(),
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()},
        "rows": [asdict(r) | {"lost": r.lost} for r in rows],
        "phases": [asdict(p) for p in soak.phases],
        "unwritten_before_stop": pending,
    }
    (plan.out / "report.json").write_text(json.dumps(report, indent=2))
    with (plan.out / "requests.jsonl").open("w") as handle:
        for o in outcomes:
            handle.write(json.dumps(asdict(o) | {"event": o.request_id in event_ids}) + "\n")
    status = exit_status(rows)
    print(
        f"\nsoak {'passed' if status == 0 else 'FAILED'}: {len(outcomes)} requests, {len(rows)} "
        "faults, "
        f"on {report['commit']} ({'smoke' if plan.smoke else 'full'} setting)"
    )
    return status


def main(argv: list[str] | None = None) -> int:
    plan = make_plan(parse_args(argv))
    try:
        return run(plan)
    except HarnessError as exc:
        log(f"harness error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
