"""Compile the configuration into an immutable Snapshot, and keep each process's copy fresh.

The hot path reads `current()` — a plain attribute read, no database query. A
background task per event loop polls the config version (Redis when configured,
else the database) every GATEWAY_CONFIG_POLL_SECONDS and swaps in a new snapshot
when it changed. With Redis, a second task per event loop subscribes to the
channel that every configuration write publishes the new version on
(config_version.push_channel) and wakes the poller at once: the change reaches
every worker without waiting for a tick. The poll stays the fallback: while
Redis is down or the subscription is lost, changes arrive on the next tick from
the database, and a worker keeps serving throughout. Requests are served from
the previous snapshot while the next one is built (in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from django.conf import settings

from balancers.models import Balancer, ContentRule
from balancers.rule_syntax import RuleSyntaxError, compile_keywords, compile_pattern, parse_keywords
from gateway.db import in_thread
from gateway.engine.auto import FREE_GOAL, GOALS
from gateway.engine.budgets import BudgetSpec, usd_to_units
from gateway.engine.types import (
    BalancerSpec,
    CachePolicy,
    GroupSpec,
    InstanceSpec,
    MemberSpec,
    RouteSpec,
    RuleSpec,
    Snapshot,
)
from gateway.hotpath.config_version import (
    REDIS_KEY,
    SET_IF_GREATER,
    config_version_from_db,
    push_channel,
)
from gateway.hotpath.decision import fit_local_routers
from gateway.models import ApiKey, Budget
from gateway.outages import OutageLog
from targetgroups.models import Instance, ProviderCredential
from targetgroups.providers import PROVIDERS

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeySpec:
    pk: int
    name: str
    allowed: frozenset[str] | None  # serving names; None: every balancer
    rate_limit_per_minute: int | None
    allow_route_override: bool = False  # may send X-Balancer-Route
    # The instances this key may reach through the goal names (auto, auto-cheap...): those of the
    # balancers it is limited to; None: every enabled instance (a key not limited to balancers).
    allowed_instances: frozenset[int] | None = None
    team_pk: int | None = None  # the team its spend counts to (usage events, budgets)
    use_case: str = ""  # its requests' use-case tag unless a request names one
    # May name any model of a provider with a credential (model="claude-sonnet-4-5"):
    # gateway/hotpath/direct.py. Off by default.
    allow_direct_models: bool = False


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """A provider credential, compiled: what a direct-model call (gateway/hotpath/direct.py)
    needs."""

    provider: str  # a targetgroups.providers.PROVIDERS code
    base_url: str  # the credential's, else the provider's default; no trailing slash
    api_key: str = field(repr=False)
    api_version: str = ""  # Azure OpenAI


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    routing: Snapshot
    keys: MappingProxyType[str, KeySpec]  # by key hash
    instances: MappingProxyType[int, InstanceSpec]  # every instance, by pk
    # The enabled budgets by (scope, subject pk): gateway.engine.budgets.applicable reads them.
    budgets: MappingProxyType[tuple[str, int], tuple[BudgetSpec, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # The enabled provider credentials, by provider code (direct-model calls).
    providers: MappingProxyType[str, ProviderSpec] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every upstream key the snapshot holds besides the instances' (for the scrubber)."""
        return tuple(p.api_key for p in self.providers.values() if p.api_key)

    @property
    def version(self) -> int:
        return self.routing.version


def instance_spec(instance: Instance) -> InstanceSpec:
    facts = PROVIDERS.get(instance.provider)
    # A blank base URL means the provider's own (targetgroups.providers): Groq's, Mistral's...
    # ("openai" and "anthropic" instances always name theirs: Instance.clean).
    base_url = instance.base_url or (facts.base_url if facts is not None else "")
    caps = instance.capabilities()  # the operator's values, else the model catalogue's
    cached = caps.cached_input_price_per_million
    return InstanceSpec(
        pk=instance.pk,
        instance_id=instance.instance_id,
        display_name=instance.display_name or instance.instance_id,
        provider=instance.provider,
        base_url=base_url.rstrip("/"),
        model=instance.model,
        api_key=instance.api_key,
        workload_kind=instance.workload_kind,
        input_price_per_million=float(instance.input_price_per_million),
        output_price_per_million=float(instance.output_price_per_million),
        quality_tier=instance.quality_tier,
        connect_timeout=instance.connect_timeout,
        first_byte_timeout=instance.first_byte_timeout,
        request_timeout=instance.request_timeout,
        enabled=instance.enabled,
        options=MappingProxyType(dict(instance.options or {})),
        latency_threshold=instance.latency_threshold_ms / 1000
        if instance.latency_threshold_ms
        else None,
        strengths=caps.strengths,
        context_window=caps.context_window,
        max_output_tokens=caps.max_output_tokens,
        supports_tools=caps.supports_tools,
        supports_vision=caps.supports_vision,
        supports_json_mode=caps.supports_json_mode,
        supports_streaming=caps.supports_streaming,
        cached_input_price_per_million=None if cached is None else float(cached),
        pricing=instance.pricing,
        capacity_unit=instance.capacity_unit,
        capacity=instance.capacity,
    )


def rule_spec(rule: ContentRule, route_name: str) -> RuleSpec | None:
    """A content rule compiled (RE2 for patterns: see balancers.rule_syntax); None when it cannot
    be.

    Every entry point refuses a rule that does not compile; one that slipped past them (a
    database edit, a newer RE2 refusing an old pattern) is logged and left out, so it never
    fails the whole snapshot.
    """
    pattern = None
    try:
        if rule.kind == "regex":
            pattern = compile_pattern(rule.value)
        elif rule.kind == "keywords":
            pattern = compile_keywords(parse_keywords(rule.value))
    except RuleSyntaxError as exc:
        logger.error(
            "content rule %s of balancer %s left out: %s", rule.name, rule.balancer_id, exc
        )
        return None
    return RuleSpec(
        name=rule.name,
        kind=rule.kind,
        route=route_name,
        enabled=rule.enabled,
        pattern=pattern,
        text=rule.value if pattern is not None else "",
        metadata_key=rule.metadata_key,
        value=rule.value,
        min_tokens=rule.min_tokens,
        max_tokens=rule.max_tokens,
    )


def cache_policy(balancer: Balancer) -> CachePolicy | None:
    if balancer.cache_mode not in ("exact", "semantic"):
        return None
    return CachePolicy(
        mode=balancer.cache_mode,
        ttl_seconds=balancer.cache_ttl_seconds,
        similarity_threshold=balancer.cache_similarity_threshold,
        shared_across_keys=balancer.cache_shared_across_keys,
    )


def goal_balancers(instances: dict[int, InstanceSpec]) -> dict[tuple[str, str], BalancerSpec]:
    """The implicit auto balancers of the goal names, one per (workload kind, goal name).

    One route, "auto", over every enabled instance of the kind (by pk); the built-in
    router models serve no chat. pk 0: no Balancer row (usage events carry the goal name).
    Attempt budget and request timeout are a new balancer's defaults.
    """
    budget = Balancer._meta.get_field("attempt_budget").get_default()
    timeout = Balancer._meta.get_field("request_timeout").get_default()
    goals: dict[tuple[str, str], BalancerSpec] = {}
    for kind in ("chat", "embeddings"):
        members = tuple(
            MemberSpec(instance=spec, weight=100, priority=1, enabled=True)
            for pk, spec in sorted(instances.items())
            if spec.enabled and spec.workload_kind == kind and spec.provider != "builtin"
        )
        group = GroupSpec(
            name=f"auto:{kind}", selection_policy="round_robin", enabled=True, members=members
        )
        route = RouteSpec(
            name="auto",
            intent="Every enabled instance.",
            examples=(),
            group=group,
            priority=1,
            weight=100,
            is_default=True,
            enabled=True,
        )
        for goal, preference in GOALS.items():
            goals[(kind, goal)] = BalancerSpec(
                pk=0,
                name=goal,
                serving_name=goal,
                workload_kind=kind,
                routing_mode="auto",
                auto_preference=preference,
                router_model=None,
                classifier_timeout=0.0,
                confidence_threshold=0.0,
                attempt_budget=budget,
                request_timeout=timeout,
                enabled=True,
                routes=(route,),
                auto_free_only=goal == FREE_GOAL,
            )
    return goals


def _balancer_instances(balancer: BalancerSpec) -> set[int]:
    return {
        m.instance.pk
        for r in balancer.routes
        if r.enabled and r.group.enabled
        for m in r.group.members
    }


def build_config(version: int) -> GatewayConfig:
    """Read the whole configuration in a handful of queries."""
    instances = {i.pk: instance_spec(i) for i in Instance.objects.all()}
    balancers: dict[str, BalancerSpec] = {}
    queryset = Balancer.objects.prefetch_related(
        "routes__target_group__members", "routes__instance", "rules"
    )
    for balancer in queryset:
        routes = []
        for route in balancer.routes.all():
            tg = route.target_group
            if tg is not None:
                group = GroupSpec(
                    name=tg.name,
                    selection_policy=tg.selection_policy,
                    enabled=tg.enabled,
                    members=tuple(
                        MemberSpec(
                            instance=instances[m.instance_id],
                            weight=m.weight,
                            priority=m.priority,
                            enabled=m.enabled,
                        )
                        for m in sorted(tg.members.all(), key=lambda m: (m.priority, m.pk))
                    ),
                )
            else:
                assert route.instance_id is not None  # a route points at a group or an instance
                inst = instances[route.instance_id]
                group = GroupSpec(
                    name=f"instance:{inst.instance_id}",
                    selection_policy="round_robin",
                    enabled=True,
                    members=(MemberSpec(instance=inst, weight=100, priority=1, enabled=True),),
                )
            routes.append(
                RouteSpec(
                    name=route.name,
                    intent=route.intent,
                    examples=tuple(route.examples or ()),
                    group=group,
                    priority=route.priority,
                    weight=route.weight,
                    is_default=route.is_default,
                    enabled=route.enabled,
                    latency_threshold=route.latency_threshold_ms / 1000
                    if route.latency_threshold_ms
                    else None,
                    hedge=route.hedge,
                )
            )
        routes.sort(key=lambda r: (r.priority, r.name))
        if not routes:
            continue
        route_names = {route.pk: route.name for route in balancer.routes.all()}
        rules = [
            rule_spec(rule, route_names.get(rule.route_id, ""))
            for rule in sorted(balancer.rules.all(), key=lambda r: (r.order, r.name))
        ]
        balancers[balancer.serving_name] = BalancerSpec(
            pk=balancer.pk,
            name=balancer.name,
            serving_name=balancer.serving_name,
            workload_kind=balancer.workload_kind,
            routing_mode=balancer.routing_mode,
            auto_preference=balancer.auto_preference,
            router_model=instances.get(balancer.router_model_id)
            if balancer.router_model_id
            else None,
            classifier_timeout=balancer.classifier_timeout,
            confidence_threshold=balancer.confidence_threshold,
            attempt_budget=balancer.attempt_budget,
            request_timeout=balancer.request_timeout,
            enabled=balancer.enabled,
            routes=tuple(routes),
            rules=tuple(rule for rule in rules if rule is not None),
            cache=cache_policy(balancer),
            log_prompts=balancer.log_prompts,
            auto_exclusions=frozenset(
                name for name in balancer.auto_exclusions or () if isinstance(name, str)
            ),
        )
    names_by_pk = {b.pk: name for name, b in balancers.items()}
    keys: dict[str, KeySpec] = {}
    for key in ApiKey.objects.filter(enabled=True, revoked_at__isnull=True).prefetch_related(
        "balancers"
    ):
        allowed = [b.pk for b in key.balancers.all()]
        reachable: set[int] = set()
        for pk in allowed:
            if pk in names_by_pk and balancers[names_by_pk[pk]].enabled:
                reachable |= _balancer_instances(balancers[names_by_pk[pk]])
        keys[key.key_hash] = KeySpec(
            pk=key.pk,
            name=key.name,
            allowed=frozenset(names_by_pk[pk] for pk in allowed if pk in names_by_pk)
            if allowed
            else None,
            rate_limit_per_minute=key.rate_limit_per_minute,
            allow_route_override=key.allow_route_override,
            allowed_instances=frozenset(reachable) if allowed else None,
            team_pk=key.team_id,
            use_case=key.use_case,
            allow_direct_models=key.allow_direct_models,
        )
    # The built-in router models are fitted here, with the snapshot, never per request.
    fit_local_routers(balancers.values(), version)
    if any(b.cache is not None and b.cache.mode == "semantic" for b in balancers.values()):
        from gateway.hotpath.cache import warm_up

        warm_up()
    return GatewayConfig(
        routing=Snapshot(
            version=version,
            balancers=MappingProxyType(balancers),
            goals=MappingProxyType(goal_balancers(instances)),
        ),
        keys=MappingProxyType(keys),
        instances=MappingProxyType(instances),
        budgets=MappingProxyType(budget_specs()),
        providers=MappingProxyType(provider_specs()),
    )


def budget_spec(budget: Budget) -> BudgetSpec:
    limit = usd_to_units(budget.limit_usd)
    return BudgetSpec(
        pk=budget.pk,
        scope=budget.scope,
        subject_id=budget.subject_id,
        period=budget.period,
        limit_units=limit,
        warn_units=int(limit * budget.warn_share),
        action=budget.action,
        label=budget.subject_label,
    )


def budget_specs() -> dict[tuple[str, int], tuple[BudgetSpec, ...]]:
    found: dict[tuple[str, int], tuple[BudgetSpec, ...]] = {}
    for budget in Budget.objects.filter(enabled=True).select_related("team", "api_key", "balancer"):
        spec = budget_spec(budget)
        subject = (spec.scope, spec.subject_id)
        found[subject] = (*found.get(subject, ()), spec)
    return found


def provider_spec(credential: ProviderCredential) -> ProviderSpec:
    return ProviderSpec(
        provider=credential.provider,
        base_url=credential.effective_base_url,
        api_key=credential.api_key,
        api_version=credential.api_version,
    )


def provider_specs() -> dict[str, ProviderSpec]:
    """The enabled provider credentials, decrypted once per snapshot."""
    return {
        c.provider: provider_spec(c)
        for c in ProviderCredential.objects.filter(enabled=True)
        if c.provider in PROVIDERS
    }


_version_floor = 0  # the newest version this process read from the database while Redis was away


async def read_version() -> int | None:
    """The config version as the workers see it (Redis when configured, else the DB row)."""
    global _version_floor

    def from_db() -> Awaitable[int]:
        return in_thread(config_version_from_db)

    if not settings.REDIS_URL:
        return await from_db()
    from gateway.hotpath.redis_client import RedisUnavailable, call_async

    try:
        raw = await call_async(lambda client: client.get(REDIS_KEY))
        if raw is not None and int(raw) >= _version_floor:
            return int(raw)
        if raw is None:  # Redis restarted empty
            _version_floor = max(_version_floor, await from_db())
        # Redis is back, empty or behind a change read from the database meanwhile: raise the key.
        floor = _version_floor
        return int(
            await call_async(lambda client: client.eval(SET_IF_GREATER, 1, REDIS_KEY, floor))
        )
    except RedisUnavailable:  # the database row while Redis is away; the breaker logs the outage
        version = await from_db()
        _version_floor = max(_version_floor, version)
        return version


class ConfigHolder:
    """This process's current configuration, refreshed in the background."""

    def __init__(self) -> None:
        self._config: GatewayConfig | None = None
        self._seen_version: int | None = None
        self._pollers: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._polled_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._primed = False  # the tick hooks ran once after the first load
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        # Called on every poll tick, e.g. to share health state through Redis.
        self.tick_hooks: list[Callable[[], Awaitable[None]]] = []
        self.refresh_log = OutageLog("config refresh", logger)
        self.refreshed_at: float | None = (
            None  # time.monotonic() of the last config version read (/metrics)
        )
        self.pushed = False  # subscribed to the pushed config versions now

    async def get(self) -> GatewayConfig:
        config = self._config
        if config is None:
            # Concurrent first requests share one load (the others wait for it), not one each.
            config = await self.refresh(force=True, first=True)
            if not self._primed:
                self._primed = True
                await (
                    self._run_tick_hooks()
                )  # e.g. learn other workers' cooldowns before the first request
                # Everything loaded so far lives as long as the process: move it out of the
                # collector's sight, so full collections stop scanning it (they paused the
                # loop for 34-90 ms under load).
                gc.freeze()
        self._ensure_poller()
        return config

    def peek(self) -> GatewayConfig | None:
        return self._config

    async def refresh(self, *, force: bool = False, first: bool = False) -> GatewayConfig:
        """`first`: any loaded config will do (a first request that waited for another's load)."""
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        async with lock:
            if first and self._config is not None:
                return self._config
            version = await read_version()
            self.refreshed_at = time.monotonic()
            if not force and self._config is not None and version == self._seen_version:
                return self._config
            config = await in_thread(build_config, version or 0)
            self._config = config
            self._seen_version = version
            return config

    def _ensure_poller(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is self._polled_loop:  # the common case, without a weakref per request
            return
        self._polled_loop = loop
        if loop in self._pollers:
            return
        self._pollers.add(loop)
        wake = asyncio.Event()
        self._start(loop, self._poll(wake), "gateway-config-poller")
        if settings.REDIS_URL:
            self._start(loop, self._listen(wake), "gateway-config-push")

    def _start(
        self, loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, None], name: str
    ) -> None:
        task = loop.create_task(work, name=name)
        self._tasks.add(task)  # a reference, so the task is not collected while it runs
        task.add_done_callback(self._tasks.discard)

    async def _poll(self, wake: asyncio.Event) -> None:
        """Refresh every GATEWAY_CONFIG_POLL_SECONDS, or at once when a pushed change wakes it."""
        interval = settings.GATEWAY_CONFIG_POLL_SECONDS
        while True:
            _leave_if_cancelled()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await wake.wait()
            wake.clear()  # a message arriving during the refresh below wakes the next one
            try:
                await self.refresh()
            except Exception as exc:  # keep routing from the previous snapshot; retry next tick
                self.refresh_log.failed(exc)
            else:
                self.refresh_log.succeeded()
            await self._run_tick_hooks()  # e.g. /metrics' version gauge, right after a change

    async def _listen(self, wake: asyncio.Event) -> None:
        """Wake the poller on every version a configuration write publishes (Redis pub/sub).

        A subscription that cannot be made or breaks is retried every
        GATEWAY_REDIS_RETRY_SECONDS (never while the Redis breaker is open); meanwhile the
        poll alone brings changes. The breaker logs the outage; this logs at info only.
        """
        from gateway.hotpath.redis_client import breaker

        retry = settings.GATEWAY_REDIS_RETRY_SECONDS
        while True:
            _leave_if_cancelled()
            if not breaker().is_open:
                try:
                    await self._subscribed(wake)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self.pushed:
                        logger.info("config push lost (%s); polling until it is back", exc)
                    self.pushed = False
            await asyncio.sleep(retry)

    async def _subscribed(self, wake: asyncio.Event) -> None:
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=1.0,
            socket_keepalive=True,
            health_check_interval=10,
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(2.0):
                await pubsub.subscribe(push_channel(settings.REDIS_URL))
            self.pushed = True
            wake.set()  # a change published before the subscription: read the version now
            task = asyncio.current_task()
            while True:
                message = await pubsub.get_message(timeout=5.0)
                if task is not None and task.cancelling():
                    # redis-py's get_message can swallow a cancellation that lands in its read
                    # (it answers None): without this check a cancelled loop ran forever, and
                    # asyncio.run() hung at exit waiting for it (seen in the suite).
                    raise asyncio.CancelledError
                if message is not None and message.get("type") == "message":
                    wake.set()
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await pubsub.aclose()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await client.aclose()

    async def _run_tick_hooks(self) -> None:
        for hook in self.tick_hooks:
            try:
                await hook()
            except Exception:
                logger.warning(
                    "gateway tick hook %s failed", getattr(hook, "__name__", hook), exc_info=True
                )


def _leave_if_cancelled() -> None:
    """Raise CancelledError in a cancelled task whose cancellation an await swallowed (redis-py's
    reads can answer normally instead): its loop would otherwise run on, and asyncio.run() or a
    loop's shutdown would wait for it forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


holder = ConfigHolder()
