"""What each piece of the metrics and the request log costs a request, timed in process.

    .venv/bin/python bench/observability_cost.py    # µs per request of each piece (best of 3)

The end-to-end cost (req/s and gateway CPU per request with /metrics and the JSON request
log on and off, same run) is measured by `make bench` (bench/run.py, "Costs"); this script
only splits it into its pieces: metrics.observe() on the event loop, the per-tick flush of
one label set, and the request log line built and formatted (in the log thread).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import load_average


def micro(n: int = 20_000) -> None:
    """The per-request cost of each piece, timed in this process (best of 3), multiprocess mode
    on."""
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


if __name__ == "__main__":
    micro()
