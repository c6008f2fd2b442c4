"""Budgets: spend limits per team, API key or balancer, over a UTC day or a UTC calendar month.

The rules, as docs/cost.md states them and this file applies them:

1. A request is under every enabled budget of its API key, of the key's team, and of the
   balancer it names (a goal name such as ``auto`` has no balancer row, so only the key's and
   the team's). Each budget counts the cost of every usage event in its period, whatever the
   event's status: an attempt the upstream billed and then broke (a stream cut after its
   first tokens) is counted like an answer.
2. A budget is *warning* from ``warn_share x limit`` and *reached* at the limit. Reached is
   checked before the request is sent, on the spend counted so far: the request that crosses
   the limit is served, the next one meets the limit.
3. When several budgets are reached, ``refuse`` wins over ``downgrade``: the request is
   refused with a 429 (OpenAI's ``insufficient_quota``).
4. ``downgrade`` sends the request to the cheapest route that can serve: among the enabled
   routes, the one whose cheapest usable member (enabled, weight above 0, not cooling down)
   has the lowest **marginal** price per million tokens: input + output for a token-billed
   member; for reserved capacity 0 while it has room (its hour is paid whatever it serves),
   its input + output prices once it is saturated (``selection.marginal_price``, the price
   auto's cost factor reads); ties go to the route's priority.
   When no member of any route is usable, the cheapest servable one is named all the same
   (the planner's last resort applies). Failover after it follows the usual route order.
   An ``auto`` balancer ranks by cost instead.

Counts are integers of 1e-10 USD (the usage events' precision), so they add exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gateway.engine.selection import LoadStats, is_servable, marginal_price
from gateway.engine.types import BalancerSpec, InstanceSpec, RouteSpec

DAILY = "daily"
MONTHLY = "monthly"
REFUSE = "refuse"
DOWNGRADE = "downgrade"
TEAM = "team"
API_KEY = "api_key"
BALANCER = "balancer"

UNITS_PER_USD = 10**10  # a count unit: the usage events' 10 decimal places


def usd_to_units(amount: Decimal) -> int:
    return int(amount * UNITS_PER_USD)


def units_to_usd(units: int) -> Decimal:
    return Decimal(units) / UNITS_PER_USD


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    pk: int
    scope: str  # team | api_key | balancer
    subject_id: int
    period: str  # daily | monthly
    limit_units: int
    warn_units: int
    action: str  # refuse | downgrade
    label: str  # "team support", for messages


def period_start(period: str, now: datetime) -> datetime:
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == DAILY else day.replace(day=1)


def period_end(period: str, now: datetime) -> datetime:
    start = period_start(period, now)
    if period == DAILY:
        return start + timedelta(days=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def period_key(period: str, now: datetime) -> str:
    """The period's name in counter keys: d20261202, m202612."""
    now = now.astimezone(UTC)
    return f"d{now:%Y%m%d}" if period == DAILY else f"m{now:%Y%m}"


def applicable(
    budgets: Mapping[tuple[str, int], tuple[BudgetSpec, ...]],
    *,
    key_pk: int | None,
    team_pk: int | None,
    balancer_pk: int | None,
) -> tuple[BudgetSpec, ...]:
    """The budgets a request is under (rule 1)."""
    found: tuple[BudgetSpec, ...] = ()
    for scope, pk in ((API_KEY, key_pk), (TEAM, team_pk), (BALANCER, balancer_pk)):
        if pk:
            found += budgets.get((scope, pk), ())
    return found


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    refused: BudgetSpec | None = None  # rule 3: the first reached budget that refuses
    downgrade: BudgetSpec | None = None  # a reached budget that downgrades (none refuses)
    warning: tuple[BudgetSpec, ...] = ()

    @property
    def reached(self) -> bool:
        return self.refused is not None or self.downgrade is not None


NO_BUDGET = BudgetVerdict()


def judge(spent: Iterable[tuple[BudgetSpec, int]]) -> BudgetVerdict:
    """The verdict on a request from each budget's spend so far, in count units (rules 2, 3)."""
    refused = downgrade = None
    warning: list[BudgetSpec] = []
    for budget, units in spent:
        if units >= budget.limit_units:
            if budget.action == REFUSE:
                refused = refused or budget
            else:
                downgrade = downgrade or budget
        elif units >= budget.warn_units:
            warning.append(budget)
    if refused is not None:
        downgrade = None
    return BudgetVerdict(refused=refused, downgrade=downgrade, warning=tuple(warning))


def cheapest_route(
    balancer: BalancerSpec,
    usable: Callable[[InstanceSpec], bool],
    *,
    load: LoadStats,
    now: float,
) -> RouteSpec | None:
    """Rule 4: the enabled route with the cheapest usable member at the margin (``load`` says
    which reserved members are saturated at ``now``); None without an enabled route."""

    def best(require_usable: bool) -> RouteSpec | None:
        choice: tuple[float, int, str] | None = None
        found: RouteSpec | None = None
        for route in balancer.routes:
            if not route.enabled or not route.group.enabled:
                continue
            prices = [
                marginal_price(m.instance, load, now)
                for m in route.group.members
                if is_servable(m) and (not require_usable or usable(m.instance))
            ]
            if not prices:
                continue
            rank = (min(prices), route.priority, route.name)
            if choice is None or rank < choice:
                choice, found = rank, route
        return found

    return best(True) or best(False)
