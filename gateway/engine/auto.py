"""Auto mode: rank every eligible instance of every route for a preference.

DESIGN.md: ``auto`` ranks the eligible instances of all routes for a preference
(``balanced``, ``quality``, ``speed``, ``cost``) from live latency, availability,
load, price and quality tier, and fails over down the ranking.

Candidates: the servable members (member and instance enabled, weight > 0) of
the enabled routes' enabled groups that health says are eligible, each instance
once, under the first route (by priority, then name) that holds it. Member
priority tiers do not apply here: auto ranks instances on their merits.

Every factor is a number in [0, 1], higher is better::

    quality      q = (quality_tier - 1) / 4
    speed        s = best_latency / latency      (EWMA of successful calls;
                                                  an instance never measured
                                                  gets 1, so it gets measured)
    cost         c = (cheapest + 0.01) / (price + 0.01)
                     price = input + output price per 1M tokens
    load         l = 1 / (1 + in_flight)
    availability a = share of successes among the recent outcomes (1 with none)

    score = a * (wq*q + ws*s + wc*c + wl*l)

    preference   wq    ws    wc    wl
    balanced     0.30  0.30  0.25  0.15
    quality      0.85  0.07  0.03  0.05   (one quality tier, 0.85 * 0.25,
                                           outweighs all the rest together)
    speed        0.05  0.75  0.05  0.15
    cost         0.10  0.10  0.75  0.05

Speed and cost are ratios to the best candidate, so a model twice as slow
scores half, whatever the absolute numbers. Availability multiplies, so a
flaky instance sinks under every preference. Ties keep route order, then
member order. An unknown preference ranks as ``balanced``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.engine.selection import LoadStats, is_servable
from gateway.engine.types import BalancerSpec, InstanceSpec, MemberSpec, RouteSpec

if TYPE_CHECKING:
    from gateway.engine.health import HealthTracker

BALANCED = "balanced"
QUALITY = "quality"
SPEED = "speed"
COST = "cost"

# Below these, differences stop mattering (1 ms; 1 cent per million tokens).
LATENCY_FLOOR_S = 0.001
PRICE_FLOOR = 0.01


@dataclass(frozen=True, slots=True)
class Weights:
    quality: float
    speed: float
    cost: float
    load: float


PREFERENCE_WEIGHTS: dict[str, Weights] = {
    BALANCED: Weights(quality=0.30, speed=0.30, cost=0.25, load=0.15),
    QUALITY: Weights(quality=0.85, speed=0.07, cost=0.03, load=0.05),
    SPEED: Weights(quality=0.05, speed=0.75, cost=0.05, load=0.15),
    COST: Weights(quality=0.10, speed=0.10, cost=0.75, load=0.05),
}


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

    @property
    def instance(self) -> InstanceSpec:
        return self.member.instance


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
    weights = PREFERENCE_WEIGHTS.get(preference or balancer.auto_preference)
    if weights is None:
        weights = PREFERENCE_WEIGHTS[BALANCED]

    candidates = _candidates(balancer, health, now, excluded)
    if not candidates:
        return []

    latencies = [load.latency(member.instance.pk) for _, member in candidates]
    measured = [max(value, LATENCY_FLOOR_S) for value in latencies if value is not None]
    best_latency = min(measured) if measured else LATENCY_FLOOR_S
    prices = [_price(member.instance) for _, member in candidates]
    cheapest = min(prices)

    ranked: list[RankedInstance] = []
    for (route, member), latency, price in zip(candidates, latencies, prices, strict=True):
        pk = member.instance.pk
        q = (min(max(member.instance.quality_tier, 1), 5) - 1) / 4
        s = 1.0 if latency is None else best_latency / max(latency, LATENCY_FLOOR_S)
        c = (cheapest + PRICE_FLOOR) / (price + PRICE_FLOOR)
        busy = 1.0 / (1 + load.in_flight(pk))
        a = health.success_rate(pk) if health is not None else 1.0
        score = a * (
            weights.quality * q + weights.speed * s + weights.cost * c + weights.load * busy
        )
        ranked.append(RankedInstance(route, member, score, q, s, c, busy, a))
    # sort() is stable: equal scores keep route order, then member order.
    ranked.sort(key=lambda r: -r.score)
    return ranked


def _candidates(
    balancer: BalancerSpec,
    health: HealthTracker | None,
    now: float,
    excluded: Collection[int],
) -> list[tuple[RouteSpec, MemberSpec]]:
    seen: set[int] = set()
    found: list[tuple[RouteSpec, MemberSpec]] = []
    for route in balancer.routes:  # sorted by (priority, name)
        if not route.enabled or not route.group.enabled:
            continue
        for member in route.group.members:
            pk = member.instance.pk
            if pk in seen or pk in excluded or not is_servable(member):
                continue
            seen.add(pk)
            if health is None or health.is_eligible(pk, now):
                found.append((route, member))
    return found


def _price(instance: InstanceSpec) -> float:
    return max(instance.input_price_per_million, 0.0) + max(instance.output_price_per_million, 0.0)
