"""The worked example of docs/routing.md ("Latency threshold and hedging"): simulator instances
with a set time to first byte behind balancers that differ only in the primary route's latency
setting (none, a 300 ms threshold, the same threshold hedged), each called ROUNDS times with the
openai SDK through a real gateway process; prints each balancer's client-side latency (median
and max) and the attempt log of its last request. A scratch SQLite database, nothing else:

    export DATABASE_URL=sqlite:////tmp/hedge-example.sqlite3
    .venv/bin/python manage.py migrate -v0 && .venv/bin/python scripts/hedge_example.py
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import django
import httpx
import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from balancers.models import Balancer  # noqa: E402
from balancers.services import balancer_save  # noqa: E402
from gateway.models import ApiKey, UsageEvent  # noqa: E402
from gateway.services import api_key_create  # noqa: E402
from targetgroups.models import Instance  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "5"))
HI = [{"role": "user", "content": "Where is my order?"}]
PRIMARIES = {"slow": 2000, "slowish": 500}  # the primary's time to first byte, ms
SECOND_MS = 400  # the fallback's
THRESHOLD_MS = 300
SETTINGS = {"none": (None, False), "cut": (THRESHOLD_MS, False), "hedged": (THRESHOLD_MS, True)}


def instance(name: str, latency_ms: int) -> Instance:
    made = Instance(
        instance_id=f"hx-{name}",
        display_name=f"Hedge example {name}",
        provider="simulator",
        model=f"hx-{name}",
        workload_kind="chat",
        input_price_per_million="1",
        output_price_per_million="2",
        options={"latency_ms": latency_ms},
    )
    made.full_clean()
    made.save()
    return made


def setup() -> str:
    Balancer.objects.filter(name__startswith="hx-").delete()
    Instance.objects.filter(instance_id__startswith="hx-").delete()
    ApiKey.objects.filter(name="hedge-example").delete()
    second = instance("second", SECOND_MS)
    for primary_name, latency in PRIMARIES.items():
        primary = instance(primary_name, latency)
        for setting, (threshold, hedge) in SETTINGS.items():
            balancer_save(
                fields={
                    "name": f"hx-{primary_name}-{setting}",
                    "serving_name": f"hx-{primary_name}-{setting}",
                    "workload_kind": "chat",
                    "routing_mode": "ordered",
                },
                routes=[
                    {
                        "name": "primary",
                        "instance": primary,
                        "priority": 1,
                        "is_default": True,
                        "latency_threshold_ms": threshold,
                        "hedge": hedge,
                    },
                    {"name": "second", "instance": second, "priority": 2},
                ],
            )
    _, secret = api_key_create(name="hedge-example")
    return secret


def main() -> None:
    secret = setup()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GATEWAY_USAGE_FLUSH_SECONDS": "0.2"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        client = openai.OpenAI(base_url=base + "/v1", api_key=secret, max_retries=0)
        print(
            f"second target: {SECOND_MS} ms; threshold: {THRESHOLD_MS} ms; {ROUNDS} requests each"
        )
        for primary_name, latency in PRIMARIES.items():
            for setting in SETTINGS:
                name = f"hx-{primary_name}-{setting}"
                took = []
                for _ in range(ROUNDS):
                    started = time.monotonic()
                    client.chat.completions.create(model=name, messages=HI)
                    took.append((time.monotonic() - started) * 1000)
                time.sleep(0.5)
                last = UsageEvent.objects.filter(serving_name=name).order_by("-created_at").first()
                log = (
                    ", ".join(
                        f"{a['route']} {a['outcome']} {a['ms']:.0f} ms" for a in last.attempt_log
                    )
                    if last
                    else "?"
                )
                print(
                    f"primary {latency:5} ms, {setting:6}: median {statistics.median(took):6.0f} "
                    "ms, "
                    f"max {max(took):6.0f} ms | {log}"
                )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
