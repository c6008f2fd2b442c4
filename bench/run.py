"""The gateway against LiteLLM and against calling the upstream directly, in one run (issue 6).

    .venv/bin/python bench/run.py            # make bench: the full run, ~8 minutes (~10 the first
    time)
    .venv/bin/python bench/run.py --smoke    # make bench-smoke: the same pipeline in tiny, < 1
    minute
    .venv/bin/python bench/run.py --serve    # set everything up, print the targets, wait (manual
    runs)

What runs (see docs/benchmarks.md):
- bench/mock_upstream.py, an OpenAI-compatible mock (its latency and stream knobs are set
  per point through its /_mock/config endpoint), pinned to core 1 with the load generator;
- the gateway as ``make serve`` runs it with one worker (uvicorn, uvloop, httptools),
  pinned to core 0, on PostgreSQL (database ``bench``) and Redis (db 12), with a balancer
  ``bench`` in intent_classifier mode (the built-in ``intent-classifier`` router model)
  whose default route is a weighted_round_robin target group of two openai-provider
  instances on the mock; API key auth, health tracking and usage events on;
- the LiteLLM proxy (``litellm[proxy]==1.106.2``, installed on first use into
  bench/.venv-litellm and kept), pinned to core 0, with the same mock as two deployments
  of one model, a master key, no database, no callbacks, no retries, one worker;
- wrk (Debian's package) with bench/post.lua for the throughput and latency points, and
  bench/ttfb.py for the streamed time to first byte; py-spy for the profile.

Then the costs (issues 13-16), each against a baseline measured in the same rounds (the
gateway as above at 32 connections, every request a new prompt): /metrics and the JSON
request log off (a second gateway process, same settings otherwise), one fixed prompt (every
routing decision from the decision cache), the response cache on a miss (exact and semantic
balancers, new prompts) and on a hit (one fixed prompt), and 50 live boards open
(bench/boards.py: logged-in SSE streams of the board); the router's decision latency with
and without its cache (the evaluation module, in process) and the cache's own steps
(bench/cache_cost.py, in process).

Writes bench/out/latest.md (printed too; smoke.md in --smoke mode), bench/out/latest.json, the
profile and the logs of every process under bench/out/. Exits 1 if the harness broke, and in --smoke
mode also if the gateway answered an error; targets not met are marked in the table, not an exit
status.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
LITELLM_VERSION = "1.106.2"
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_MARKER = LITELLM_VENV / f".installed-litellm-{LITELLM_VERSION}"
LITELLM_MASTER_KEY = "sk-bench-master"
MOCK_KEY = "sk-mock"
MOCK_MODEL = "mock-model"
GATEWAY_CORE = "0"
CLIENT_CORE = "1"
TARGET_NAMES = ("direct", "gateway", "litellm")
LABELS = {"direct": "direct (mock)", "gateway": "gateway", "litellm": f"LiteLLM {LITELLM_VERSION}"}
TIMES, DASH, ARROW = (
    "\u00d7",
    "\u2013",
    "\u2192",
)  # the table's x, a missing figure, before -> after


class HarnessError(RuntimeError):
    """The harness itself could not run: a missing tool, a service that did not start..."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Plan:
    smoke: bool
    serve: bool
    repeats: int
    seconds: float  # 1, 32 and 64 connections, 0 ms upstream
    slow_seconds: float  # 256 connections, 200 ms upstream
    warmup_seconds: float
    ttfb_requests: int
    stream_chunks: int
    stream_chunk_delay_ms: float
    slow_latency_ms: float
    connections: tuple[int, ...]
    slow_connections: int
    profile_seconds: float  # 0: no profile
    settle_max_seconds: float  # the longest wait for the servers to go idle before a point
    classifier_sets: tuple[str, ...]
    cost_seconds: float  # each cost point (32 connections; 1 connection for the observability pair)
    cost_points: tuple[str, ...]  # --cost-points: only these (empty: all)
    boards: int  # live boards open during the boards point
    board_idle_seconds: float  # the gateway's CPU with no traffic, without and with the boards
    cache_cost_requests: int  # bench/cache_cost.py --n
    litellm: str  # "run", "skip", "if-installed"
    database: str
    redis_url: str
    out: Path

    @property
    def points(self) -> list[str]:
        return [f"c{c}" for c in self.connections] + ["slow", "ttfb"]


def make_plan(args: argparse.Namespace) -> Plan:
    smoke = args.smoke
    litellm = "skip" if args.no_litellm else ("if-installed" if smoke else "run")
    return Plan(
        smoke=smoke,
        serve=args.serve,
        repeats=args.repeats or (1 if smoke else 3),
        seconds=args.seconds or (1 if smoke else 8),
        slow_seconds=args.slow_seconds or (2 if smoke else 15),
        warmup_seconds=0 if smoke else 2,
        ttfb_requests=args.ttfb_requests or (20 if smoke else 200),
        stream_chunks=8,
        stream_chunk_delay_ms=1.0,
        slow_latency_ms=200.0,
        connections=(1, 32, 64),
        slow_connections=256,
        profile_seconds=0 if smoke or args.no_profile else args.profile_seconds,
        settle_max_seconds=4 if smoke else 20,
        classifier_sets=("support",) if smoke else ("support", "mmlu_families", "mmlu_subjects"),
        cost_seconds=args.cost_seconds or (1 if smoke else 8),
        cost_points=tuple(name for name in args.cost_points.split(",") if name),
        boards=args.boards,
        board_idle_seconds=1 if smoke else 5,
        cache_cost_requests=50 if smoke else 1000,
        litellm=litellm,
        database=args.database or ("bench_smoke" if smoke else "bench"),
        redis_url=args.redis_url or f"redis://127.0.0.1:6379/{13 if smoke else 12}",
        out=Path(args.out),
    )


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Every server the run starts, stopped (by its own pid) however the run ends."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        cmd: list[str],
        *,
        logfile: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> subprocess.Popen[bytes]:
        handle = logfile.open("wb")
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        handle.close()
        self.procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(
                        proc.pid, signal.SIGTERM
                    )  # its own session: the server and its children
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()


def worker_pid(pid: int) -> int:
    """The process serving requests: ``pid`` itself, or its child when it forked workers."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pid
    for child in children:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"python" in cmdline or b"uvicorn" in cmdline or b"litellm" in cmdline:
                return int(child)
    return pid


def memory_of(pid: int) -> dict[str, float]:
    """VmHWM (peak resident) and VmRSS of a process, in MiB."""
    values: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) / 1024  # kB
    return values


def wait_http(
    url: str,
    *,
    seconds: float,
    proc: subprocess.Popen[bytes] | None,
    name: str,
    logfile: Path,
    method: str = "GET",
    **kwargs: Any,
) -> Any:
    import httpx

    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(
                f"{name} exited with status {proc.returncode} at start; see "
                f"{logfile}:\n{tail(logfile)}"
            )
        try:
            response = httpx.request(method, url, timeout=5, **kwargs)
            if response.status_code < 500:
                return response
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise HarnessError(
        f"{name} did not answer {url} within {seconds:.0f}s ({last}); see "
        f"{logfile}:\n{tail(logfile)}"
    )


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pids: list[int], *, max_seconds: float = 20.0, idle_share: float = 0.05) -> float:
    """Wait until the servers stop burning CPU (a server may still be working off requests a
    finished point left in flight, and the gateway and LiteLLM share core 0). Returns the wait."""
    started = time.monotonic()
    before = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() - started < max_seconds:
        time.sleep(0.3)
        after = sum(cpu_seconds(p) for p in pids)
        if after - before <= 0.3 * idle_share:
            break
        before = after
    return time.monotonic() - started


def tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# ---------------------------------------------------------------- preflight and setup


def preflight(plan: Plan) -> None:
    problems = []
    if not shutil.which("wrk"):
        problems.append("wrk is not installed: apt-get install -y wrk (Debian's package)")
    if not shutil.which("taskset"):
        problems.append("taskset is not installed: apt-get install -y util-linux")
    if (os.cpu_count() or 1) < 2:
        problems.append(
            "the bench pins the gateway to core 0 and the load to core 1: it needs 2 cores"
        )
    try:
        import django  # noqa: F401
        import httptools  # noqa: F401
        import httpx  # noqa: F401
        import psycopg  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        problems.append(f"run with the project's venv (.venv/bin/python bench/run.py): {exc}")
    if problems:
        raise HarnessError("\n".join(problems))


def postgres_admin_url(database_url: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))


def ensure_database(database_url: str) -> None:
    import psycopg

    name = urlsplit(database_url).path.lstrip("/")
    try:
        with psycopg.connect(
            postgres_admin_url(database_url), autocommit=True, connect_timeout=5
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                log(f"creating database {name}")
                conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise HarnessError(
            f"PostgreSQL is not reachable at {database_url.rsplit('@', 1)[-1]}: {exc}".strip()
            + "\n(the bench needs PostgreSQL on 127.0.0.1:5432 with user postgres, as make test "
            "does; set BENCH_DATABASE_URL to point elsewhere)"
        ) from None


def reset_redis(redis_url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).flushdb()
    except redis.RedisError as exc:
        raise HarnessError(
            f"Redis is not reachable at {redis_url}: {exc} (set BENCH_REDIS_URL)"
        ) from None


SETUP_SCRIPT = r"""
import io, json, os
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
call_command("flush", interactive=False, verbosity=0)
from balancers.services import balancer_save
from targetgroups.models import Instance, TargetGroup, TargetGroupMember

base = os.environ["BENCH_MOCK_URL"]

def instance(instance_id, **fields):
    values = dict(instance_id=instance_id, display_name=instance_id, workload_kind="chat",
                  input_price_per_million="0.50", output_price_per_million="1.50")
    values.update(fields)
    obj = Instance(**values)
    obj.full_clean()
    obj.save()
    return obj

upstream = dict(provider="openai", base_url=base, model="mock-model", api_key="sk-mock")
a = instance("bench-mock-a", **upstream)
b = instance("bench-mock-b", **upstream)
c = instance("bench-mock-reasoning", **upstream)
router = instance("bench-router", provider="builtin", model="intent-classifier",
                  input_price_per_million="0", output_price_per_million="0")
group = TargetGroup(name="bench-pool", display_name="Bench pool", workload_kind="chat",
                    selection_policy="weighted_round_robin")
group.full_clean()
group.save()
for member in (a, b):
    TargetGroupMember.objects.create(group=group, instance=member, weight=100, priority=1)
routes = [
    {"name": "efficient",
     "intent": "Simple, short everyday requests: summaries, rewrites, greetings and quick answers.",
     "target_group": group, "priority": 1, "is_default": True},
    {"name": "reasoning",
     "intent": "Multi-step, careful reasoning: proofs, complex analysis and tricky debugging.",
     "instance": c, "priority": 2},
]
# `bench`, and the same balancer with its response cache on (the cost points): exact, and
# semantic with a similarity threshold of 1, so that the bench's prompts (one of 16 sentences
# and a running number: near-duplicates) all miss and each pays the whole semantic look-up.
for name, cache in (("bench", "off"), ("bench-cache", "exact"), ("bench-semantic", "semantic")):
    balancer_save(
        fields={"name": name, "serving_name": name, "workload_kind": "chat",
                "routing_mode": "intent_classifier", "router_model": router,
                "cache_mode": cache, "cache_ttl_seconds": 600, "cache_similarity_threshold": 1.0},
        routes=[dict(r) for r in routes],
    )
out = io.StringIO()
call_command("create_api_key", name="bench", stdout=out)
# A signed-in viewer for the live boards (bench/boards.py sends its session cookie).
import secrets
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
get_user_model().objects.create_user("bench-viewer", password=secrets.token_urlsafe(24))
call_command("set_role", "bench-viewer", "viewer", stdout=io.StringIO())
client = Client()
client.force_login(get_user_model().objects.get(username="bench-viewer"))
session = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
print("BENCH_SETUP " + json.dumps(
    {"key": out.getvalue().strip().splitlines()[-1], "session": session}
))
"""


def gateway_env(plan: Plan, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "DJANGO_"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=plan.redis_url,
        SECRET_KEY="bench-" + secrets.token_urlsafe(40),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DEBUG="0",
        GATEWAY_EGRESS_ALLOW_PRIVATE="1",  # the mock upstream is on loopback
        SECURE_SSL_REDIRECT="0",  # plain HTTP on loopback: the boards' page requests too
        VAR_DIR=str(plan.out / "var"),
        PYTHONUNBUFFERED="1",
        # As make serve and the image run it: two malloc arenas, not one per thread.
        MALLOC_ARENA_MAX=os.environ.get("MALLOC_ARENA_MAX", "2"),
    )
    return env


def setup_gateway(plan: Plan, env: dict[str, str], mock_url: str) -> dict[str, str]:
    """Migrate and flush the database, make the bench balancers; the API key and a viewer's
    session cookie (``name=value``)."""
    result = subprocess.run(
        [PY, "manage.py", "shell", "-c", SETUP_SCRIPT],
        cwd=ROOT,
        env={**env, "BENCH_MOCK_URL": mock_url},
        capture_output=True,
        text=True,
        timeout=180,
    )
    for line in result.stdout.splitlines():
        if line.startswith("BENCH_SETUP "):
            return dict(json.loads(line.split(" ", 1)[1]))
    raise HarnessError(
        "setting up the bench balancer failed (exit "
        f"{result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )


def ensure_litellm(plan: Plan) -> Path | None:
    exe = LITELLM_VENV / "bin" / "litellm"
    if plan.litellm == "skip":
        return None
    if LITELLM_MARKER.exists() and exe.exists():
        return exe
    if plan.litellm == "if-installed":
        log(f"LiteLLM skipped: {rel(LITELLM_VENV)} is not installed (make bench installs it)")
        return None
    base = getattr(sys, "_base_executable", None) or shutil.which("python3.11") or "python3"
    logfile = plan.out / "litellm-install.log"
    log(f"installing litellm[proxy]=={LITELLM_VERSION} into {rel(LITELLM_VENV)} (once; ~2 minutes)")
    started = time.monotonic()
    with logfile.open("w") as handle:
        steps = [
            [base, "-m", "venv", "--clear", str(LITELLM_VENV)],
            [
                str(LITELLM_VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                f"litellm[proxy]=={LITELLM_VERSION}",
            ],
        ]
        for step in steps:
            code = subprocess.run(
                step, stdout=handle, stderr=subprocess.STDOUT, timeout=900
            ).returncode
            if code:
                raise HarnessError(
                    f"installing LiteLLM failed ({' '.join(step[:4])}...); see "
                    f"{logfile}:\n{tail(logfile)}"
                )
    LITELLM_MARKER.write_text(f"litellm[proxy]=={LITELLM_VERSION}\n")
    log(f"LiteLLM installed in {time.monotonic() - started:.0f}s")
    return exe


def litellm_config(path: Path, mock_url: str) -> None:
    # Priced like the gateway's instances (0.50/1.50 USD per 1M tokens): an unpriced model costs
    # LiteLLM a "zero cost" diagnostic per request, about a third of its throughput here.
    deployment = {
        "model_name": "bench",
        "litellm_params": {
            "model": f"openai/{MOCK_MODEL}",
            "api_base": mock_url,
            "api_key": MOCK_KEY,
            "input_cost_per_token": 0.50 / 1e6,
            "output_cost_per_token": 1.50 / 1e6,
        },
    }
    config = {  # JSON is YAML
        "model_list": [deployment, json.loads(json.dumps(deployment))],
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0},
        "litellm_settings": {
            "num_retries": 0,
            "request_timeout": 600,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
        },
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
    }
    path.write_text(json.dumps(config, indent=2))


def litellm_env() -> dict[str, str]:
    drop = (
        "DATABASE_URL",
        "REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "STORE_MODEL_IN_DB",
        "LITELLM_",
        "DIRECT_URL",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", PYTHONUNBUFFERED="1")
    return env


# ---------------------------------------------------------------- measurements


@dataclass
class Target:
    name: str
    url: str  # the chat completions URL
    model: str
    key: str
    pid: int | None = None  # the serving process, for its memory


def set_mock(mock_base: str, **knobs: Any) -> None:
    import httpx

    response = httpx.post(f"{mock_base}/_mock/config", json=knobs, timeout=5)
    response.raise_for_status()


_wrk_runs = itertools.count(1)


def wrk_point(target: Target, connections: int, seconds: float, *flags: str) -> dict[str, Any]:
    """One wrk run; ``flags`` go to post.lua (``stream``, ``fixed``: one prompt every time)."""
    cmd = [
        "taskset",
        "-c",
        CLIENT_CORE,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(BENCH / "post.lua"),
        target.url,
        "--",
        target.model,
        target.key,
        *flags,
        # Prompts unique to this run too: the response cache keeps answers for 600 s, so a
        # later run's "new" prompts (the same running numbers) were hits of an earlier one's.
        f"run:{next(_wrk_runs)}-{time.time_ns()}",
    ]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"wrk against {target.name} did not finish") from None
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if result.returncode or line is None:
        raise HarnessError(
            f"wrk failed against {target.url} (exit {result.returncode}): {result.stdout[-500:]} "
            f"{result.stderr[-500:]}"
        )
    data = json.loads(line.split(" ", 1)[1])
    duration = data["duration_us"] / 1e6
    if not data["requests"]:  # no request completed within the point: no latency to speak of
        for key in ("p50_us", "p90_us", "p99_us", "mean_us"):
            data[key] = math.nan
    return {
        "rps": data["requests"] / duration if duration else 0.0,
        "requests": data["requests"],
        "p50_ms": data["p50_us"] / 1000,
        "p90_ms": data["p90_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "mean_ms": data["mean_us"] / 1000,
        "non_2xx": data["status"],
        "socket_errors": data["connect"] + data["read"] + data["write"] + data["timeout"],
        "socket_detail": {k: data[k] for k in ("connect", "read", "write", "timeout") if data[k]},
    }


def ttfb_point(target: Target, requests: int) -> dict[str, Any]:
    cmd = [
        "taskset",
        "-c",
        CLIENT_CORE,
        PY,
        str(BENCH / "ttfb.py"),
        target.url,
        target.model,
        target.key,
        "--requests",
        str(requests),
        "--warmup",
        "5",
    ]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120 + requests * 0.5)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"the TTFB client against {target.name} did not finish") from None
    if result.returncode:
        raise HarnessError(f"the TTFB client failed against {target.url}: {result.stderr[-1500:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    if data["requests"] and not data["stream_ok"]:
        raise HarnessError(f"{target.name} did not answer a well-formed SSE stream")
    return data


def check_target(target: Target) -> dict[str, str]:
    """One plain request: a 200 with an OpenAI-shaped completion, or the harness is broken."""
    import httpx

    body = {
        "model": target.model,
        "messages": [{"role": "user", "content": "Summarise this support reply in one line."}],
    }
    response = httpx.post(
        target.url, json=body, headers={"Authorization": f"Bearer {target.key}"}, timeout=30
    )
    try:
        ok = response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        ok = False
    if not ok:
        raise HarnessError(f"{target.name} answered {response.status_code}: {response.text[:500]}")
    return {k: v for k, v in response.headers.items() if k.startswith("x-balancer")}


def classifier_latency(name: str) -> dict[str, Any]:
    data_dir = ROOT / "tests" / "data"
    cmd = [
        "taskset",
        "-c",
        GATEWAY_CORE,
        PY,
        "-m",
        "gateway.router_models.evaluation",
        str(data_dir / f"{name}.routes.json"),
        str(data_dir / f"{name}.jsonl"),
        "--json",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if result.returncode:
        raise HarnessError(
            f"evaluating the local router model on {name} failed: {result.stderr[-1500:]}"
        )
    report = json.loads(result.stdout)
    routes = json.loads((data_dir / f"{name}.routes.json").read_text())
    routes = routes["routes"] if isinstance(routes, dict) else routes
    cached = report.get("cached_latency_ms") or {}
    return {
        "set": name,
        "routes": len(routes),
        "examples": min((len(r.get("examples") or ()) for r in routes), default=0),
        "prompts": report["total"],
        "accuracy": report["accuracy"],
        "p50_ms": report["latency_ms"]["p50"],
        "p99_ms": report["latency_ms"]["p99"],
        "mean_ms": report["latency_ms"]["mean"],
        # The same prompts answered from the decision cache (the gateway's TTL cache and key).
        "cached_p50_ms": cached.get("p50"),
        "cached_p99_ms": cached.get("p99"),
    }


def cache_steps(plan: Plan, env: dict[str, str]) -> dict[str, Any]:
    """bench/cache_cost.py: the response cache's own steps, in process on the gateway's core."""
    cmd = [
        "taskset",
        "-c",
        GATEWAY_CORE,
        PY,
        "-m",
        "bench.cache_cost",
        "--n",
        str(plan.cache_cost_requests),
        "--json",
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode:
        raise HarnessError(f"bench/cache_cost.py failed: {result.stderr[-1500:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def pyspy_path() -> str | None:
    local = Path(PY).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def profile_gateway(plan: Plan, target: Target, mock_base: str) -> dict[str, Any]:
    """py-spy (--gil, raw) on the gateway's worker during a 32-connection run; py-spy and wrk on
    core 1."""
    from bench.profile_summary import summarise

    assert target.pid is not None
    raw = plan.out / "profile-gateway.raw"
    pyspy = pyspy_path()
    seconds = plan.profile_seconds
    set_mock(mock_base, latency_ms=0)
    spy = subprocess.Popen(
        [
            "taskset",
            "-c",
            CLIENT_CORE,
            pyspy,
            "record",
            "--gil",
            "-f",
            "raw",
            "-r",
            "200",
            "-d",
            str(int(seconds)),
            "-o",
            str(raw),
            "--pid",
            str(target.pid),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    time.sleep(1)
    load = wrk_point(target, 32, seconds - 2)
    out, _ = spy.communicate(timeout=seconds + 60)
    if spy.returncode or not raw.exists():
        raise HarnessError(
            f"py-spy failed (exit {spy.returncode}): {out.decode(errors='replace')[-1500:]}"
        )
    summary = summarise(raw.read_text())
    summary["rps_under_profiler"] = load["rps"]
    summary["raw"] = rel(raw)
    return summary


# ---------------------------------------------------------------- the run


@dataclass
class Results:
    runs: dict[str, dict[str, list[dict[str, Any]]]] = field(
        default_factory=dict
    )  # point -> target -> runs

    def add(self, point: str, target: str, run: dict[str, Any]) -> None:
        self.runs.setdefault(point, {}).setdefault(target, []).append(run)

    def has(self, point: str, target: str) -> bool:
        return bool(self.runs.get(point, {}).get(target))

    def median(self, point: str, target: str, key: str) -> float | None:
        values = [r[key] for r in self.runs.get(point, {}).get(target, [])]
        return statistics.median(values) if values else None

    def values(self, point: str, target: str, key: str) -> list[float]:
        return [r[key] for r in self.runs.get(point, {}).get(target, [])]

    def errors(self, point: str, target: str) -> tuple[int, int]:
        rows = self.runs.get(point, {}).get(target, [])
        return sum(r["non_2xx"] for r in rows), sum(r["socket_errors"] for r in rows)


def rotate(items: list[Target], n: int) -> list[Target]:
    n %= len(items)
    return items[n:] + items[:n]


def measure(plan: Plan, targets: list[Target], mock_base: str) -> tuple[Results, dict[str, float]]:
    results = Results()
    pids = [t.pid for t in targets if t.pid]
    waits: dict[str, float] = {}

    def point(kind: str, target: Target, fn: Any, *args: Any) -> dict[str, Any]:
        wait = settle(pids, max_seconds=plan.settle_max_seconds)
        waits[target.name] = waits.get(target.name, 0.0) + wait
        if wait > 2:
            log(f"  (waited {wait:.1f}s for the servers to go idle before {target.name} {kind})")
        return fn(target, *args)

    set_mock(mock_base, latency_ms=0, chunks=plan.stream_chunks, chunk_delay_ms=0)
    if plan.warmup_seconds:
        for target in targets:
            log(f"warm-up {target.name}")
            point("warm-up", target, wrk_point, 64, plan.warmup_seconds)
    for repeat in range(plan.repeats):
        order = rotate(targets, repeat)  # the targets take turns going first
        log(f"repeat {repeat + 1}/{plan.repeats}")
        set_mock(mock_base, latency_ms=0)
        for connections in plan.connections:
            for target in order:
                run = point(f"c{connections}", target, wrk_point, connections, plan.seconds)
                results.add(f"c{connections}", target.name, run)
                log(
                    f"  {connections:>3} conn  {target.name:8} {run['rps']:9.0f} req/s  p50 "
                    f"{run['p50_ms']:7.2f} ms"
                    f"  p99 {run['p99_ms']:7.2f} ms  errors {run['non_2xx']}+{run['socket_errors']}"
                )
        set_mock(mock_base, latency_ms=plan.slow_latency_ms)
        for target in order:
            if plan.warmup_seconds and repeat == 0:
                point("warm-up", target, wrk_point, plan.slow_connections, plan.warmup_seconds)
            run = point("slow", target, wrk_point, plan.slow_connections, plan.slow_seconds)
            results.add("slow", target.name, run)
            log(
                f"  {plan.slow_connections} conn, {plan.slow_latency_ms:.0f} ms upstream  "
                f"{target.name:8} {run['rps']:7.0f} req/s"
                f"  p50 {run['p50_ms']:7.1f} ms  p99 {run['p99_ms']:7.1f} ms  errors "
                f"{run['non_2xx']}+{run['socket_errors']}"
            )
        set_mock(mock_base, latency_ms=0, chunk_delay_ms=plan.stream_chunk_delay_ms)
        for target in order:
            run = point("ttfb", target, ttfb_point, plan.ttfb_requests)
            results.add(
                "ttfb",
                target.name,
                {
                    "p50_ms": run["ttfb_p50_ms"],
                    "p99_ms": run["ttfb_p99_ms"],
                    "total_p50_ms": run["total_p50_ms"],
                    "requests": run["requests"],
                    "non_2xx": run["non_2xx"],
                    "socket_errors": run["socket_errors"],
                },
            )
            log(
                f"  stream TTFB {target.name:8} p50 {run['ttfb_p50_ms']:6.2f} ms  p99 "
                f"{run['ttfb_p99_ms']:6.2f} ms"
                f"  errors {run['non_2xx']}+{run['socket_errors']}"
                + (f"  ({'; '.join(run['problems'])})" if run["problems"] else "")
            )
        set_mock(mock_base, latency_ms=0, chunk_delay_ms=0)
    return results, {k: round(v, 1) for k, v in waits.items()}


@dataclass(frozen=True)
class CostPoint:
    name: str
    label: str
    # "gateway" (metrics and the JSON request log on, as make serve), "quiet" (both off),
    # "metrics-off" or "log-off" (one of them off)
    gateway: str
    model: str  # the balancer's serving name
    flags: tuple[str, ...] = ()  # post.lua: "fixed" sends one prompt every time
    connections: int = 32
    boards: bool = False
    baseline: str = "baseline"
    smoke: bool = False  # part of make bench-smoke's short form (each path once, 1 s each)


COST_POINTS = (
    CostPoint(
        "baseline",
        "baseline: `bench`, a new prompt each request, metrics and JSON request log on",
        "gateway",
        "bench",
        smoke=True,
    ),
    CostPoint(
        "observability_off",
        "/metrics and the request log off (GATEWAY_METRICS=0, GATEWAY_REQUEST_LOG=0)",
        "quiet",
        "bench",
        smoke=True,
    ),
    CostPoint(
        "baseline_c1",
        "baseline, 1 connection",
        "gateway",
        "bench",
        connections=1,
        baseline="baseline_c1",
    ),
    CostPoint(
        "observability_off_c1",
        "/metrics and the request log off, 1 connection",
        "quiet",
        "bench",
        connections=1,
        baseline="baseline_c1",
    ),
    # The pair above split in two, at 1 connection (where the CPU per request is steadiest): what
    # the metrics cost alone and what the request log costs alone. Not in the smoke run.
    CostPoint(
        "metrics_off_c1",
        "/metrics off, the request log on (GATEWAY_METRICS=0), 1 connection",
        "metrics-off",
        "bench",
        connections=1,
        baseline="baseline_c1",
    ),
    CostPoint(
        "log_off_c1",
        "the request log off, /metrics on (GATEWAY_REQUEST_LOG=0), 1 connection",
        "log-off",
        "bench",
        connections=1,
        baseline="baseline_c1",
    ),
    CostPoint(
        "fresh_c1",
        "baseline on a fresh process, 1 connection",
        "fresh",
        "bench",
        connections=1,
        baseline="baseline_c1",
    ),
    CostPoint(
        "decision_cached",
        "one fixed prompt: every routing decision from the decision cache",
        "gateway",
        "bench",
        ("fixed",),
    ),
    CostPoint(
        "cache_miss",
        "response cache, exact: every request a miss (look-up and store)",
        "gateway",
        "bench-cache",
    ),
    CostPoint(
        "semantic_miss",
        "response cache, semantic (threshold 1): every request a miss",
        "gateway",
        "bench-semantic",
        smoke=True,
    ),
    CostPoint(
        "cache_hit",
        "response cache, exact: one fixed prompt, every request but the first a hit",
        "gateway",
        "bench-cache",
        ("fixed",),
        smoke=True,
    ),
    CostPoint(
        "boards", "live boards open (SSE, signed in)", "gateway", "bench", boards=True, smoke=True
    ),
)


def mock_requests(mock_base: str) -> int:
    """Requests the mock has answered so far (its own config read included)."""
    import httpx

    return int(httpx.get(f"{mock_base}/_mock/config", timeout=5).json()["requests"])


class Boards:
    """bench/boards.py's N streams, open between ``open()`` and ``close()`` (client on core 1)."""

    def __init__(self, plan: Plan, url: str, session: str) -> None:
        self.plan, self.url, self.session = plan, url, session
        self.port = urlsplit(url).port or 80
        self.proc: subprocess.Popen[str] | None = None

    def open(self) -> int:
        handle = (self.plan.out / "boards.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                CLIENT_CORE,
                PY,
                str(BENCH / "boards.py"),
                self.url,
                "--cookie",
                self.session,
                "--boards",
                str(self.plan.boards),
            ],
            stdout=subprocess.PIPE,
            stderr=handle,
            text=True,
            start_new_session=True,
        )
        handle.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "READY <n>" once every stream answered (or 20 s)
        if not line.startswith("READY"):
            self.close()
            raise HarnessError(
                f"the board client did not start; see {rel(self.plan.out / 'boards.log')}:\n"
                + tail(self.plan.out / "boards.log")
            )
        return int(line.split()[1])

    def close(self) -> dict[str, Any]:
        if self.proc is None:
            return {}
        proc, self.proc = self.proc, None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=5)
            raise HarnessError("the board client did not stop") from None
        lines = [x for x in out.splitlines() if x.startswith("{")]
        if not lines:
            raise HarnessError(f"the board client printed no summary (exit {proc.returncode})")
        summary = dict(json.loads(lines[-1]))
        # The client has exited: each stream's socket is closed on its side. The server should
        # close its side within moments; a socket left in CLOSE_WAIT is a stream still running.
        time.sleep(2)
        summary["server_close_wait"] = close_wait_sockets(self.port)
        return summary


def close_wait_sockets(port: int) -> int:
    """TCP sockets on this local port whose peer closed and that this host has not (CLOSE_WAIT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "08":
                    count += 1
    return count


def idle_cpu_share(pid: int, seconds: float) -> float:
    """The share of one core a process used over ``seconds`` of no traffic."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def database_connections(database_url: str) -> int | None:
    """Open connections to the bench's database (pg_stat_activity), this query's own left out."""
    import psycopg

    name = urlsplit(database_url).path.lstrip("/")
    with contextlib.suppress(psycopg.Error):
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                (name,),
            ).fetchone()
            return int(row[0]) if row else None
    return None


def measure_costs(
    plan: Plan, gateways: dict[str, Target], mock_base: str, boards: Boards, database_url: str
) -> Results:
    """Every cost point against its baseline, in the same rounds (the order rotates)."""
    results = Results()
    pids = [t.pid for t in gateways.values() if t.pid]
    set_mock(mock_base, latency_ms=0, chunk_delay_ms=0)
    points = [
        cp
        for cp in COST_POINTS
        if (cp.smoke or not plan.smoke) and (not plan.cost_points or cp.name in plan.cost_points)
    ]
    for repeat in range(plan.repeats):
        log(f"costs: repeat {repeat + 1}/{plan.repeats}")
        for cp in points[repeat % len(points) :] + points[: repeat % len(points)]:
            target = dataclasses.replace(gateways[cp.gateway], model=cp.model)
            assert target.pid is not None
            settle(pids, max_seconds=plan.settle_max_seconds)
            extra: dict[str, Any] = {}
            if cp.boards:
                extra["idle_cpu_without"] = idle_cpu_share(target.pid, plan.board_idle_seconds)
                extra["db_connections_without"] = database_connections(database_url)
                extra["opened"] = boards.open()
                try:
                    time.sleep(1)  # the streams' first lanes render
                    extra["idle_cpu_with"] = idle_cpu_share(target.pid, plan.board_idle_seconds)
                    extra["db_connections_with"] = database_connections(database_url)
                    run = cost_run(target, cp, plan, mock_base)
                finally:
                    extra["client"] = boards.close()
            else:
                run = cost_run(target, cp, plan, mock_base)
            run.update(extra)
            results.add(cp.name, "gateway", run)
            log(
                f"  {cp.name:22} {run['rps']:7.0f} req/s  p50 {run['p50_ms']:6.2f} ms  "
                f"CPU {run['cpu_us']:5.0f} us/request  upstream calls {run['upstream_share']:.0%}"
                f"  errors {run['non_2xx']}+{run['socket_errors']}"
                + (
                    f"  boards {extra['opened']} open, idle CPU {extra['idle_cpu_without']:.1%}"
                    f" -> {extra['idle_cpu_with']:.1%}"
                    if cp.boards
                    else ""
                )
            )
    return results


def cost_run(target: Target, cp: CostPoint, plan: Plan, mock_base: str) -> dict[str, Any]:
    """One wrk run, with the gateway worker's CPU per request and the upstream calls it made."""
    assert target.pid is not None
    calls, cpu = mock_requests(mock_base), cpu_seconds(target.pid)
    run = wrk_point(target, cp.connections, plan.cost_seconds, *cp.flags)
    used = cpu_seconds(target.pid) - cpu
    upstream = mock_requests(mock_base) - calls - 1
    run["cpu_us"] = used / run["requests"] * 1e6 if run["requests"] else math.nan
    run["upstream_share"] = upstream / run["requests"] if run["requests"] else math.nan
    return run


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0.0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    wrk_version = ""
    with contextlib.suppress(OSError):
        wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(
            "\n"
        )[0]
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "wrk": wrk_version.strip(),
    }


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(plan: Plan, argv: str) -> tuple[dict[str, Any], Results]:
    plan.out.mkdir(parents=True, exist_ok=True)
    preflight(plan)
    started = time.monotonic()
    info: dict[str, Any] = {
        "machine": machine(),
        "load_before": load_average(),
        "command": "make bench-smoke" if plan.smoke else "make bench",
        "argv": argv,
        "plan": {k: str(v) for k, v in plan.__dict__.items()},
    }
    litellm_exe = ensure_litellm(plan)
    database_url = (
        os.environ.get("BENCH_DATABASE_URL")
        or f"postgres://postgres@127.0.0.1:5432/{plan.database}"
    )
    ensure_database(database_url)
    reset_redis(plan.redis_url)
    procs = Processes()
    try:
        mock_port, gateway_port, litellm_port = free_port(), free_port(), free_port()
        mock_base = f"http://127.0.0.1:{mock_port}"
        mock_log = plan.out / "mock.log"
        mock = procs.start(
            "mock",
            [
                "taskset",
                "-c",
                CLIENT_CORE,
                PY,
                str(BENCH / "mock_upstream.py"),
                "--port",
                str(mock_port),
            ],
            logfile=mock_log,
        )
        wait_http(
            f"{mock_base}/_mock/config",
            seconds=20,
            proc=mock,
            name="the mock upstream",
            logfile=mock_log,
        )

        litellm_proc = None
        litellm_log = plan.out / "litellm.log"
        if (
            litellm_exe is not None
        ):  # starts while the gateway's database is set up: it takes a while
            config = plan.out / "litellm.yaml"
            litellm_config(config, f"{mock_base}/v1")
            litellm_proc = procs.start(
                "litellm",
                [
                    "taskset",
                    "-c",
                    GATEWAY_CORE,
                    str(litellm_exe),
                    "--config",
                    str(config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(litellm_port),
                    "--num_workers",
                    "1",
                ],
                logfile=litellm_log,
                env=litellm_env(),
                cwd=plan.out,
            )

        env = gateway_env(plan, database_url)
        log(f"setting up database {plan.database} and the bench balancers")
        setup = setup_gateway(plan, env, f"{mock_base}/v1")
        key = setup["key"]
        # The second gateway (metrics and request log off, for the cost points) starts now, beside
        # the first: it idles until then.
        quiet_port = free_port()
        quiet_env = {**env, "GATEWAY_METRICS": "0", "GATEWAY_REQUEST_LOG": "0"}
        started_gateways = [
            ("gateway", gateway_port, env),
            ("gateway-quiet", quiet_port, quiet_env),
        ]
        # One of the two off each (the split cost points; not in the smoke run).
        halves = {
            "metrics-off": (free_port(), {**env, "GATEWAY_METRICS": "0"}),
            "log-off": (free_port(), {**env, "GATEWAY_REQUEST_LOG": "0"}),
            "fresh": (free_port(), dict(env)),
        }
        if not plan.smoke:
            started_gateways += [
                (f"gateway-{name}", port, half_env) for name, (port, half_env) in halves.items()
            ]
        gateway, quiet, *half_procs = start_gateways(procs, plan, started_gateways)

        targets = [
            Target(
                "direct",
                f"{mock_base}/v1/chat/completions",
                MOCK_MODEL,
                MOCK_KEY,
                worker_pid(mock.pid),
            ),
            Target(
                "gateway",
                f"http://127.0.0.1:{gateway_port}/v1/chat/completions",
                "bench",
                key,
                worker_pid(gateway.pid),
            ),
        ]
        if litellm_proc is not None:
            wait_http(
                f"http://127.0.0.1:{litellm_port}/health/liveliness",
                seconds=180,
                proc=litellm_proc,
                name="LiteLLM",
                logfile=litellm_log,
            )
            targets.append(
                Target(
                    "litellm",
                    f"http://127.0.0.1:{litellm_port}/v1/chat/completions",
                    "bench",
                    LITELLM_MASTER_KEY,
                    worker_pid(litellm_proc.pid),
                )
            )
        for target in targets:
            headers = check_target(target)
            if target.name == "gateway":
                info["gateway_headers"] = headers
                log(f"gateway routes the bench prompt: {headers}")
        info["targets"] = [t.name for t in targets]
        info["memory_start"] = {t.name: memory_of(t.pid) for t in targets if t.pid}
        if plan.serve:
            serve_forever(targets, mock_base)
            raise KeyboardInterrupt
        info["classifier"] = [classifier_latency(name) for name in plan.classifier_sets]
        for row in info["classifier"]:
            log(
                f"local router model on {row['set']}: p50 {row['p50_ms']:.2f} ms  p99 "
                f"{row['p99_ms']:.2f} ms"
                f"; from the decision cache p50 {fmt(row['cached_p50_ms'], 4)} ms"
            )
        info["cache_steps"] = cache_steps(plan, env)
        log("response cache steps measured in process (bench/cache_cost.py)")

        results, info["idle_waits_s"] = measure(plan, targets, mock_base)
        info["memory"] = {t.name: memory_of(t.pid) for t in targets if t.pid}
        info["load_after_points"] = load_average()

        gateways = {
            "gateway": targets[1],
            "quiet": dataclasses.replace(
                targets[1],
                name="gateway-quiet",
                url=f"http://127.0.0.1:{quiet_port}/v1/chat/completions",
                pid=worker_pid(quiet.pid),
            ),
        }
        for (name, (port, _)), proc in zip(halves.items(), half_procs, strict=False):
            gateways[name] = dataclasses.replace(
                targets[1],
                name=f"gateway-{name}",
                url=f"http://127.0.0.1:{port}/v1/chat/completions",
                pid=worker_pid(proc.pid),
            )
        for target in gateways.values():  # first requests: config load, pools, the router model
            check_target(target)
            wrk_point(target, 8, 1)
        boards = Boards(
            plan, f"http://127.0.0.1:{gateway_port}/balancers/bench/board/events/", setup["session"]
        )
        info["costs_load_before"] = load_average()
        costs = measure_costs(plan, gateways, mock_base, boards, database_url)
        info["costs"] = costs.runs
        info["costs_load_after"] = load_average()
        info["memory_end"] = {
            name: memory_of(t.pid) for name, t in gateways.items() if t.pid is not None
        }
        if plan.profile_seconds and not pyspy_path():
            log("profile skipped: py-spy is not installed (.venv/bin/pip install py-spy)")
            info["profile_skipped"] = "py-spy is not installed (.venv/bin/pip install py-spy)"
        elif plan.profile_seconds:
            settle([t.pid for t in targets if t.pid])
            log(
                f"profiling the gateway for {plan.profile_seconds:.0f}s at 32 connections (py-spy "
                "--gil)"
            )
            info["profile"] = profile_gateway(plan, targets[1], mock_base)
        info["usage_events"] = usage_events(env)
        info["elapsed_s"] = round(time.monotonic() - started)
        info["load_after"] = load_average()
        return info, results
    finally:
        log("stopping the servers")
        procs.stop_all()


def start_gateways(
    procs: Processes, plan: Plan, gateways: list[tuple[str, int, dict[str, str]]]
) -> list[subprocess.Popen[bytes]]:
    """Gateways as ``make serve`` runs them, one worker each, pinned to the gateway's core:
    (name, port, environment) each, all started before the first is waited for."""
    started = [
        (name, port, start_gateway(procs, plan, name, port, env)) for name, port, env in gateways
    ]
    for name, port, proc in started:
        logfile = plan.out / f"{name}.log"
        wait_http(
            f"http://127.0.0.1:{port}/healthz", seconds=90, proc=proc, name=name, logfile=logfile
        )
    return [proc for _, _, proc in started]


def start_gateway(
    procs: Processes, plan: Plan, name: str, port: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    logfile = plan.out / f"{name}.log"
    return procs.start(
        name,
        [
            "taskset",
            "-c",
            GATEWAY_CORE,
            PY,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            # make serve waits 30 s; the bench reads everything it needs before it stops them
            "--timeout-graceful-shutdown",
            "5",
        ],
        logfile=logfile,
        env=env,
    )


def serve_forever(targets: list[Target], mock_base: str) -> None:
    """--serve: leave the bench's servers up for manual runs and profiles until Ctrl-C."""
    print(
        f"mock knobs: curl -X POST {mock_base}/_mock/config -d '{{\"latency_ms\": 200}}'",
        flush=True,
    )
    for t in targets:
        print(
            f"{t.name:8} pid {t.pid}: wrk -t1 -c32 -d10s -s bench/post.lua {t.url} -- {t.model} "
            f"{t.key}",
            flush=True,
        )
    print("Ctrl-C stops them all.", flush=True)
    while True:
        time.sleep(3600)


def usage_events(env: dict[str, str]) -> int | None:
    """Usage events the gateway wrote (it flushes every second; read after the load)."""
    import psycopg

    time.sleep(1.5)
    with contextlib.suppress(psycopg.Error):
        with psycopg.connect(env["DATABASE_URL"], connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM gateway_usageevent").fetchone()
            return int(row[0]) if row else None
    return None


# ---------------------------------------------------------------- the report


def fmt(value: float | None, digits: int = 0, unit: str = "", *, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return DASH
    text = f"{value:+,.{digits}f}" if signed else f"{value:,.{digits}f}"
    return text + unit


def ratio(a: float | None, b: float | None, digits: int = 2, suffix: str = TIMES) -> str:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return DASH
    return f"{a / b:,.{digits}f}{suffix}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**NOT MET**")


def targets_table(info: dict[str, Any], res: Results) -> tuple[list[str], list[dict[str, Any]]]:
    has_litellm = "litellm" in info.get("targets", [])
    rows: list[dict[str, Any]] = []

    for c in (32, 64):
        gw, ll = res.median(f"c{c}", "gateway", "rps"), res.median(f"c{c}", "litellm", "rps")
        ok = None if not has_litellm or gw is None or ll is None else gw >= 10 * ll
        rows.append(
            {
                "target": f"throughput at {c} connections ≥ 10" + TIMES + " LiteLLM",
                "measured": ratio(gw, ll, 1) if has_litellm else "LiteLLM not run",
                "ok": ok,
            }
        )
    d50, g50 = res.median("c1", "direct", "p50_ms"), res.median("c1", "gateway", "p50_ms")
    d99, g99 = res.median("c1", "direct", "p99_ms"), res.median("c1", "gateway", "p99_ms")
    add50 = None if d50 is None or g50 is None else g50 - d50
    add99 = None if d99 is None or g99 is None else g99 - d99
    rows.append(
        {
            "target": "added latency at 1 connection, p50 ≤ 1.5 ms",
            "measured": fmt(add50, 2, " ms"),
            "ok": None if add50 is None else add50 <= 1.5,
        }
    )
    rows.append(
        {
            "target": "added latency at 1 connection, p99 ≤ 5 ms",
            "measured": fmt(add99, 2, " ms"),
            "ok": None if add99 is None else add99 <= 5.0,
        }
    )
    gs, ds = res.median("slow", "gateway", "rps"), res.median("slow", "direct", "rps")
    rows.append(
        {
            "target": "200 ms upstream, 256 connections: ≥ 80% of direct throughput",
            "measured": ratio(gs, ds, 0, "") if gs is None or ds is None else f"{gs / ds:.0%}",
            "ok": None if gs is None or ds is None else gs >= 0.8 * ds,
        }
    )
    non2xx, sock = res.errors("slow", "gateway")
    rows.append(
        {
            "target": "200 ms upstream, 256 connections: no errors",
            "measured": f"{non2xx} non-2xx, {sock} socket errors",
            "ok": non2xx == 0 and sock == 0,
        }
    )
    dt50, gt50 = res.median("ttfb", "direct", "p50_ms"), res.median("ttfb", "gateway", "p50_ms")
    addt = None if dt50 is None or gt50 is None else gt50 - dt50
    rows.append(
        {
            "target": "added time to first byte (streams), p50 ≤ 2 ms",
            "measured": fmt(addt, 2, " ms"),
            "ok": None if addt is None else addt <= 2.0,
        }
    )
    # VmHWM is a high-water mark: read after the cost points, it is the peak of the whole run.
    hwm = (info.get("memory_end") or info.get("memory", {})).get("gateway", {}).get("VmHWM")
    rows.append(
        {
            "target": "resident memory per worker ≤ 150 MiB (peak, VmHWM, a new prompt each "
            "request)",
            "measured": fmt(hwm, 0, " MiB"),
            "ok": None if hwm is None else hwm <= 150,
        }
    )
    for c in info.get("classifier", []):  # issue 13: 10 routes, 10 examples each
        if c.get("routes", 0) >= 10 and c.get("examples", 0) >= 10:
            rows.append(
                {
                    "target": f"router decision at {c['routes']} routes {TIMES} {c['examples']} "
                    "examples "
                    f"(`{c['set']}`): p50 ≤ 0.5 ms, p99 ≤ 2 ms",
                    "measured": f"{c['p50_ms']:.2f} / {c['p99_ms']:.2f} ms",
                    "ok": c["p50_ms"] <= 0.5 and c["p99_ms"] <= 2.0,
                }
            )
            break
    lines = ["| target (issues 6, 13) | measured | |", "| --- | --- | --- |"]
    lines += [f"| {r['target']} | {r['measured']} | {verdict(r['ok'])} |" for r in rows]
    return lines, rows


def errors_cell(res: Results, point: str, names: list[str]) -> str:
    parts = []
    for name in names:
        if not res.has(point, name):
            continue
        non2xx, sock = res.errors(point, name)
        parts.append(f"{non2xx}/{sock}")
    return " · ".join(parts)


def render(info: dict[str, Any], res: Results, plan: Plan) -> str:
    names = [n for n in TARGET_NAMES if n in info.get("targets", [])]
    has_litellm = "litellm" in names
    m = info["machine"]
    out = [
        f"# Benchmark: gateway vs LiteLLM vs direct ({'smoke' if plan.smoke else 'full'} run)",
        "",
        f"- command: `{info['command']}` (`{info['argv']}`), {info.get('elapsed_s', '?')} s",
        f"- machine: {m['nproc']} cores, {m['cpu']}, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['wrk']}",
        f"- date: {m['date']}; load average before {info['load_before']}, after the points "
        f"{info.get('load_after_points', '?')}",
        "- gateway: one uvicorn worker (uvloop, httptools) on core 0, PostgreSQL + Redis, "
        "balancer `bench` in "
        "intent_classifier mode (built-in `intent-classifier`), default route → "
        "weighted_round_robin group of two "
        f"openai instances on the mock, API key auth and usage events on; the bench prompt went to "
        f"route `{info.get('gateway_headers', {}).get('x-balancer-route', '?')}` "
        f"(`{info.get('gateway_headers', {}).get('x-balancer-decision', '?')}`); "
        f"usage events written: {fmt(info.get('usage_events'))}",
        f"- LiteLLM {LITELLM_VERSION}: "
        + (
            "one worker on core 0, two deployments of the mock, master key, no database, no "
            "callbacks, no retries"
            if has_litellm
            else "not run"
        ),
        f"- mock upstream and load (wrk -t1, bench/ttfb.py) on core 1; {plan.repeats} repeat(s), "
        "medians; "
        f"{plan.seconds:g} s per point ({plan.slow_seconds:g} s at 256 connections); errors are "
        "non-2xx/socket "
        f"summed over repeats, in the order {' · '.join(names)}; before each point the harness "
        "waits for "
        "the servers to go idle (waited "
        f"{', '.join(f'{k} {v:g} s' for k, v in info.get('idle_waits_s', {}).items())})",
        "",
    ]
    header = "| point | " + " | ".join(LABELS[n] for n in names) + " | gateway ÷ direct"
    header += " | gateway ÷ LiteLLM |" if has_litellm else " |"
    out += [header + " errors |", "| --- " * (len(names) + (3 if has_litellm else 2) + 1) + "|"]

    def row(label: str, point: str, key: str, digits: int, unit: str, kind: str) -> None:
        cells = [fmt(res.median(point, n, key), digits) for n in names]
        g, d = res.median(point, "gateway", key), res.median(point, "direct", key)
        ll = res.median(point, "litellm", key)
        if kind == "throughput":
            extra = [ratio(g, d, 2), *([ratio(g, ll, 1)] if has_litellm else [])]
        else:  # latency: added = gateway - direct
            added = None if g is None or d is None else g - d
            extra = [
                fmt(added, 2, f" {unit}", signed=True),
                *([ratio(g, ll, 2) if ll else DASH] if has_litellm else []),
            ]
        out.append(
            f"| {label} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(extra)
            + f" | {errors_cell(res, point, names) if kind == 'throughput' else ''} |"
        )

    for c in plan.connections:
        row(f"{c} conn, 0 ms upstream: req/s", f"c{c}", "rps", 0, "", "throughput")
        row(f"{c} conn: p50 latency ms", f"c{c}", "p50_ms", 2, "ms", "latency")
        row(f"{c} conn: p99 latency ms", f"c{c}", "p99_ms", 2, "ms", "latency")
    sc, sl = plan.slow_connections, plan.slow_latency_ms
    row(f"{sc} conn, {sl:.0f} ms upstream: req/s", "slow", "rps", 0, "", "throughput")
    row(f"{sc} conn, {sl:.0f} ms: p50 latency ms", "slow", "p50_ms", 1, "ms", "latency")
    row(f"{sc} conn, {sl:.0f} ms: p99 latency ms", "slow", "p99_ms", 1, "ms", "latency")
    out.append(
        f"| stream TTFB ({plan.ttfb_requests} sequential), p50 ms | "
        + " | ".join(fmt(res.median("ttfb", n, "p50_ms"), 2) for n in names)
        + " | "
        + _added(res, "ttfb", "p50_ms")
        + (
            " | "
            + ratio(
                res.median("ttfb", "gateway", "p50_ms"), res.median("ttfb", "litellm", "p50_ms"), 2
            )
            if has_litellm
            else ""
        )
        + f" | {errors_cell(res, 'ttfb', names)} |"
    )
    out.append(
        "| stream TTFB, p99 ms | "
        + " | ".join(fmt(res.median("ttfb", n, "p99_ms"), 2) for n in names)
        + " | "
        + _added(res, "ttfb", "p99_ms")
        + (" | " if has_litellm else "")
        + " | |"
    )
    mem, mem0 = info.get("memory", {}), info.get("memory_start", {})
    out.append(
        "| resident MiB after start (VmRSS) | "
        + " | ".join(fmt(mem0.get(n, {}).get("VmRSS"), 0) for n in names)
        + " | | "
        + ("| " if has_litellm else "")
        + "|"
    )
    out.append(
        "| peak resident MiB after the points (VmHWM) | "
        + " | ".join(fmt(mem.get(n, {}).get("VmHWM"), 0) for n in names)
        + " | "
        + ratio(mem.get("gateway", {}).get("VmHWM"), mem.get("direct", {}).get("VmHWM"), 1)
        + " | "
        + (
            ratio(mem.get("gateway", {}).get("VmHWM"), mem.get("litellm", {}).get("VmHWM"), 2)
            + " | "
            if has_litellm
            else ""
        )
        + "|"
    )
    out.append("")
    table, _rows = targets_table(info, res)
    out += ["## Targets", "", *table, ""]
    out += [
        "## Local router model (decision latency, in process, core 0)",
        "",
        "Without the decision cache: the router model decides each prompt; with it: the same "
        "prompts answered from the gateway's decision cache (its TTL cache and key).",
        "",
        f"| set | routes {TIMES} examples | prompts | accuracy | p50 | p99 | mean "
        "| from the decision cache: p50 | p99 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in info.get("classifier", []):
        out.append(
            f"| `{c['set']}` | {c.get('routes', '?')} {TIMES} {c.get('examples', '?')} "
            f"| {c['prompts']:,} | {c['accuracy']:.1%} | {c['p50_ms']:.2f} ms | "
            f"{c['p99_ms']:.2f} ms | {c['mean_ms']:.2f} ms "
            f"| {fmt(_us(c.get('cached_p50_ms')), 1, ' µs')} "
            f"| {fmt(_us(c.get('cached_p99_ms')), 1, ' µs')} |"
        )
    out.append("")
    out += render_costs(info, plan)
    out += ["## Runs", "", "Every repeat, in order (req/s; TTFB p50 ms):", ""]
    for point in plan.points:
        key = "p50_ms" if point == "ttfb" else "rps"
        digits = 2 if point == "ttfb" else 0
        cells = [
            f"{n} " + ", ".join(fmt(v, digits) for v in res.values(point, n, key)) for n in names
        ]
        out.append(f"- {point}: " + "; ".join(cells))
    for name, targets in info.get("costs", {}).items():
        values = [fmt(r["rps"]) for r in targets.get("gateway", [])]
        out.append(f"- costs, {name}: " + ", ".join(values))
    out.append("")
    prof = info.get("profile")
    if info.get("profile_skipped"):
        out += [f"Profile skipped: {info['profile_skipped']}.", ""]
    if prof:
        from bench.profile_summary import render_markdown

        out += [
            "## Profile of the gateway worker (py-spy --gil, 32 connections)",
            "",
            f"{prof['samples']:,} samples holding the GIL over {plan.profile_seconds:.0f} s "
            f"({prof['rps_under_profiler']:.0f} req/s while sampled); raw stacks in "
            f"`{prof['raw']}`.",
            "",
            *render_markdown(prof, top=15),
            "",
        ]
    return "\n".join(out)


CACHE_STEP_LABELS = {  # bench/cache_cost.py's figures
    "rtt": "Redis PING round trip (reference)",
    "miss_lookup": "miss: look-up",
    "miss_store": "miss: store",
    "miss_total": "miss: total added to the request",
    "hit": "hit: look-up + answer (this process's copy)",
    "hit_stream": "hit: look-up + answer replayed as a stream (this process's copy)",
    "hit_redis": "hit: look-up + answer, from Redis (another worker's answer)",
}


def _us(ms: float | None) -> float | None:
    return None if ms is None else ms * 1000


def render_costs(info: dict[str, Any], plan: Plan) -> list[str]:
    """The costs section: each cost point against its baseline of the same rounds."""
    if "costs" not in info:
        return []
    costs = Results(info["costs"])

    def med(name: str, key: str) -> float | None:
        return costs.median(name, "gateway", key)

    out = [
        f"## Costs (issues 13{DASH}16), same run",
        "",
        f"The gateway (one worker, core 0) at {COST_POINTS[0].connections} connections unless "
        f"said, {plan.cost_seconds:g} s per point, {plan.repeats} repeat(s) in rotating order, "
        "medians; each row against the baseline measured in the same rounds. CPU is the gateway "
        "worker's (user + system) over the point divided by the requests it answered; upstream "
        "calls per request are the mock's. Load average "
        f"{info.get('costs_load_before', '?')} before these points, "
        f"{info.get('costs_load_after', '?')} after.",
        "",
        "| point | req/s | vs baseline | p50 ms | p99 ms | gateway CPU µs/request | Δ CPU µs | "
        "upstream calls/request | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for cp in COST_POINTS:
        if not costs.has(cp.name, "gateway"):
            continue
        rps, base_rps = med(cp.name, "rps"), med(cp.baseline, "rps")
        cpu, base_cpu = med(cp.name, "cpu_us"), med(cp.baseline, "cpu_us")
        label = cp.label + (f" ({plan.boards})" if cp.boards else "")
        if cp.connections != COST_POINTS[0].connections and "connection" not in label:
            label += f", {cp.connections} connections"
        same = cp.name == cp.baseline
        non2xx, sock = costs.errors(cp.name, "gateway")
        cpu_delta = (
            "" if same or cpu is None or base_cpu is None else fmt(cpu - base_cpu, 0, signed=True)
        )
        out.append(
            f"| {label} | {fmt(rps)} | {'' if same else ratio(rps, base_rps, 3)} "
            f"| {fmt(med(cp.name, 'p50_ms'), 2)} | {fmt(med(cp.name, 'p99_ms'), 2)} "
            f"| {fmt(cpu)} | "
            f"{cpu_delta} "
            f"| {fmt(med(cp.name, 'upstream_share'), 2)} | {non2xx}/{sock} |"
        )
    out.append("")
    board_runs = costs.runs.get("boards", {}).get("gateway", [])
    if board_runs:
        idle_off = statistics.median(r["idle_cpu_without"] for r in board_runs)
        idle_on = statistics.median(r["idle_cpu_with"] for r in board_runs)
        clients = [r.get("client", {}) for r in board_runs]
        per_board = [c.get("request_events", 0) / max(1, c.get("opened", 0)) for c in clients if c]
        cpu_on, cpu_base = med("boards", "cpu_us"), med("baseline", "cpu_us")
        rps_on = med("boards", "rps")
        share = (
            None
            if cpu_on is None or cpu_base is None or rps_on is None
            else (cpu_on - cpu_base) * rps_on / 1e6
        )
        board_cpu = None if cpu_on is None or cpu_base is None else cpu_on - cpu_base
        out += [
            f"**{plan.boards} live boards** (bench/boards.py on core 1: signed-in SSE streams of "
            "`/balancers/bench/board/events/`, as the board page opens them): "
            f"{', '.join(str(r['opened']) for r in board_runs)} of {plan.boards} open in each "
            f"repeat; with no traffic the gateway worker used {idle_off:.1%} of a core without "
            f"them and {idle_on:.1%} with them ({plan.board_idle_seconds:g} s each, medians); "
            "under the load, "
            f"{fmt(board_cpu, 0, signed=True)} "
            f"µs of gateway CPU per request, "
            f"{DASH if share is None else f'{share:.1%}'} of a core at {fmt(rps_on)} req/s; each "
            f"board was sent {fmt(statistics.median(per_board) if per_board else None)} request "
            "events over the point (median; the feed draws at most 50 per balancer per batch and "
            "counts the rest), streams ended early: "
            f"{sum(c.get('ended_early', 0) for c in clients)}; server sockets still in CLOSE_WAIT "
            "2 s after the client had exited (streams the gateway kept running): "
            f"{', '.join(str(c.get('server_close_wait', DASH)) for c in clients)}; connections to "
            "the bench's PostgreSQL database (pg_stat_activity) before the boards opened and "
            "while they were open: "
            + ", ".join(
                f"{r.get('db_connections_without', DASH)} {ARROW} "
                f"{r.get('db_connections_with', DASH)}"
                for r in board_runs
            )
            + "; the client's own CPU "
            f"{fmt(statistics.median(c.get('client_cpu_s', 0) for c in clients), 2)} s a repeat.",
            "",
        ]
    steps = info.get("cache_steps")
    if steps:
        out += [
            f"**The response cache's own steps**, in process on core 0 (`python -m "
            f"bench.cache_cost --n {steps['n']}`, a {steps['answer_bytes']:,}-byte answer; "
            f"Redis PING round trip for reference: median {steps['rtt']['p50_us']:.0f} µs, "
            f"p99 {steps['rtt']['p99_us']:.0f} µs):",
            "",
            "| step | exact: median | p99 | semantic: median | p99 |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key in ("miss_lookup", "miss_store", "miss_total", "hit", "hit_stream", "hit_redis"):
            if key not in steps["exact"]:
                continue
            e, m = steps["exact"][key], steps["semantic"][key]
            out.append(
                f"| {CACHE_STEP_LABELS[key]} | {e['p50_us']:.0f} µs | {e['p99_us']:.0f} µs "
                f"| {m['p50_us']:.0f} µs | {m['p99_us']:.0f} µs |"
            )
        missed = steps["exact"]["missed_repeats"] + steps["semantic"]["missed_repeats"]
        if missed:
            out.append("")
            out.append(f"{missed} repeated requests missed (Redis late or its breaker open).")
        busy = steps.get("saturated")
        if busy:
            out += [
                "",
                f"On a saturated loop ({busy['concurrency']} concurrent look-ups of answers held "
                f"in Redis only, {busy['burn_ms']:g} ms of CPU after each): {busy['hits']} of "
                f"{busy['look_ups']} were hits; a look-up took median "
                f"{busy['look_up']['p50_us'] / 1000:.1f} ms (p99 "
                f"{busy['look_up']['p99_us'] / 1000:.1f}) "
                f"while the loop's lag was median {busy['loop_lag']['p50_us'] / 1000:.1f} ms "
                f"(p99 {busy['loop_lag']['p99_us'] / 1000:.1f}).",
            ]
        out.append("")
    return out


def _added(res: Results, point: str, key: str) -> str:
    g, d = res.median(point, "gateway", key), res.median(point, "direct", key)
    return DASH if g is None or d is None else fmt(g - d, 2, " ms", signed=True)


def harness_problems(res: Results, info: dict[str, Any]) -> list[str]:
    """What makes a smoke run fail: errors from the gateway or the mock, a point with no answer."""
    problems = []
    for point, targets in res.runs.items():
        for name in ("gateway", "direct"):
            if targets.get(name):
                non2xx, sock = res.errors(point, name)
                if non2xx or sock:
                    problems.append(f"{name} at {point}: {non2xx} non-2xx, {sock} socket errors")
                if not sum(r["requests"] for r in targets[name]):
                    problems.append(f"{name} at {point}: no request completed")
    if not info.get("usage_events"):
        problems.append("the gateway recorded no usage events")
    for name, targets in info.get("costs", {}).items():
        for run in targets.get("gateway", []):
            if run["non_2xx"] or run["socket_errors"]:
                problems.append(
                    f"cost point {name}: {run['non_2xx']} non-2xx, {run['socket_errors']} socket "
                    "errors"
                )
            if not run["requests"]:
                problems.append(f"cost point {name}: no request completed")
            client = run.get("client")
            if client is not None:
                if client.get("opened") != client.get("boards"):
                    problems.append(
                        f"boards: {client.get('opened')} of {client.get('boards')} streams opened "
                        f"({client.get('statuses')})"
                    )
                if not client.get("request_events"):
                    problems.append("boards: no request event reached a board under the load")
                if client.get("ended_early"):
                    problems.append(f"boards: {client['ended_early']} streams ended early")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Gateway vs LiteLLM vs direct (issue 6).")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny points, no profile, LiteLLM only if installed (< 1 min)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="set everything up, print the targets and wait (for manual wrk or py-spy runs)",
    )
    parser.add_argument(
        "--repeats", type=int, default=0, help="repeats of every point (default 3; smoke 1)"
    )
    parser.add_argument(
        "--seconds", type=float, default=0, help="seconds per 0 ms point (default 8; smoke 1)"
    )
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=0,
        help="seconds of the 200 ms point (default 15; smoke 2)",
    )
    parser.add_argument(
        "--ttfb-requests", type=int, default=0, help="sequential streams (default 200; smoke 20)"
    )
    parser.add_argument(
        "--cost-seconds",
        type=float,
        default=0,
        help="seconds per cost point (default 8; smoke 1)",
    )
    parser.add_argument(
        "--cost-points",
        default="",
        help="comma-separated cost points to run, their baselines included (default: all)",
    )
    parser.add_argument(
        "--boards", type=int, default=50, help="live boards open during the boards point"
    )
    parser.add_argument("--profile-seconds", type=float, default=15)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--database", default="", help="PostgreSQL database (default bench; smoke bench_smoke)"
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", ""),
        help="default redis://127.0.0.1:6379/12 (smoke: /13); flushed at start",
    )
    parser.add_argument("--out", default=str(BENCH / "out"))
    args = parser.parse_args(argv)
    plan = make_plan(args)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    argv_text = "bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        with sigterm_as_interrupt():
            info, results = run(plan, argv_text.strip())
    except HarnessError as exc:
        log(f"harness error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    report = render(info, results, plan)
    name = "smoke" if plan.smoke else "latest"
    (plan.out / f"{name}.md").write_text(report + "\n")
    (plan.out / f"{name}.json").write_text(
        json.dumps({"info": info, "runs": results.runs}, indent=1, default=str)
    )
    print(report)
    log(f"wrote {rel(plan.out / f'{name}.md')}")
    problems = harness_problems(results, info)
    if problems:
        log("problems: " + "; ".join(problems))
        if plan.smoke:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
