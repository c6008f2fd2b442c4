"""Prometheus metrics for the gateway, served at /metrics.

Counted where the usage event is made: every /v1 answer leaves exactly one usage record
(gateway/hotpath/proxy.py for the requests it routes, gateway/hotpath/outcomes.py for the
rest), and the recorder hands each record to `observe()`. So N requests are N counts, and
the metrics and the usage history agree.

Across worker processes: under the ASGI entry point every worker writes its numbers to
prometheus-client's multiprocess files (config/metrics_dir.py sets the directory up) and
`/metrics`, whichever worker answers, sums them: counters and histograms are totals of the
whole server. Per-worker numbers (config version, seconds since the last config refresh,
usage-writer backlog and drops) carry a `pid` label. Instance health comes from the shared
health state (Redis) and probe results from the database, read at scrape time.

Labels are bounded: balancer, route and instance names come from the configuration (a
client-given model name that matches no balancer is counted under `balancer=""`); the
decision is its *kind* (`classified`, `default`, `weighted`…), never free text; errors are
the gateway's own codes. Never a prompt, a key or a request id.

/metrics is refused (OpenAI-shaped 401/403) unless the caller sends
`Authorization: Bearer $GATEWAY_METRICS_TOKEN` or comes from GATEWAY_METRICS_ALLOW_NETWORKS
(loopback only when neither is set).
"""

from __future__ import annotations

import asyncio
import bisect
import hmac
import ipaddress
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gateway.engine.types import DIRECT_ROUTE
from gateway.hotpath import errors
from gateway.hotpath.usage import UsageRecord, recorder

logger = logging.getLogger(__name__)

MULTIPROCESS = bool(
    os.environ.get("PROMETHEUS_MULTIPROC_DIR")
)  # read once: prometheus_client did too

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_DECISION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
_WHERE = ("balancer", "route", "instance")

REQUESTS = Counter(
    "gateway_requests",
    "Requests at the /v1 door, one per usage event.",
    ["endpoint", "balancer", "route", "instance", "status", "decision"],
)
LATENCY = Histogram(
    "gateway_request_duration_seconds",
    "Time from the request's arrival to its usage event.",
    ["endpoint", *_WHERE],
    buckets=_LATENCY_BUCKETS,
)
TTFB = Histogram(
    "gateway_time_to_first_token_seconds",
    "Time from the request's arrival to the upstream's first byte (first event of a stream).",
    [*_WHERE, "stream"],
    buckets=_LATENCY_BUCKETS,
)
TOKENS = Counter("gateway_tokens", "Tokens, as the usage event counts them.", [*_WHERE, "type"])
COST = Counter(
    "gateway_cost_usd", "Cost in US dollars, as the usage event prices it.", list(_WHERE)
)
ATTEMPTS = Counter(
    "gateway_upstream_attempts",
    "Calls to instances, by outcome (ok or the failure kind).",
    [*_WHERE, "outcome"],
)
FALLBACKS = Counter(
    "gateway_fallbacks",
    "Attempts after a request's first (failover to the next instance).",
    ["balancer"],
)
RATE_LIMITED = Counter(
    "gateway_rate_limited_requests",
    "Requests refused with 429 by a key's rate limit.",
    ["balancer"],
)
REJECTED = Counter(
    "gateway_rejected_requests",
    "Requests answered with an error before any instance was called.",
    ["endpoint", "status", "error"],
)
DECISION = Histogram(
    "gateway_router_decision_seconds",
    "Time the router took to choose the first route.",
    ["balancer", "decision"],
    buckets=_DECISION_BUCKETS,
)

_mode: dict[str, Any] = {"multiprocess_mode": "liveall"} if MULTIPROCESS else {}
WORKER_CONFIG_VERSION = Gauge(
    "gateway_worker_config_version", "The config version this worker routes from.", **_mode
)
WORKER_REFRESH_AGE = Gauge(
    "gateway_worker_config_refresh_age_seconds",
    "Seconds since this worker last read the config version successfully.",
    **_mode,
)
WORKER_USAGE_BACKLOG = Gauge(
    "gateway_worker_usage_backlog", "Usage events waiting for the writer.", **_mode
)
WORKER_USAGE_DROPPED = Gauge(
    "gateway_worker_usage_dropped", "Usage events this worker dropped (buffer full).", **_mode
)
WORKER_USAGE_SET_ASIDE = Gauge(
    "gateway_worker_usage_set_aside",
    "Usage events the database refused for their values (dead letters).",
    **_mode,
)

_DECISION_KINDS = frozenset(
    {
        "classified",
        "default",
        "override",
        "classifier",
        "ordered",
        "weighted",
        "auto",
        "direct",
        "no_enabled_route",
    }
)
_SELF = (
    REQUESTS,
    LATENCY,
    TTFB,
    TOKENS,
    COST,
    ATTEMPTS,
    FALLBACKS,
    RATE_LIMITED,
    REJECTED,
    DECISION,
)


def decision_kind(reason: str) -> str:
    """`default:no_match` → `default`, `auto:cost` → `auto`; anything unexpected → `other`."""
    kind = reason.partition(":")[0]
    return kind if kind in _DECISION_KINDS else ("" if not reason else "other")


# Counts wait here (plain dicts, on the event loop) and are written to the metric values at
# the worker's next config poll tick, at a scrape and at shutdown: one write per label set
# per tick instead of ~9 per request (each a lock and a write to the multiprocess file).
_counts: dict[tuple[Any, tuple[str, ...]], float] = {}
_histograms: dict[tuple[Any, tuple[str, ...]], list[float]] = {}  # bucket counts, then the sum
_lock = threading.Lock()  # observe() runs on the event loop; a flush may come from another thread
_BOUNDS = {
    LATENCY: (*_LATENCY_BUCKETS, math.inf),
    TTFB: (*_LATENCY_BUCKETS, math.inf),
    DECISION: (*_DECISION_BUCKETS, math.inf),
}


def _count(metric: Any, labels: tuple[str, ...], amount: float = 1.0) -> None:
    key = (metric, labels)
    _counts[key] = _counts.get(key, 0.0) + amount


def _observe(metric: Any, labels: tuple[str, ...], value: float) -> None:
    key = (metric, labels)
    slots = _histograms.get(key)
    bounds = _BOUNDS[metric]
    if slots is None:
        slots = _histograms[key] = [0.0] * (len(bounds) + 1)
    slots[bisect.bisect_left(bounds, value)] += 1  # Prometheus buckets are upper bounds, inclusive
    slots[-1] += value


def flush() -> None:
    """Write the waiting counts to the metric values (prometheus-client's files in multiprocess
    mode)."""
    global _counts, _histograms
    with _lock:
        counts, histograms = _counts, _histograms
        _counts, _histograms = {}, {}
    for (metric, labels), amount in counts.items():
        metric.labels(*labels).inc(amount)
    for (metric, labels), slots in histograms.items():
        child = metric.labels(*labels)
        # Histogram.observe() adds one value; this adds many at once to the same bucket and sum
        # values.
        for i, n in enumerate(slots[:-1]):
            if n:
                child._buckets[i].inc(n)
        child._sum.inc(slots[-1])


def _instance_label(route: str, instance: str) -> str:
    """A direct-model call's instance (`provider:model`, the client's choice of name: unbounded)
    is labelled with its provider alone (gateway/hotpath/direct.py)."""
    if route == DIRECT_ROUTE:
        return instance.partition(":")[0] + ":*"
    return instance


def observe(record: UsageRecord) -> None:
    """Count one usage event (called by the recorder, on the request's path: no I/O)."""
    balancer = record.balancer_label
    where = (balancer, record.route, _instance_label(record.route, record.instance))
    status = str(record.status_code)
    with _lock:
        _count(REQUESTS, (record.endpoint, *where, status, decision_kind(record.decision_reason)))
        _observe(LATENCY, (record.endpoint, *where), record.latency_ms / 1000)
        if record.ttfb_ms is not None:
            _observe(TTFB, (*where, "true" if record.stream else "false"), record.ttfb_ms / 1000)
        if record.prompt_tokens:
            _count(TOKENS, (*where, "input"), record.prompt_tokens)
        if record.completion_tokens:
            _count(TOKENS, (*where, "output"), record.completion_tokens)
        if record.cost_usd:
            _count(COST, where, float(record.cost_usd))
        for entry in record.attempt_log:
            _count(
                ATTEMPTS,
                (
                    balancer,
                    str(entry.get("route") or ""),
                    _instance_label(
                        str(entry.get("route") or ""), str(entry.get("instance") or "")
                    ),
                    str(entry.get("outcome") or ""),
                ),
            )
        if record.attempts > 1:
            _count(FALLBACKS, (balancer,), record.attempts - 1)
        if record.status_code == 429:
            _count(RATE_LIMITED, (balancer,))
        if record.status_code >= 400 and not record.attempts:
            _count(REJECTED, (record.endpoint, status, record.error_type[:60]))
        if record.classifier_ms is not None:
            _observe(
                DECISION,
                (balancer, decision_kind(record.decision_reason)),
                record.classifier_ms / 1000,
            )


def update_worker_gauges() -> None:
    """This worker's own numbers (the config poller's tick, and the worker answering a scrape)."""
    from gateway.hotpath.snapshot import holder

    config = holder.peek()
    if config is not None:
        WORKER_CONFIG_VERSION.set(config.version)
    refreshed_at = holder.refreshed_at
    if refreshed_at is not None:
        WORKER_REFRESH_AGE.set(max(0.0, time.monotonic() - refreshed_at))
    WORKER_USAGE_BACKLOG.set(recorder.pending)
    WORKER_USAGE_DROPPED.set(recorder.dropped)
    WORKER_USAGE_SET_ASIDE.set(recorder.set_aside)


async def _tick() -> None:
    flush()
    update_worker_gauges()


class InstanceCollector:
    """Instance health (shared through Redis) and the last probe (database), read at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from gateway.hotpath import runtime
        from gateway.hotpath.snapshot import holder

        config = holder.peek()
        if config is None:
            return
        instances = {pk: spec.instance_id for pk, spec in config.instances.items()}
        healthy = GaugeMetricFamily(
            "gateway_instance_healthy",
            "1 when the instance's circuit is closed.",
            labels=["instance"],
        )
        state = GaugeMetricFamily(
            "gateway_instance_circuit_state",
            "1 for the circuit's current state.",
            labels=["instance", "state"],
        )
        cooldown = GaugeMetricFamily(
            "gateway_instance_cooldown_seconds",
            "Seconds left of the instance's cooldown.",
            labels=["instance"],
        )
        trips = GaugeMetricFamily(
            "gateway_instance_trips",
            "Trips since the instance last recovered.",
            labels=["instance"],
        )
        now = time.time()
        for pk, view in runtime.health_snapshot(list(instances)).items():
            name = instances[pk]
            healthy.add_metric([name], 1.0 if view.status == "healthy" else 0.0)
            state.add_metric([name, view.status], 1.0)
            left = (view.cooldown_until - now) if view.cooldown_until is not None else 0.0
            cooldown.add_metric([name], max(0.0, left))
            trips.add_metric([name], float(view.trips))
        yield from (healthy, state, cooldown, trips)
        yield from _probe_families(instances)


def _probe_families(instances: dict[int, str]) -> Iterator[GaugeMetricFamily]:
    from django.db import close_old_connections

    from gateway.models import InstanceHealth

    up = GaugeMetricFamily(
        "gateway_instance_probe_up",
        "1 when the last active probe found the instance up.",
        labels=["instance", "status"],
    )
    latency = GaugeMetricFamily(
        "gateway_instance_probe_latency_seconds", "The last probe's latency.", labels=["instance"]
    )
    age = GaugeMetricFamily(
        "gateway_instance_probe_age_seconds", "Seconds since the last probe.", labels=["instance"]
    )
    close_old_connections()
    try:
        rows = list(
            InstanceHealth.objects.filter(instance_id__in=list(instances)).values_list(
                "instance_id", "status", "latency_ms", "checked_at"
            )
        )
    except Exception as exc:  # the database is down: the rest of the scrape still answers
        logger.debug("probe results unavailable for /metrics: %s", exc)
        return
    now = time.time()
    for pk, status, latency_ms, checked_at in rows:
        name = instances[pk]
        up.add_metric([name, status], 1.0 if status in ("healthy", "degraded") else 0.0)
        if latency_ms is not None:
            latency.add_metric([name], latency_ms / 1000)
        age.add_metric([name], max(0.0, now - checked_at.timestamp()))
    yield from (up, latency, age)


def _forget_dead_workers(directory: str) -> None:
    """Per-worker gauges of a worker that exited (and was restarted) leave the scrape."""
    pids = set()
    for name in os.listdir(directory):
        if name.startswith("gauge_live") and name.endswith(".db"):
            digits = name.rsplit("_", 1)[-1][:-3]
            if digits.isdigit():
                pids.add(int(digits))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, directory)
        except PermissionError:
            pass


def render() -> bytes:
    """The exposition text (any thread: reads files and the database)."""
    update_worker_gauges()
    if MULTIPROCESS:
        directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        _forget_dead_workers(directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
    else:
        registry = CollectorRegistry()
        for metric in (
            *_SELF,
            WORKER_CONFIG_VERSION,
            WORKER_REFRESH_AGE,
            WORKER_USAGE_BACKLOG,
            WORKER_USAGE_DROPPED,
            WORKER_USAGE_SET_ASIDE,
        ):
            registry.register(metric)
    registry.register(InstanceCollector())
    return generate_latest(registry)


def _networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    given = settings.GATEWAY_METRICS_ALLOW_NETWORKS
    if not given and not settings.GATEWAY_METRICS_TOKEN:
        given = ["127.0.0.0/8", "::1/128"]
    return [ipaddress.ip_network(net, strict=False) for net in given]


def allowed(request: HttpRequest) -> errors.GatewayError | None:
    """None when the caller may read /metrics; else the error to answer."""
    token = settings.GATEWAY_METRICS_TOKEN
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "")
        if given.startswith("Bearer ") and hmac.compare_digest(
            given[7:].strip().encode(), token.encode()
        ):
            return None
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "")
    except ValueError:
        address = None
    if address is not None and any(address in net for net in _networks()):
        return None
    if token:
        return errors.GatewayError(
            401,
            "The metrics need the bearer token set in GATEWAY_METRICS_TOKEN.",
            type="invalid_request_error",
            code="invalid_metrics_token",
        )
    return errors.GatewayError(
        403,
        "Metrics are not served to this address (GATEWAY_METRICS_ALLOW_NETWORKS).",
        type="invalid_request_error",
        code="metrics_forbidden",
    )


async def metrics_view(request: HttpRequest) -> HttpResponse:
    if not settings.GATEWAY_METRICS:
        return errors.GatewayError(
            404, "Metrics are off (GATEWAY_METRICS=0).", code="not_found"
        ).response()
    refusal = allowed(request)
    if refusal is not None:
        return refusal.response()
    flush()  # this worker's counts; the others' wait at most one config poll interval
    body = await asyncio.to_thread(render)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def install() -> None:
    """Count every usage event and keep this worker's gauges fresh (gateway.apps)."""
    from gateway.hotpath.snapshot import holder

    if not settings.GATEWAY_METRICS:
        return
    if observe not in recorder.observers:
        recorder.observers.append(observe)
    if _tick not in holder.tick_hooks:
        holder.tick_hooks.append(_tick)
