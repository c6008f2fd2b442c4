"""Active health: a cheap probe of every enabled instance, on a schedule.

`GET {base_url}/models` for OpenAI-compatible servers (never a completion: it
costs nothing), the knobs for simulator instances, a load of the vectors for the
built-in router model. The result is saved per instance (InstanceHealth) for
the pages, and an unavailable instance is put in cooldown until the next probe,
through the same health tracker (and Redis hash) as passive health, so the
gateway stops sending it traffic before a client request has to fail.

Production: Celery beat runs `gateway.tasks.probe_instances` (config/celery.py).
Embedded mode (no Redis): the gateway process runs the probes itself every
GATEWAY_PROBE_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from gateway.db import in_thread
from gateway.engine.types import InstanceSpec
from gateway.hotpath.snapshot import instance_spec
from gateway.models import HealthStatus, InstanceHealth
from gateway.upstream import http
from gateway.upstream.openai_compat import client_headers
from targetgroups.models import Instance

logger = logging.getLogger(__name__)

SLOW_MS = 2000.0  # a probe slower than this marks the instance degraded


@dataclass(frozen=True, slots=True)
class ProbeResult:
    pk: int
    status: str
    latency_ms: float | None
    detail: str


async def probe_instance(instance: InstanceSpec) -> ProbeResult:
    started = time.perf_counter()
    if instance.provider == "simulator":
        options = instance.options
        if options.get("down"):
            return ProbeResult(instance.pk, HealthStatus.UNAVAILABLE, None, "simulator switched down")
        latency = float(options.get("latency_ms", 0))
        if float(options.get("error_rate", 0)) >= 0.5:
            return ProbeResult(instance.pk, HealthStatus.DEGRADED, latency, f"simulated error rate {options['error_rate']}")
        return ProbeResult(instance.pk, HealthStatus.HEALTHY, latency, "simulator")
    if instance.provider == "builtin":
        from gateway.router_models.local import warm_up

        try:
            await asyncio.to_thread(warm_up)
        except Exception as exc:
            return ProbeResult(instance.pk, HealthStatus.UNAVAILABLE, None, f"router model failed to load: {type(exc).__name__}")
        return ProbeResult(instance.pk, HealthStatus.HEALTHY, (time.perf_counter() - started) * 1000, "in process")
    if instance.provider != "openai":
        return ProbeResult(instance.pk, HealthStatus.UNKNOWN, None, f"no probe for provider {instance.provider}")
    try:
        response = await http.request("GET", instance.base_url + "/models", headers=client_headers(instance),
                                      connect_timeout=instance.connect_timeout,
                                      first_byte_timeout=instance.connect_timeout + 5)
        await response.read(5)
        status = response.status
    except TimeoutError:
        return ProbeResult(instance.pk, HealthStatus.UNAVAILABLE, None, "probe timed out")
    except http.ClientError as exc:
        return ProbeResult(instance.pk, HealthStatus.UNAVAILABLE, None, f"connection failed: {exc}")
    latency = (time.perf_counter() - started) * 1000
    if status in (401, 403):
        return ProbeResult(instance.pk, HealthStatus.UNAVAILABLE, latency, f"credential refused (HTTP {status})")
    if status >= 500:
        return ProbeResult(instance.pk, HealthStatus.UNAVAILABLE, latency, f"HTTP {status}")
    if status >= 400:
        return ProbeResult(instance.pk, HealthStatus.DEGRADED, latency, f"GET /models answered HTTP {status}")
    if latency > SLOW_MS:
        return ProbeResult(instance.pk, HealthStatus.DEGRADED, latency, f"slow: {latency:.0f} ms")
    return ProbeResult(instance.pk, HealthStatus.HEALTHY, latency, "GET /models answered 200")


def _enabled_instances() -> list[InstanceSpec]:
    return [instance_spec(i) for i in Instance.objects.filter(enabled=True)]


def _save(results: list[ProbeResult]) -> None:
    now = timezone.now()
    for result in results:
        InstanceHealth.objects.update_or_create(
            instance_id=result.pk,
            defaults={"status": result.status, "latency_ms": result.latency_ms, "detail": result.detail[:300], "checked_at": now},
        )


async def probe_all(*, cooldown_seconds: float | None = None) -> list[ProbeResult]:
    """Probe every enabled instance at once, save the results, and bench the unavailable ones."""
    from gateway.hotpath.runtime import mark_unavailable

    instances = await in_thread(_enabled_instances)
    results = await asyncio.gather(*(probe_instance(i) for i in instances))
    await in_thread(_save, list(results))
    length = cooldown_seconds if cooldown_seconds is not None else settings.GATEWAY_PROBE_SECONDS
    for result in results:
        if result.status == HealthStatus.UNAVAILABLE:
            mark_unavailable(result.pk, seconds=length)
    return list(results)

