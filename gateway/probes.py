"""Active health: a cheap probe of every enabled instance, on a schedule.

`GET {base_url}/models` for OpenAI-compatible servers and for Anthropic (with
Anthropic's own headers), each provider's own free request where it differs
(targetgroups.providers: OpenRouter's `/key`, Azure's `/openai/models?api-version=`,
Perplexity's refused empty chat request), the knobs for simulator instances, a load of the
vectors for the built-in router model: never a completion, so a probe costs
nothing. Each probe's verdict feeds the instance's state with hysteresis
(gateway/engine/probing.py: GATEWAY_PROBE_DOWN_AFTER failures in a row to go
down, GATEWAY_PROBE_UP_AFTER passes in a row to come back, degraded in between),
saved per instance (InstanceHealth) with a short history (ProbeRecord, the newest
GATEWAY_PROBE_HISTORY per instance) for the pages. An unavailable instance is put
in cooldown until the next probe, through the same health tracker (and Redis
hash) as passive health, so the gateway stops sending it traffic before a client
request has to fail.

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
from django.db import transaction
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from gateway.db import in_thread
from gateway.engine.probing import ProbePolicy, ProbeState, next_probe_state
from gateway.engine.types import InstanceSpec
from gateway.hotpath.snapshot import instance_spec, provider_spec
from gateway.models import HealthStatus, InstanceHealth, ProbeRecord
from gateway.upstream import anthropic, http, openai_compat
from targetgroups.models import Instance, ProviderCredential
from targetgroups.providers import PROVIDERS

logger = logging.getLogger(__name__)

SLOW_MS = 2000.0  # a probe slower than this marks the instance degraded


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's own verdict (`status`); `state` is the instance's, after hysteresis."""

    pk: int
    status: str
    latency_ms: float | None
    detail: str
    state: str = HealthStatus.UNKNOWN


async def probe_instance(instance: InstanceSpec) -> ProbeResult:
    started = time.perf_counter()
    if instance.provider == "simulator":
        options = instance.options
        if options.get("down"):
            return ProbeResult(
                instance.pk, HealthStatus.UNAVAILABLE, None, "simulator switched down"
            )
        latency = float(options.get("latency_ms", 0))
        if float(options.get("error_rate", 0)) >= 0.5:
            return ProbeResult(
                instance.pk,
                HealthStatus.DEGRADED,
                latency,
                f"simulated error rate {options['error_rate']}",
            )
        return ProbeResult(instance.pk, HealthStatus.HEALTHY, latency, "simulator")
    if instance.provider == "builtin":
        from gateway.router_models.local import warm_up

        try:
            await asyncio.to_thread(warm_up)
        except Exception as exc:
            return ProbeResult(
                instance.pk,
                HealthStatus.UNAVAILABLE,
                None,
                f"router model failed to load: {type(exc).__name__}",
            )
        return ProbeResult(
            instance.pk, HealthStatus.HEALTHY, (time.perf_counter() - started) * 1000, "in process"
        )
    facts = PROVIDERS.get(instance.provider)
    if facts is None:
        return ProbeResult(
            instance.pk, HealthStatus.UNKNOWN, None, f"no probe for provider {instance.provider}"
        )
    headers = (
        anthropic.client_headers(instance)
        if facts.wire == "anthropic"
        else openai_compat.client_headers(instance)
    )
    body = b""
    if facts.probe_method == "POST":  # refused before any generation: never billed
        headers = {**headers, "Content-Type": "application/json"}
        body = b'{"model":"","messages":[]}'
    what = f"{facts.probe_method} {facts.probe_path}"
    try:
        response = await http.request(
            facts.probe_method,
            openai_compat.probe_url(instance),
            headers=headers,
            body=body,
            connect_timeout=instance.connect_timeout,
            first_byte_timeout=instance.connect_timeout + 5,
        )
        data = await response.read(5)
        status = response.status
        if status >= 400 and facts.wire != "anthropic":
            # Google refuses a key with a 400 (API_KEY_INVALID): read as the 401 it means.
            _, status = openai_compat.openai_error(data, status)
    except TimeoutError:
        return ProbeResult(instance.pk, HealthStatus.UNAVAILABLE, None, "probe timed out")
    except http.ClientError as exc:
        return ProbeResult(instance.pk, HealthStatus.UNAVAILABLE, None, f"connection failed: {exc}")
    latency = (time.perf_counter() - started) * 1000
    if status in (401, 403):
        return ProbeResult(
            instance.pk, HealthStatus.UNAVAILABLE, latency, f"credential refused (HTTP {status})"
        )
    if status >= 500:
        return ProbeResult(instance.pk, HealthStatus.UNAVAILABLE, latency, f"HTTP {status}")
    if status not in facts.probe_ok:
        return ProbeResult(
            instance.pk, HealthStatus.DEGRADED, latency, f"{what} answered HTTP {status}"
        )
    if latency > SLOW_MS:
        return ProbeResult(instance.pk, HealthStatus.DEGRADED, latency, f"slow: {latency:.0f} ms")
    return ProbeResult(instance.pk, HealthStatus.HEALTHY, latency, f"{what} answered {status}")


async def probe_credential(credential: ProviderCredential) -> ProbeResult:
    """The provider's probe with a stored credential (its page's Check button, the API's
    `check`): what a direct-model call would meet, never billed. Not recorded: a credential has
    no health row; its models' health is passive (gateway/hotpath/direct.py)."""
    from gateway.hotpath.direct import direct_instance

    return await probe_instance(direct_instance(provider_spec(credential), ""))


def _enabled_instances() -> list[InstanceSpec]:
    return [instance_spec(i) for i in Instance.objects.filter(enabled=True)]


def probe_policy() -> ProbePolicy:
    return ProbePolicy(
        down_after=settings.GATEWAY_PROBE_DOWN_AFTER, up_after=settings.GATEWAY_PROBE_UP_AFTER
    )


def record_probe_results(results: list[ProbeResult]) -> list[ProbeResult]:
    """Move each instance's state on by its probe's verdict, record the probe, prune the history."""
    now = timezone.now()
    policy = probe_policy()
    saved: list[ProbeResult] = []
    states: list[InstanceHealth] = []
    records: list[ProbeRecord] = []
    with transaction.atomic():
        # Locked: two probe runs at once (a slow one and the next beat) must not both count a probe.
        rows = {
            h.instance_id: h
            for h in InstanceHealth.objects.select_for_update().filter(
                instance_id__in=[r.pk for r in results]
            )
        }
        for result in results:
            row = rows.get(result.pk)
            previous = (
                ProbeState()
                if row is None
                else ProbeState(row.status, row.consecutive_failures, row.consecutive_successes)
            )
            state = next_probe_state(previous, result.status, policy)
            detail = result.detail[:300]
            states.append(
                InstanceHealth(
                    instance_id=result.pk,
                    status=state.status,
                    latency_ms=result.latency_ms,
                    detail=detail,
                    checked_at=now,
                    consecutive_failures=state.failures,
                    consecutive_successes=state.successes,
                )
            )
            records.append(
                ProbeRecord(
                    instance_id=result.pk,
                    checked_at=now,
                    verdict=result.status,
                    status=state.status,
                    latency_ms=result.latency_ms,
                    detail=detail,
                )
            )
            saved.append(
                ProbeResult(
                    result.pk, result.status, result.latency_ms, result.detail, state.status
                )
            )
        InstanceHealth.objects.bulk_create(  # an upsert: an instance's first probe creates its row
            states,
            update_conflicts=True,
            unique_fields=["instance"],
            update_fields=[
                "status",
                "latency_ms",
                "detail",
                "checked_at",
                "consecutive_failures",
                "consecutive_successes",
            ],
        )
        ProbeRecord.objects.bulk_create(records)
        _prune([r.pk for r in results])
    return saved


def _prune(pks: list[int]) -> None:
    """Keep the newest GATEWAY_PROBE_HISTORY records of each instance."""
    ranked = ProbeRecord.objects.filter(instance_id__in=pks).annotate(
        newest=Window(RowNumber(), partition_by=F("instance_id"), order_by=F("id").desc())
    )
    old = list(
        ranked.filter(newest__gt=settings.GATEWAY_PROBE_HISTORY).values_list("id", flat=True)
    )
    if old:
        ProbeRecord.objects.filter(id__in=old).delete()


async def probe_all(*, cooldown_seconds: float | None = None) -> list[ProbeResult]:
    """Probe every enabled instance at once, save the results, and bench the unavailable ones.

    Returns each probe's verdict with the instance's state after it."""
    from gateway.hotpath.runtime import mark_unavailable

    instances = await in_thread(_enabled_instances)
    verdicts = await asyncio.gather(*(probe_instance(i) for i in instances))
    results = await in_thread(record_probe_results, list(verdicts))
    length = cooldown_seconds if cooldown_seconds is not None else settings.GATEWAY_PROBE_SECONDS
    for result in results:
        if result.state == HealthStatus.UNAVAILABLE:
            mark_unavailable(result.pk, seconds=length)
    return results
