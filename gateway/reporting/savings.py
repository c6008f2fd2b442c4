"""Savings: what the range's traffic would have cost otherwise.

Three figures, from the hourly rollups (recorded tokens and costs) and the
instances' prices:

- **Cache**: the upstream cost the response cache avoided: each hit's original
  cost, recorded on its usage event as `savings_usd` (its own cost is 0).
- **Against the priciest route**: per balancer, its recorded prompt and completion
  tokens priced on its most expensive enabled route, less what they actually cost.
- **Against the baseline route**: the same, priced on the route the operator named
  as the balancer's baseline (`Balancer.baseline_route`); balancers without one are
  left out of this figure.

A route's price for a balancer is its most expensive enabled member's (a target
group's members, or its one instance) for that balancer's own mix of prompt and
completion tokens: what the traffic costs if every request went there. Prices are
the instances' current ones; the actual cost is the one recorded per request. Cache
hits keep their tokens at zero cost, so both baselines include what the cache
saved. A negative saving is shown as such: the traffic cost more than the baseline
would have. Balancers deleted since have no routes to price: they count in the cache
figure only.

A reserved-capacity member (paid by the hour) has no price per token of its own: it is
priced at its **effective price per 1M tokens over the same range** (its paid hours'
cost over the tokens they served, the usage page's "Reserved capacity" figure), the
same allocation that puts its hours on its requests as their cost; 0 when it served
nothing in the range. Its input and output prices are not read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import QuerySet, Sum

from balancers.models import Balancer, Route
from gateway.engine.auto import is_goal_name
from gateway.models import UsageHourly
from targetgroups.models import Instance

MILLION = Decimal(1_000_000)


def priced(
    instance: Instance,
    prompt_tokens: int,
    completion_tokens: int,
    reserved_prices: Mapping[str, Decimal] | None = None,
) -> Decimal:
    """The tokens' cost on the instance: its per-token prices, or for reserved capacity its
    effective price per 1M tokens (`reserved_prices`, by instance id; 0 when absent)."""
    if instance.capacity_priced:
        price = (reserved_prices or {}).get(instance.instance_id) or Decimal(0)
        return (prompt_tokens + completion_tokens) * price / MILLION
    return (
        prompt_tokens * instance.input_price_per_million
        + completion_tokens * instance.output_price_per_million
    ) / MILLION


def route_cost(
    route: Route,
    prompt_tokens: int,
    completion_tokens: int,
    reserved_prices: Mapping[str, Decimal] | None = None,
) -> Decimal | None:
    """The tokens' cost on the route's most expensive enabled member (any member if none is
    enabled)."""
    if route.instance is not None:
        return priced(route.instance, prompt_tokens, completion_tokens, reserved_prices)
    if route.target_group is None:
        return None
    members = list(route.target_group.members.all())
    enabled = [m for m in members if m.enabled and m.instance.enabled] or members
    if not enabled:
        return None
    return max(
        priced(m.instance, prompt_tokens, completion_tokens, reserved_prices) for m in enabled
    )


def unbound_note(serving_name: str) -> str:
    """What a serving name with no balancer row is: a goal name (auto, auto-cheap, ...), or a
    balancer deleted since, or never one (a request for an unknown model, refused with a 404)."""
    return "goal name" if is_goal_name(serving_name) else "deleted or unknown"


@dataclass
class BalancerSavings:
    balancer: str
    serving_name: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    cache_hits: int = 0
    cache_savings: Decimal = Decimal(0)
    priciest_route: str = ""
    priciest_cost: Decimal | None = None
    baseline_route: str = ""
    baseline_cost: Decimal | None = None

    @property
    def note(self) -> str:
        return "" if self.balancer else unbound_note(self.serving_name)

    @property
    def savings_vs_priciest(self) -> Decimal | None:
        return None if self.priciest_cost is None else self.priciest_cost - self.cost

    @property
    def savings_vs_baseline(self) -> Decimal | None:
        return None if self.baseline_cost is None else self.baseline_cost - self.cost


@dataclass
class SavingsReport:
    balancers: list[BalancerSavings] = field(default_factory=list)
    cache_hits: int = 0
    cache_savings: Decimal = Decimal(0)

    @property
    def priced(self) -> list[BalancerSavings]:
        return [b for b in self.balancers if b.priciest_cost is not None]

    @property
    def with_baseline(self) -> list[BalancerSavings]:
        return [b for b in self.balancers if b.baseline_cost is not None]

    @property
    def priciest_cost(self) -> Decimal | None:
        rows = self.priced
        return sum((b.priciest_cost or Decimal(0) for b in rows), Decimal(0)) if rows else None

    @property
    def savings_vs_priciest(self) -> Decimal | None:
        rows = self.priced
        return (
            sum((b.savings_vs_priciest or Decimal(0) for b in rows), Decimal(0)) if rows else None
        )

    @property
    def baseline_cost(self) -> Decimal | None:
        rows = self.with_baseline
        return sum((b.baseline_cost or Decimal(0) for b in rows), Decimal(0)) if rows else None

    @property
    def savings_vs_baseline(self) -> Decimal | None:
        rows = self.with_baseline
        return (
            sum((b.savings_vs_baseline or Decimal(0) for b in rows), Decimal(0)) if rows else None
        )


def usage_savings(
    *, hours: QuerySet[UsageHourly], reserved_prices: Mapping[str, Decimal] | None = None
) -> SavingsReport:
    """The savings of these rollup rows (a range, filtered as the page is), per balancer and in
    total.

    `reserved_prices`: each reserved instance's effective price per 1M tokens over the range."""
    sums = hours.values("balancer_id", "serving_name").annotate(
        n=Sum("requests"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        cost=Sum("cost_usd"),
        hits=Sum("cache_hits"),
        saved=Sum("savings_usd"),
    )
    balancers = Balancer.objects.prefetch_related(
        "routes__instance", "routes__target_group__members__instance"
    ).in_bulk({row["balancer_id"] for row in sums if row["balancer_id"] is not None})
    report = SavingsReport()
    per_balancer: dict[
        int | str, BalancerSavings
    ] = {}  # balancer pk, or the serving name of one deleted
    for row in sums:
        balancer = balancers.get(row["balancer_id"])
        merge: int | str = balancer.pk if balancer is not None else row["serving_name"]
        entry = per_balancer.get(merge)
        if entry is None:
            entry = per_balancer[merge] = BalancerSavings(
                balancer=balancer.name if balancer is not None else "",
                serving_name=row["serving_name"],
            )
        entry.requests += row["n"] or 0
        entry.prompt_tokens += row["prompt"] or 0
        entry.completion_tokens += row["completion"] or 0
        entry.cost += row["cost"] or Decimal(0)
        entry.cache_hits += row["hits"] or 0
        entry.cache_savings += row["saved"] or Decimal(0)
    for merge, entry in per_balancer.items():
        balancer = balancers.get(merge) if isinstance(merge, int) else None
        if balancer is not None:
            _price(entry, balancer, reserved_prices)
        report.cache_hits += entry.cache_hits
        report.cache_savings += entry.cache_savings
    # The largest savings first; deleted balancers (cache savings only) last.
    report.balancers = sorted(
        per_balancer.values(),
        key=lambda b: (
            b.priciest_cost is None,
            -(b.savings_vs_priciest or 0),
            -b.cache_savings,
            b.balancer or b.serving_name,
        ),
    )
    return report


def _price(
    entry: BalancerSavings, balancer: Balancer, reserved_prices: Mapping[str, Decimal] | None
) -> None:
    routes = list(balancer.routes.all())
    costs = {
        route.name: route_cost(route, entry.prompt_tokens, entry.completion_tokens, reserved_prices)
        for route in routes
    }
    enabled = [
        (cost, name)
        for name, cost in costs.items()
        if cost is not None and any(r.name == name and r.enabled for r in routes)
    ]
    if enabled:
        cost, name = max(enabled, key=lambda pair: (pair[0], pair[1]))
        entry.priciest_route, entry.priciest_cost = name, cost
    if balancer.baseline_route and costs.get(balancer.baseline_route) is not None:
        entry.baseline_route = balancer.baseline_route
        entry.baseline_cost = costs[balancer.baseline_route]
