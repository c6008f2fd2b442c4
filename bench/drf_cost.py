"""What DRF costs on the gateway path: the same request through the DRF view and a plain async view.

Runs one uvicorn worker pinned to core 0 (embedded SQLite settings, usage events
on, a 0 ms simulator instance behind a one-route balancer) and wrk pinned to
core 1, alternating the two paths for ROUNDS rounds, and prints the medians.

    .venv/bin/python bench/drf_cost.py [--rounds 5] [--seconds 8] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def wrk(url: str, key: str, seconds: int, connections: int) -> tuple[float, float]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(ROOT / "bench" / "post.lua"), url, "--", "bench", key],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    value, unit = float(p50.group(1)), p50.group(2)  # type: ignore[union-attr]
    return rps, value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 1
    var = tempfile.mkdtemp(prefix="sb-drf-cost-")
    env = {**os.environ, "VAR_DIR": var, "GATEWAY_PLAIN_VIEWS": "1", "DATABASE_URL": f"sqlite:///{var}/db.sqlite3"}
    env.pop("REDIS_URL", None)
    run = lambda *a: subprocess.run([PY, "manage.py", *a], cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout  # noqa: E731
    run("migrate", "-v0")
    run("shell", "-c", (
        "from tests.factories import make_instance, make_balancer\n"
        "i = make_instance(instance_id='bench-sim', provider='simulator', model='bench-model', options={'latency_ms': 0})\n"
        "make_balancer(name='bench', serving_name='bench', routes=[{'name': 'main', 'intent': 'x', 'instance': i, 'priority': 1, 'is_default': True}])\n"
    ))
    key = run("create_api_key", "--name", "bench").strip()
    server = subprocess.Popen(
        ["taskset", "-c", "0", PY, "-m", "uvicorn", "config.asgi:application", "--port", "8019", "--loop", "uvloop",
         "--http", "httptools", "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    try:
        for _ in range(100):
            try:
                httpx.get("http://127.0.0.1:8019/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        paths = {"DRF view (adrf)": "/v1/chat/completions", "plain async view": "/plain/v1/chat/completions"}
        for path in paths.values():  # warm up
            wrk(f"http://127.0.0.1:8019{path}", key, 2, args.connections)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, path in paths.items():
                results[name].append(wrk(f"http://127.0.0.1:8019{path}", key, args.seconds, args.connections))
        print(f"{args.rounds} rounds of {args.seconds}s at {args.connections} connections, medians:")
        medians = {}
        for name, rows in results.items():
            rps = statistics.median(r for r, _ in rows)
            p50 = statistics.median(p for _, p in rows)
            medians[name] = rps
            print(f"  {name:18} {rps:8.0f} req/s   p50 {p50:6.1f} ms   (runs: {', '.join(f'{r:.0f}' for r, _ in rows)})")
        drf, plain = medians["DRF view (adrf)"], medians["plain async view"]
        print(f"  DRF costs {1 - drf / plain:.1%} of throughput; {(1 / drf - 1 / plain) * 1e6:.0f} µs per request")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(var, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
