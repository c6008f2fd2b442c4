"""The compiled, immutable routing snapshot the gateway routes from.

Built from the database by gateway.hotpath.snapshot (Django glue) whenever the config
version changes; the hot path only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

# The one route of a direct-model call's implicit balancer (gateway/hotpath/direct.py), and its
# routing mode.
DIRECT_ROUTE = "direct"


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    pk: int
    instance_id: str
    display_name: str
    provider: str  # openai | anthropic | simulator | builtin
    base_url: str
    model: str
    api_key: str = field(repr=False)
    workload_kind: str  # chat | embeddings
    input_price_per_million: float
    output_price_per_million: float
    quality_tier: int  # 1..5
    connect_timeout: float
    first_byte_timeout: float
    request_timeout: float
    enabled: bool
    options: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    strengths: tuple[str, ...] = ()  # code, reasoning, multilingual... (auto's strength factor)
    # Capabilities (the operator's, else the model catalogue's); None: unknown, never a refusal.
    context_window: int | None = None
    max_output_tokens: int | None = None
    supports_tools: bool | None = None
    supports_vision: bool | None = None
    supports_json_mode: bool | None = None
    supports_streaming: bool | None = None
    cached_input_price_per_million: float | None = None
    pricing: str = "per_token"  # per_token | capacity (reserved, paid by the hour)
    capacity_unit: str = "concurrent_requests"  # concurrent_requests | tokens_per_second
    capacity: int = 0  # what the reserved hour buys, in capacity_unit
    # Seconds to first byte after which the next target is tried when the route sets no
    # threshold of its own (no hedging: that is a route's choice).
    latency_threshold: float | None = None

    @property
    def reserved(self) -> bool:
        """Priced as reserved capacity: its hour is paid whether it serves or not."""
        return self.pricing == "capacity"


@dataclass(frozen=True, slots=True)
class MemberSpec:
    instance: InstanceSpec
    weight: int
    priority: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A target group, or one instance treated as a group of one (name "instance:<id>")."""

    name: str
    selection_policy: str
    enabled: bool
    members: tuple[MemberSpec, ...]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    intent: str
    examples: tuple[str, ...]
    group: GroupSpec
    priority: int
    weight: int
    is_default: bool
    enabled: bool
    # Seconds to the first byte after which the planner's caller tries the next target (None: no
    # threshold); `hedge`: the slow attempt keeps running and races the next one.
    latency_threshold: float | None = None
    hedge: bool = False


class Searchable(Protocol):
    """A compiled RE2 pattern (regex and keywords rules: see balancers.rule_syntax)."""

    def search(self, text: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A content rule (see gateway.engine.rules), its parameters compiled."""

    name: str
    kind: str
    route: str  # the route's name
    enabled: bool = True
    pattern: Searchable | None = field(default=None, compare=False)  # regex, keywords
    text: str = ""  # the parameter as the operator wrote it (pattern, keywords), for /v1/explain
    metadata_key: str = ""
    value: str = ""  # metadata value, user, tag, API key name, response_format type
    min_tokens: int | None = None
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """A balancer's response cache (gateway.hotpath.cache): exact or semantic, never "off" here."""

    mode: str  # exact | semantic
    ttl_seconds: int
    similarity_threshold: float
    shared_across_keys: bool


@dataclass(frozen=True, slots=True)
class BalancerSpec:
    pk: int
    name: str
    serving_name: str
    workload_kind: str
    routing_mode: str  # intent_classifier | ordered | weighted | auto | direct (direct.py)
    auto_preference: str  # balanced | quality | speed | cost
    router_model: InstanceSpec | None
    classifier_timeout: float
    confidence_threshold: float
    attempt_budget: int
    request_timeout: float
    enabled: bool
    routes: tuple[RouteSpec, ...]  # every route, sorted by (priority, name)
    rules: tuple[RuleSpec, ...] = ()  # content rules, sorted by (order, name)
    cache: CachePolicy | None = None  # None: the response cache is off
    auto_free_only: bool = False  # auto-free: zero-priced instances only
    # auto: model names or instance ids never chosen (the operator's exclusions)
    auto_exclusions: frozenset[str] = frozenset()
    log_prompts: bool = False  # keep the last user message with the usage event (corrections)

    @property
    def default_route(self) -> RouteSpec:
        for route in self.routes:
            if route.is_default:
                return route
        return self.routes[0]

    def route_named(self, name: str) -> RouteSpec | None:
        for route in self.routes:
            if route.name == name:
                return route
        return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    balancers: MappingProxyType[str, BalancerSpec]  # by serving name
    # The implicit auto balancers of the goal names (auto, auto-cheap...), by (workload kind, goal
    # name);
    # pk 0, one route "auto" over every enabled instance of the kind.
    goals: MappingProxyType[tuple[str, str], BalancerSpec] = field(
        default_factory=lambda: MappingProxyType({})
    )
