"""Auto mode: rank every eligible instance of every route for a preference.

DESIGN.md: ``auto`` ranks the eligible instances of all routes for a preference
(``balanced``, ``quality``, ``speed``, ``cost``) from live latency, availability,
load, price and quality tier, and fails over down the ranking.

Candidates: the servable members (member and instance enabled, weight > 0) of
the enabled routes' enabled groups that health says are eligible, each instance
once, under the first route (by priority, then name) that holds it. Member
priority tiers do not apply here: auto ranks instances on their merits.

Request-side auto (``model="auto"`` and the goal names below, no balancer
needed): the gateway builds, with the snapshot, one implicit auto balancer per
goal and workload kind over every enabled instance of that kind; a request may
narrow the pool further (``AutoRequest``)::

    goal name    preference   pool
    auto         balanced     every candidate
    auto-cheap   cost
    auto-fast    speed
    auto-code    code
    auto-best    quality
    auto-free    balanced     zero-priced candidates only (input and output 0)

A request's ``AutoRequest`` applies, in this order: the key's limit (instances
it may not use are not candidates at all, and are not named as skipped), the
pool it named (``model_routing_config.models``; the others are skipped as
"not in the requested pool"), the ordered fallback list (``models``: the others
are skipped as "not in the models list"), ``-free`` (priced ones are skipped as
"not zero-priced"), the balancer's exclusions (``BalancerSpec.auto_exclusions``,
model names or instance ids the operator set: "excluded by the operator"; they
are never tried, not even as the last resort). Health removes the rest: a cooling-down instance is
skipped as "cooling down".

Every factor is a number in [0, 1], higher is better::

    quality      q = (quality_tier - 1) / 4
    speed        s = best_latency / latency      (EWMA of successful calls;
                                                  an instance never measured
                                                  gets 1, so it gets measured)
    cost         c = (cheapest + 0.01) / (price + 0.01)
                     price = input + output price per 1M tokens; for reserved
                     capacity (paid by the hour) the marginal price, as
                     capacity-first reads it: 0 while it is not saturated
                     (its hour is paid anyway), its per-token prices once it is
    load         l = 1 / (1 + in_flight)
    availability a = share of successes among the recent outcomes (1 with none)
    strength     f = 1 if the preference's strength (``code`` for code) is
                     among the instance's strengths, else 0
    difficulty   d = 1 - |difficulty - q|    how well the quality tier fits the
                     prompt's difficulty (the built-in router model's P(hard),
                     gateway/router_models/difficulty.py): an easy prompt fits a
                     low tier, a hard one a high tier; 0 for every candidate
                     when the difficulty is not known
    demand       r = D * q    how much the request itself asks of a model, D, in
                     [0, 1], favouring the higher tiers in proportion:
                     D = max(prompt tokens / 8,000 (at most 1),
                             0.75 if it has tools, 0.5 if it has images)
                     (``request_demand``); 0 for every candidate when not known

    score = a * (wq*q + ws*s + wc*c + wl*l + wf*f + wd*d + wr*r)

    preference   wq    ws    wc    wl    wf    wd    wr
    balanced     0.30  0.30  0.25  0.15  0     0.20  0.20  (the one that "analyses the
                                                      request": easy prompts go
                                                      down the tiers, hard, long
                                                      ones and tools or images up)
    quality      0.85  0.07  0.03  0.05  0     0     0     (one quality tier, 0.85 * 0.25,
                                                      outweighs all the rest together)
    speed        0.05  0.75  0.05  0.15  0     0     0
    cost         0.10  0.10  0.75  0.05  0     0     0
    code         0.35  0.04  0.03  0.03  0.55  0     0     (code strength first: the weakest
                                                      coder, 0.55, beats the best
                                                      non-coder, 0.35 + 0.10; then
                                                      quality among the coders)

The demand term moves a request by ``wr * D * (q1 - q2)`` toward the higher of
two tiers: one tier (0.25 of q) is worth 0.05 for a prompt of 8,000 tokens or
more, 0.0375 for a request with tools, 0.025 for one with images.

Each score is also kept broken into its terms (weight x factor, before
availability multiplies) for ``/v1/explain``.

With a ``models`` fallback list the order is the list's order first (every
instance of the first listed model, then the second's...), the score inside
one listed model.

Speed and cost are ratios to the best candidate, so a model twice as slow
scores half, whatever the absolute numbers. Availability multiplies, so a
flaky instance sinks under every preference. Ties keep route order, then
member order. An unknown preference ranks as ``balanced``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.engine.selection import LoadStats, is_servable, list_price, marginal_price
from gateway.engine.types import BalancerSpec, InstanceSpec, MemberSpec, RouteSpec

if TYPE_CHECKING:
    from gateway.engine.health import HealthTracker

BALANCED = "balanced"
QUALITY = "quality"
SPEED = "speed"
COST = "cost"
CODE = "code"
PREFERENCES = (BALANCED, QUALITY, SPEED, COST, CODE)

# The goal names a client may send as `model`, and the preference each ranks by.
GOALS: dict[str, str] = {
    "auto": BALANCED,
    "auto-cheap": COST,
    "auto-fast": SPEED,
    "auto-code": CODE,
    "auto-best": QUALITY,
    "auto-free": BALANCED,
}
FREE_GOAL = "auto-free"


def is_goal_name(name: str) -> bool:
    """A serving name that no balancer stands behind: the gateway ranks models for it."""
    return name in GOALS


# Below these, differences stop mattering (1 ms; 1 cent per million tokens).
LATENCY_FLOOR_S = 0.001
PRICE_FLOOR = 0.01

# Why a servable instance of the pool was not ranked (for /v1/explain and the attempt log).
SKIP_POOL = "not in the requested pool (model_routing_config.models)"
SKIP_LIST = "not in the models list"
SKIP_PRICED = "not zero-priced (auto-free)"
SKIP_COOLING = "cooling down (health)"
SKIP_DISABLED = "disabled or drained (weight 0)"
SKIP_EXCLUDED = "already tried in this request"
SKIP_OPERATOR = "excluded by the operator (never choose)"


# The request's demand (see the rules above): a prompt this long asks the most by size alone.
DEMAND_TOKENS = 8000
TOOLS_DEMAND = 0.75
IMAGES_DEMAND = 0.5


def request_demand(*, prompt_tokens: int, tools: bool, images: bool) -> float:
    """How much the request itself asks of a model, in [0, 1]: its largest demand of size
    (prompt tokens / DEMAND_TOKENS), tools and images."""
    size = min(max(prompt_tokens, 0) / DEMAND_TOKENS, 1.0)
    return max(size, TOOLS_DEMAND if tools else 0.0, IMAGES_DEMAND if images else 0.0)


@dataclass(frozen=True, slots=True)
class Weights:
    quality: float
    speed: float
    cost: float
    load: float
    strength: float = 0.0
    difficulty: float = 0.0
    demand: float = 0.0


PREFERENCE_WEIGHTS: dict[str, Weights] = {
    BALANCED: Weights(quality=0.30, speed=0.30, cost=0.25, load=0.15, difficulty=0.20, demand=0.20),
    QUALITY: Weights(quality=0.85, speed=0.07, cost=0.03, load=0.05),
    SPEED: Weights(quality=0.05, speed=0.75, cost=0.05, load=0.15),
    COST: Weights(quality=0.10, speed=0.10, cost=0.75, load=0.05),
    CODE: Weights(quality=0.35, speed=0.04, cost=0.03, load=0.03, strength=0.55),
}
# The strength a preference looks for in an instance's strengths.
PREFERENCE_STRENGTH: dict[str, str] = {CODE: "code"}


@dataclass(frozen=True, slots=True)
class AutoRequest:
    """What one request asked of an auto ranking, on top of the balancer's own pool.

    ``allowed``: the instance pks the key may use (None: all). ``pool``: the
    pks ``model_routing_config.models`` named (None: all). ``order``: the
    ``models`` fallback list, as the pks of each listed model in list order
    (empty: no list). ``free_only``: ``auto-free``. ``difficulty``: the prompt's
    P(hard) from the built-in router model (None: not known). ``demand``: what the
    request asks by its size, tools and images (``request_demand``; None: not known).
    """

    preference: str = BALANCED
    allowed: frozenset[int] | None = None
    pool: frozenset[int] | None = None
    order: tuple[frozenset[int], ...] = ()
    free_only: bool = False
    difficulty: float | None = None
    demand: float | None = None


@dataclass(frozen=True, slots=True)
class RankedInstance:
    """One rung of the ranking, with the factors that put it there (for the board)."""

    route: RouteSpec
    member: MemberSpec
    score: float
    quality: float
    speed: float
    cost: float
    load: float
    availability: float
    strength: float = 0.0
    weights: Weights = PREFERENCE_WEIGHTS[BALANCED]
    fit: float = 0.0  # the difficulty factor: how well the tier fits the prompt's difficulty
    need: float = 0.0  # the demand factor: the request's demand times the quality factor

    @property
    def instance(self) -> InstanceSpec:
        return self.member.instance

    def terms(self) -> dict[str, float]:
        """The score broken into its terms: weight x factor; the sum times availability is the
        score."""
        w = self.weights
        return {
            "quality": w.quality * self.quality,
            "speed": w.speed * self.speed,
            "cost": w.cost * self.cost,
            "load": w.load * self.load,
            "strength": w.strength * self.strength,
            "difficulty": w.difficulty * self.fit,
            "demand": w.demand * self.need,
            "availability": self.availability,
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    route: RouteSpec
    member: MemberSpec
    reason: str

    @property
    def instance(self) -> InstanceSpec:
        return self.member.instance


@dataclass(frozen=True, slots=True)
class AutoRanking:
    preference: str
    ranked: list[RankedInstance]
    skipped: list[Skipped]
    pool: frozenset[
        int
    ]  # every instance pk the request may use (ranked or skipped): the last resort's pool


def weights_for(preference: str | None) -> tuple[str, Weights]:
    """The preference actually used (an unknown one ranks as ``balanced``) and its weights."""
    if preference in PREFERENCE_WEIGHTS:
        assert preference is not None
        return preference, PREFERENCE_WEIGHTS[preference]
    return BALANCED, PREFERENCE_WEIGHTS[BALANCED]


def rank_instances(
    balancer: BalancerSpec,
    *,
    health: HealthTracker | None,
    load: LoadStats,
    now: float,
    preference: str | None = None,
    excluded: Collection[int] = (),
) -> list[RankedInstance]:
    """The eligible instances of all enabled routes, best first for the preference."""
    request = AutoRequest(
        preference=preference or balancer.auto_preference, free_only=balancer.auto_free_only
    )
    return rank_auto(balancer, request, health=health, load=load, now=now, excluded=excluded).ranked


def rank_auto(
    balancer: BalancerSpec,
    request: AutoRequest,
    *,
    health: HealthTracker | None,
    load: LoadStats,
    now: float,
    excluded: Collection[int] = (),
    unfit: Mapping[int, str] | None = None,
) -> AutoRanking:
    """The ranking for one request, with every skipped instance and why.

    ``unfit``: the instances that cannot serve the request (``capability``), with the reason;
    skipped with it, and outside the pool (not even the last resort tries them).
    """
    preference, weights = weights_for(request.preference)
    wanted = PREFERENCE_STRENGTH.get(preference)
    candidates, skipped, pool = _candidates(balancer, request, health, now, excluded, unfit or {})
    if not candidates:
        return AutoRanking(preference, [], skipped, pool)

    latencies = [load.latency(member.instance.pk) for _, member in candidates]
    measured = [max(value, LATENCY_FLOOR_S) for value in latencies if value is not None]
    best_latency = min(measured) if measured else LATENCY_FLOOR_S
    prices = [marginal_price(member.instance, load, now) for _, member in candidates]
    cheapest = min(prices)
    difficulty = request.difficulty
    if difficulty is not None:
        difficulty = min(max(difficulty, 0.0), 1.0)
    demand = 0.0 if request.demand is None else min(max(request.demand, 0.0), 1.0)

    ranked: list[RankedInstance] = []
    for (route, member), latency, price in zip(candidates, latencies, prices, strict=True):
        pk = member.instance.pk
        q = (min(max(member.instance.quality_tier, 1), 5) - 1) / 4
        s = 1.0 if latency is None else best_latency / max(latency, LATENCY_FLOOR_S)
        c = (cheapest + PRICE_FLOOR) / (price + PRICE_FLOOR)
        busy = 1.0 / (1 + load.in_flight(pk))
        a = health.success_rate(pk) if health is not None else 1.0
        f = 1.0 if wanted is not None and wanted in member.instance.strengths else 0.0
        d = 0.0 if difficulty is None else 1.0 - abs(difficulty - q)
        r = demand * q
        score = a * (
            weights.quality * q
            + weights.speed * s
            + weights.cost * c
            + weights.load * busy
            + weights.strength * f
            + weights.difficulty * d
            + weights.demand * r
        )
        ranked.append(RankedInstance(route, member, score, q, s, c, busy, a, f, weights, d, r))
    # sort() is stable: equal scores keep route order, then member order.
    if request.order:
        position = {
            pk: index for index, pks in reversed(list(enumerate(request.order))) for pk in pks
        }
        ranked.sort(key=lambda r: (position[r.instance.pk], -r.score))
    else:
        ranked.sort(key=lambda r: -r.score)
    return AutoRanking(preference, ranked, skipped, pool)


def _candidates(
    balancer: BalancerSpec,
    request: AutoRequest,
    health: HealthTracker | None,
    now: float,
    excluded: Collection[int],
    unfit: Mapping[int, str],
) -> tuple[list[tuple[RouteSpec, MemberSpec]], list[Skipped], frozenset[int]]:
    seen: set[int] = set()
    found: list[tuple[RouteSpec, MemberSpec]] = []
    skipped: list[Skipped] = []
    listed = frozenset[int]().union(*request.order) if request.order else None
    for route in balancer.routes:  # sorted by (priority, name)
        if not route.enabled or not route.group.enabled:
            continue
        for member in route.group.members:
            pk = member.instance.pk
            if pk in seen or (request.allowed is not None and pk not in request.allowed):
                continue
            seen.add(pk)
            reason = _skip_reason(member, request, listed, excluded, unfit)
            if reason is None and balancer.auto_exclusions:
                if {member.instance.model, member.instance.instance_id} & balancer.auto_exclusions:
                    reason = SKIP_OPERATOR
            if reason is None and health is not None and not health.is_eligible(pk, now):
                reason = SKIP_COOLING
            if reason is None:
                found.append((route, member))
            else:
                skipped.append(Skipped(route, member, reason))
    usable = {SKIP_COOLING, SKIP_EXCLUDED}
    pool = frozenset(m.instance.pk for _, m in found) | frozenset(
        s.instance.pk for s in skipped if s.reason in usable
    )
    return found, skipped, pool


def _skip_reason(
    member: MemberSpec,
    request: AutoRequest,
    listed: frozenset[int] | None,
    excluded: Collection[int],
    unfit: Mapping[int, str],
) -> str | None:
    pk = member.instance.pk
    if not is_servable(member):
        return SKIP_DISABLED
    if request.pool is not None and pk not in request.pool:
        return SKIP_POOL
    if listed is not None and pk not in listed:
        return SKIP_LIST
    if request.free_only and list_price(member.instance) > 0:
        return SKIP_PRICED
    if pk in unfit:
        return unfit[pk]
    if pk in excluded:
        return SKIP_EXCLUDED
    return None
