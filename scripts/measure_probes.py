"""Measure a probe run: 50 instances (half OpenAI-compatible, half Anthropic) on one loopback
upstream, 25 runs with the upstream answering 503 to runs 6-8. Prints the run times, the probe
history's size and what the upstream was asked. Run it against a scratch database:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<scratch> .venv/bin/python manage.py migrate
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<scratch> .venv/bin/python manage.py shell \\
        < scripts/measure_probes.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

from gateway.models import InstanceHealth, ProbeRecord
from gateway.probes import probe_all
from targetgroups.models import Instance
from tests.upstream_server import FakeUpstream

upstream = FakeUpstream().start()
for n in range(50):
    Instance.objects.create(
        instance_id=f"probe-{n}",
        provider="openai" if n % 2 else "anthropic",
        base_url=upstream.base_url,
        model="m",
        api_key="k",
    )
times = []
for run in range(25):
    upstream.models_status = 503 if 5 <= run < 8 else 200
    started = time.perf_counter()
    asyncio.run(probe_all(cooldown_seconds=1))
    times.append((time.perf_counter() - started) * 1000)
    if run in (5, 6, 8, 9):
        print(
            f"after run {run + 1}:",
            {
                s: InstanceHealth.objects.filter(status=s).count()
                for s in ("healthy", "degraded", "unavailable")
            },
        )
print(
    f"50 instances, 25 runs: probe_all p50 {statistics.median(times):.0f} ms, max "
    f"{max(times):.0f} ms"
)
print(
    "probe history rows:",
    ProbeRecord.objects.count(),
    "| GETs:",
    len(upstream.calls),
    "| other requests:",
    sum(1 for method, _ in upstream.calls if method != "GET"),
)
upstream.stop()
Instance.objects.filter(instance_id__startswith="probe-").delete()
