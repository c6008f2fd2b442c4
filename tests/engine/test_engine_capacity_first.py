"""The capacity_first policy: paid capacity first, spill-over only when it is saturated."""

from __future__ import annotations

import dataclasses

from engine_factories import (
    FakeClock,
    make_balancer,
    make_group,
    make_instance,
    make_member,
    make_route,
    make_routing,
    trip,
)

from gateway.engine.health import HealthTracker
from gateway.engine.planner import plan_attempts
from gateway.engine.selection import THROUGHPUT_WINDOW, LoadStats, SelectionState

NOW = 1000.0


def reserved(instance_id: str, capacity: int, unit: str = "concurrent_requests"):
    return dataclasses.replace(
        make_instance(instance_id), pricing="capacity", capacity=capacity, capacity_unit=unit
    )


def test_reserved_capacity_takes_requests_until_its_concurrency_is_full_then_it_spills() -> None:
    dedicated = reserved("dedicated", capacity=2)
    # The token-billed member is listed first and in a better tier: capacity first ignores both.
    api = make_instance("api")
    group = make_group(
        make_member(api, priority=1),
        make_member(dedicated, priority=2),
        policy="capacity_first",
    )
    state, load = SelectionState(), LoadStats()
    chosen = []
    spilled = []
    for _ in range(4):
        member = state.pick(group, now=NOW, load=load)
        assert member is not None
        load.begin(member.instance.pk)  # each request still running
        chosen.append(member.instance.instance_id)
        spilled.append(state.last_spilled)
    assert chosen == ["dedicated", "dedicated", "api", "api"]
    assert spilled == [False, False, True, True]
    load.end(dedicated.pk, 0.5)  # one reserved slot frees up: the next request fills it
    member = state.pick(group, now=NOW, load=load)
    assert member is not None and member.instance.instance_id == "dedicated"
    assert state.last_spilled is False


def test_the_least_used_reserved_member_goes_first() -> None:
    big, small = reserved("big", capacity=4), reserved("small", capacity=1)
    group = make_group(big, small, make_instance("api"), policy="capacity_first")
    state, load = SelectionState(), LoadStats()
    order = []
    for _ in range(6):
        member = state.pick(group, now=NOW, load=load)
        assert member is not None
        load.begin(member.instance.pk)
        order.append(member.instance.instance_id)
    # Both empty: big (the tie goes in order); small at 0/1 is less used than big at 1/4;
    # then big at 1/4, 2/4, 3/4 (small is full); then all reserved capacity is full: api.
    assert order == ["big", "small", "big", "big", "big", "api"]


def test_a_throughput_capacity_spills_when_its_measured_tokens_per_second_reach_it() -> None:
    dedicated = reserved("dedicated", capacity=100, unit="tokens_per_second")
    group = make_group(dedicated, make_instance("api"), policy="capacity_first")
    state, load = SelectionState(), LoadStats()
    assert state.pick(group, now=NOW, load=load).instance.instance_id == "dedicated"
    # 999 tokens over the 10-second window: 99.9 tokens/s, still room.
    load.served(dedicated.pk, 999, NOW)
    assert state.pick(group, now=NOW, load=load).instance.instance_id == "dedicated"
    load.served(dedicated.pk, 1, NOW + 1)  # 1,000 tokens: 100 tokens/s, saturated
    assert load.throughput(dedicated.pk, NOW + 1) == 100.0
    assert state.pick(group, now=NOW + 1, load=load).instance.instance_id == "api"
    assert state.last_spilled is True
    # The window slides: the first answer's tokens leave it, and there is room again.
    later = NOW + THROUGHPUT_WINDOW + 0.5
    assert load.throughput(dedicated.pk, later) == 0.1
    assert state.pick(group, now=later, load=load).instance.instance_id == "dedicated"


def test_reserved_capacity_that_is_cooling_down_fails_over_it_does_not_spill() -> None:
    dedicated = reserved("dedicated", capacity=2)
    group = make_group(dedicated, make_instance("api"), policy="capacity_first")
    health = HealthTracker()
    trip(health, dedicated, NOW)
    state = SelectionState()
    member = state.pick(group, now=NOW, load=LoadStats(), health=health)
    assert member is not None and member.instance.instance_id == "api"
    assert state.last_spilled is False


def test_with_no_token_billed_member_left_saturated_capacity_still_takes_the_request() -> None:
    dedicated = reserved("dedicated", capacity=1)
    group = make_group(dedicated, policy="capacity_first")
    state, load = SelectionState(), LoadStats()
    load.begin(dedicated.pk)
    member = state.pick(group, now=NOW, load=load)
    assert member is not None and member.instance.instance_id == "dedicated"
    assert state.last_spilled is False


def test_token_billed_members_keep_their_tiers_and_weights_when_spilling() -> None:
    dedicated = reserved("dedicated", capacity=1)
    cheap, dear = make_instance("cheap"), make_instance("dear")
    group = make_group(
        make_member(dedicated),
        make_member(cheap, weight=3, priority=1),
        make_member(dear, weight=1, priority=2),
        policy="capacity_first",
    )
    state, load = SelectionState(), LoadStats()
    load.begin(dedicated.pk)
    picked = [state.pick(group, now=NOW, load=load).instance.instance_id for _ in range(3)]
    assert picked == ["cheap", "cheap", "cheap"]  # tier 1 first
    picked = [
        state.pick(group, now=NOW, load=load, excluded={cheap.pk}).instance.instance_id
        for _ in range(2)
    ]
    assert picked == ["dear", "dear"]


def test_the_attempt_plan_marks_the_attempt_that_spilled_over() -> None:
    dedicated = reserved("dedicated", capacity=1)
    api = make_instance("api")
    group = make_group(dedicated, api, policy="capacity_first")
    balancer = make_balancer(make_route("pool", group, is_default=True))
    routing = make_routing(FakeClock(NOW))
    first = plan_attempts(balancer, routing)
    held = first.next()  # still running: holds the one reserved slot
    assert held is not None and held.instance is dedicated and held.spilled is False
    second = plan_attempts(balancer, routing)
    attempt = second.next()
    assert attempt is not None and attempt.instance is api and attempt.spilled is True
    second.succeeded(0.1)
    first.succeeded(0.1)
    third = plan_attempts(balancer, routing)
    attempt = third.next()
    assert attempt is not None and attempt.instance is dedicated and attempt.spilled is False
    assert third.intended_route is balancer.routes[0]


def test_an_attempt_on_capacity_full_elsewhere_is_undone_and_the_pick_spills_over() -> None:
    """Other processes fill the reserved instance (the hot path's shared slot was refused):
    the attempt is undone without a verdict or a place in the budget, the next pick spills
    over, and once the mark lapses the instance takes requests again."""
    dedicated = reserved("dedicated", capacity=2)
    api = make_instance("api")
    group = make_group(dedicated, api, policy="capacity_first")
    balancer = make_balancer(make_route("pool", group, is_default=True), budget=1)
    clock = FakeClock(NOW)
    routing = make_routing(clock)
    closed = []
    plan = plan_attempts(balancer, routing)
    plan.on_close = closed.append
    attempt = plan.next()
    assert attempt is not None and attempt.instance is dedicated
    plan.full(attempt, until=NOW + 0.1)
    assert routing.load.in_flight(dedicated.pk) == 0 and closed == []
    following = plan.next(keep_open=True)  # the budget of 1 is not spent by the undone attempt
    assert following is not None and following.instance is api and following.spilled is True
    assert following.number == 1
    plan.succeeded(0.1)
    assert closed == [following]
    assert routing.health.is_eligible(dedicated.pk, NOW)  # no verdict on it
    clock.advance(0.2)
    again = plan_attempts(balancer, routing).next()
    assert again is not None and again.instance is dedicated
