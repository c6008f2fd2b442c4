"""Budgets' rules (gateway/engine/budgets.py) and the anomaly statistic
(gateway/engine/anomalies.py), without Django."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.engine.anomalies import MAD_SCALE, assess, median
from gateway.engine.budgets import (
    API_KEY,
    BALANCER,
    DAILY,
    DOWNGRADE,
    MONTHLY,
    REFUSE,
    TEAM,
    BudgetSpec,
    applicable,
    cheapest_route,
    judge,
    period_end,
    period_key,
    period_start,
    units_to_usd,
    usd_to_units,
)
from tests.engine.engine_factories import (
    make_balancer,
    make_group,
    make_instance,
    make_member,
    make_route,
    make_routing,
    trip,
)


def budget(
    pk: int,
    *,
    limit: str = "1",
    warn: str = "0.8",
    action: str = REFUSE,
    scope: str = TEAM,
    subject: int = 1,
    period: str = MONTHLY,
) -> BudgetSpec:
    units = usd_to_units(Decimal(limit))
    return BudgetSpec(
        pk=pk,
        scope=scope,
        subject_id=subject,
        period=period,
        limit_units=units,
        warn_units=int(units * Decimal(warn)),
        action=action,
        label=f"{scope} {subject}",
    )


def test_counts_are_exact_to_the_usage_events_precision() -> None:
    amount = Decimal("0.0000160000")
    assert usd_to_units(amount) == 160_000
    assert units_to_usd(usd_to_units(amount) * 3) == Decimal("0.000048")


def test_periods_are_the_utc_day_and_the_utc_calendar_month() -> None:
    moment = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_start(DAILY, moment) == datetime(2026, 12, 31, tzinfo=UTC)
    assert period_end(DAILY, moment) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_start(MONTHLY, moment) == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_end(MONTHLY, moment) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_end(MONTHLY, datetime(2026, 2, 3, tzinfo=UTC)) == datetime(2026, 3, 1, tzinfo=UTC)
    assert period_key(DAILY, moment) == "d20261231"
    assert period_key(MONTHLY, moment) == "m202612"


def test_a_request_is_under_its_keys_its_teams_and_its_balancers_budgets() -> None:
    key, team, other, balancer = (
        budget(1, scope=API_KEY, subject=5),
        budget(2, scope=TEAM, subject=7),
        budget(3, scope=TEAM, subject=8),
        budget(4, scope=BALANCER, subject=9),
    )
    index = {(b.scope, b.subject_id): (b,) for b in (key, team, other, balancer)}
    assert applicable(index, key_pk=5, team_pk=7, balancer_pk=9) == (key, team, balancer)
    assert applicable(index, key_pk=5, team_pk=None, balancer_pk=None) == (key,)  # a goal name
    assert applicable(index, key_pk=6, team_pk=None, balancer_pk=10) == ()


def test_warning_from_the_share_reached_at_the_limit() -> None:
    b = budget(1, limit="1.00", warn="0.5")
    assert judge([(b, usd_to_units(Decimal("0.49")))]) == judge([])
    assert judge([(b, usd_to_units(Decimal("0.50")))]).warning == (b,)
    verdict = judge([(b, usd_to_units(Decimal("1.00")))])
    assert verdict.refused == b and verdict.reached and not verdict.warning


def test_refuse_wins_over_downgrade() -> None:
    down = budget(1, action=DOWNGRADE)
    refuse = budget(2, action=REFUSE)
    full = usd_to_units(Decimal(1))
    assert judge([(down, full)]).downgrade == down
    verdict = judge([(down, full), (refuse, full)])
    assert verdict.refused == refuse and verdict.downgrade is None


def test_downgrade_picks_the_route_with_the_cheapest_usable_member() -> None:
    pricey = make_instance("pricey", input_price=10, output_price=30)
    mid = make_instance("mid", input_price=1, output_price=3)
    cheap = make_instance("cheap", input_price=0.1, output_price=0.3)
    balancer = make_balancer(
        make_route("primary", pricey, priority=1, is_default=True),
        make_route("mixed", make_group(make_member(mid), make_member(cheap, weight=0)), priority=2),
        make_route("budget", make_group(cheap), priority=3),
        make_route(
            "off", make_instance("free", input_price=0, output_price=0), priority=4, enabled=False
        ),
    )
    routing = make_routing()
    now = routing.clock()

    def usable(instance):
        return routing.health.is_eligible(instance.pk, now)

    # A drained member (weight 0) and a disabled route do not count.
    assert cheapest_route(balancer, usable, load=routing.load, now=now).name == "budget"
    trip(routing.health, cheap, now)  # cooling down: the next cheapest usable route
    assert cheapest_route(balancer, usable, load=routing.load, now=now).name == "mixed"
    for instance in (pricey, mid):
        trip(routing.health, instance, now)
    # Nothing usable: the cheapest servable route all the same (the planner's last resort applies).
    assert cheapest_route(balancer, usable, load=routing.load, now=now).name == "budget"


def test_downgrade_prices_reserved_capacity_at_the_margin_nothing_until_it_is_saturated() -> None:
    """A reserved instance's hour is paid whatever it serves: its per-token prices (here far
    above the token-billed route's) only count once its capacity is full, as in auto."""
    dedicated = dataclasses.replace(
        make_instance("dedicated", input_price=100, output_price=100),
        pricing="capacity",
        capacity=2,
        capacity_unit="concurrent_requests",
    )
    cheap = make_instance("cheap", input_price=0.1, output_price=0.3)
    balancer = make_balancer(
        make_route("cheap", make_group(cheap), priority=1, is_default=True),
        make_route("reserved", make_group(dedicated), priority=2),
    )
    routing = make_routing()
    now = routing.clock()

    def downgraded() -> str:
        route = cheapest_route(
            balancer, lambda i: routing.health.is_eligible(i.pk, now), load=routing.load, now=now
        )
        assert route is not None
        return route.name

    assert downgraded() == "reserved"  # room on paid capacity: 0 per token at the margin
    routing.load.begin(dedicated.pk)
    assert downgraded() == "reserved"  # 1 of 2 in flight
    routing.load.begin(dedicated.pk)
    assert downgraded() == "cheap"  # saturated: its 200 per 1M against 0.4
    routing.load.end(dedicated.pk)
    assert downgraded() == "reserved"


def test_the_median_and_the_mad_ignore_a_spike_in_the_baseline() -> None:
    history = [1.0, 1.1, 0.9, 1.0, 1.2, 0.8, 1.0, 50.0] * 4  # one wild hour in eight
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([1.0, 2.0, 3.0, 4.0]) == 2.5
    result = assess(history, 2.0, k=3.5, min_excess=0.0, min_history=24)
    assert result is not None
    assert result.median == 1.0
    assert result.mad == pytest.approx(0.1)
    assert result.upper == pytest.approx(1.0 + 3.5 * MAD_SCALE * 0.1)
    assert result.anomalous  # a mean + 3 sigma bound would be near 60 here and miss it
    normal = assess(history, 1.3, k=3.5, min_excess=0.0, min_history=24)
    assert normal is not None and not normal.anomalous


def test_a_flat_baseline_needs_the_minimum_excess_and_a_short_one_no_verdict() -> None:
    flat = [2.0] * 30
    small = assess(flat, 2.4, k=3.5, min_excess=0.5, min_history=24)
    assert small is not None and not small.anomalous and small.upper == 2.5
    big = assess(flat, 2.6, k=3.5, min_excess=0.5, min_history=24)
    assert big is not None and big.anomalous
    assert assess(flat[:23], 100.0, k=3.5, min_excess=0.5, min_history=24) is None
