"""The cost of the gateway's metrics and request log: req/s with them on and off, same run.

Three gateways (one uvicorn worker each, pinned to the same core, idle in turn) route to the
bench's mock upstream (0 ms); wrk drives each in alternation, ROUNDS times, at 32 and 1
connections; the medians are printed as a Markdown table for docs/benchmarks.md.
"on": GATEWAY_METRICS=1, GATEWAY_REQUEST_LOG=1, GATEWAY_LOG_FORMAT=json (make serve's defaults);
"metrics": the request log off; "off": GATEWAY_METRICS=0, GATEWAY_REQUEST_LOG=0. Tracing is off in both (no OTEL_* variables).

    .venv/bin/python bench/observability_cost.py [--seconds 5] [--rounds 3]
    .venv/bin/python bench/observability_cost.py --micro   # µs per request of each piece, in process
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (
    BENCH,
    CLIENT_CORE,
    GATEWAY_CORE,
    PY,
    Processes,
    Target,
    cpu_seconds,
    ensure_database,
    free_port,
    gateway_env,
    load_average,
    make_plan,
    reset_redis,
    set_mock,
    setup_gateway,
    wait_http,
    worker_pid,
    wrk_point,
)

MODES = {
    "on": {"GATEWAY_METRICS": "1", "GATEWAY_REQUEST_LOG": "1", "GATEWAY_LOG_FORMAT": "json"},
    "metrics": {"GATEWAY_METRICS": "1", "GATEWAY_REQUEST_LOG": "0", "GATEWAY_LOG_FORMAT": "json"},
    "off": {"GATEWAY_METRICS": "0", "GATEWAY_REQUEST_LOG": "0", "GATEWAY_LOG_FORMAT": "json"},
}


def micro(n: int = 20_000) -> None:
    """The per-request cost of each piece, timed in this process (best of 3), multiprocess mode on."""
    import os
    import tempfile
    import time

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["GATEWAY_LOG_FORMAT"] = "json"
    import django

    django.setup()
    from datetime import UTC, datetime
    from decimal import Decimal

    from gateway.hotpath import accesslog, metrics
    from gateway.hotpath.usage import UsageRecord

    record = UsageRecord(
        created_at=datetime.now(UTC),
        request_id="0" * 32,
        endpoint="chat",
        status_code=200,
        latency_ms=3.2,
        balancer_id=1,
        serving_name="bench",
        route="main",
        instance="mock-1",
        model="m",
        decision_reason="ordered",
        attempts=1,
        attempt_log=[
            {"route": "main", "instance": "mock-1", "outcome": "ok", "status": 200, "ms": 2.0}
        ],
        ttfb_ms=3.0,
        prompt_tokens=12,
        completion_tokens=30,
        cost_usd=Decimal("0.00001"),
    )
    line = accesslog.formatter()

    def best(fn) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(n):
                fn()
            times.append((time.perf_counter() - started) / n * 1e6)
        return min(times)

    pieces = {
        "metrics: observe() on the loop": lambda: metrics.observe(record),
        "metrics: flush() per tick (one label set)": lambda: (
            metrics.observe(record),
            metrics.flush(),
        ),
        "request log: the line built and formatted (log thread)": lambda: line.format(
            accesslog._log_record(record, "")
        ),
    }
    print(f"load average: {load_average()}")
    for name, fn in pieces.items():
        print(f"{name}: {best(fn):.1f} µs")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--micro", action="store_true")
    args = parser.parse_args()
    if args.micro:
        micro()
        return 0
    plan = make_plan(
        argparse.Namespace(
            smoke=True,
            serve=False,
            repeats=1,
            seconds=1,
            slow_seconds=1,
            ttfb_requests=1,
            no_litellm=True,
            no_profile=True,
            profile_seconds=0,
            database="bench_obs",
            redis_url="redis://127.0.0.1:6379/13",
            out=str(BENCH / "out" / "observability"),
        )
    )
    plan.out.mkdir(parents=True, exist_ok=True)
    database_url = f"postgres://postgres@127.0.0.1:5432/{plan.database}"
    ensure_database(database_url)
    reset_redis(plan.redis_url)
    procs = Processes()
    results: dict[tuple[str, int], list[float]] = {}
    cpu_us: dict[tuple[str, int], list[float]] = {(mode, c): [] for mode in MODES for c in (32, 1)}
    load_before = load_average()
    try:
        mock_port = free_port()
        mock_base = f"http://127.0.0.1:{mock_port}"
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
            logfile=plan.out / "mock.log",
        )
        wait_http(
            f"{mock_base}/_mock/config",
            seconds=20,
            proc=mock,
            name="the mock upstream",
            logfile=plan.out / "mock.log",
        )
        set_mock(mock_base, latency_ms=0)
        env = gateway_env(plan, database_url)
        key = setup_gateway(plan, env, f"{mock_base}/v1")
        targets = {}
        for mode, extra in MODES.items():
            port = free_port()
            logfile = plan.out / f"gateway-{mode}.log"
            proc = procs.start(
                mode,
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
                ],
                logfile=logfile,
                env={**env, **extra},
            )
            wait_http(
                f"http://127.0.0.1:{port}/healthz",
                seconds=90,
                proc=proc,
                name=mode,
                logfile=logfile,
            )
            targets[mode] = Target(
                mode, f"http://127.0.0.1:{port}/v1/chat/completions", "bench", key, proc.pid
            )
            wrk_point(targets[mode], 8, 1)  # warm up: first config load, pools, caches
        for _ in range(args.rounds):
            for connections in (32, 1):
                for mode in MODES:
                    pid = worker_pid(targets[mode].pid or 0)
                    cpu = cpu_seconds(pid)
                    point = wrk_point(targets[mode], connections, args.seconds)
                    cpu_us[(mode, connections)].append(
                        (cpu_seconds(pid) - cpu) / max(1, point["requests"]) * 1e6
                    )
                    if point["non_2xx"] or point["socket_errors"]:
                        raise SystemExit(f"{mode} c{connections}: errors {point}")
                    results.setdefault((mode, connections), []).append(point["rps"])
    finally:
        procs.stop_all()
    print(f"load average before: {load_before}; after: {load_average()}")
    print("| connections | | off | metrics only | metrics + request log |")
    print("| --- | --- | --- | --- | --- |")
    for connections in (32, 1):
        for label, table in (("req/s", results), ("gateway CPU per request (µs)", cpu_us)):
            off = statistics.median(table[("off", connections)])
            cells = [f"{off:.0f}"]
            for mode in ("metrics", "on"):
                value = statistics.median(table[(mode, connections)])
                cells.append(f"{value:.0f} ({(value - off) / off * 100:+.1f}%)")
            print(f"| {connections} | {label} | " + " | ".join(cells) + " |")
    for connections in (32, 1):
        for mode in MODES:
            print(
                f"c{connections} {mode}: req/s "
                + "/".join(f"{v:.0f}" for v in results[(mode, connections)])
                + "; CPU us/request "
                + "/".join(f"{v:.0f}" for v in cpu_us[(mode, connections)])
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
