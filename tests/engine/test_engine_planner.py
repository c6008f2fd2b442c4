from __future__ import annotations

from collections import Counter

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

from gateway.engine.planner import AttemptPlan, first_route, plan_attempts, route_order


def walk(plan: AttemptPlan) -> list[tuple[str, str]]:
    """Fail every attempt; return (route, instance) in attempt order."""
    seen = []
    while (attempt := plan.next()) is not None:
        seen.append((attempt.route.name, attempt.instance.instance_id))
        plan.failed()
    return seen


def three_routes(budget: int = 10, mode: str = "ordered"):
    a, b, c = make_instance("a"), make_instance("b"), make_instance("c")
    balancer = make_balancer(
        make_route("primary", a, priority=1, is_default=True, weight=3),
        make_route("secondary", b, priority=2, weight=1),
        make_route("tertiary", c, priority=3, weight=0),
        mode=mode,
        budget=budget,
    )
    return balancer, (a, b, c)


def test_ordered_mode_starts_with_the_lowest_priority_enabled_route() -> None:
    a, b = make_instance("a"), make_instance("b")
    balancer = make_balancer(
        make_route("off", a, priority=0, enabled=False),
        make_route("primary", b, priority=1, is_default=True),
    )
    routing = make_routing()
    assert first_route(balancer, routing.selection) == (balancer.routes[1], "ordered")
    plan = plan_attempts(balancer, routing)
    assert plan.reason == "ordered"
    assert walk(plan) == [("primary", "b")]


def test_attempt_order_is_first_route_then_remaining_by_priority() -> None:
    routes = [
        make_route("zeta", make_instance("z"), priority=2),
        make_route("alpha", make_instance("al"), priority=2),
        make_route("main", make_instance("m"), priority=1, is_default=True),
        make_route("billing", make_instance("bi"), priority=3),
    ]
    balancer = make_balancer(*routes, budget=10)
    chosen = balancer.route_named("billing")
    assert [r.name for r in route_order(balancer, chosen)] == ["billing", "main", "alpha", "zeta"]

    plan = plan_attempts(balancer, make_routing(), first=chosen, reason="classifier")
    assert plan.reason == "classifier"
    assert [route for route, _ in walk(plan)] == ["billing", "main", "alpha", "zeta"]


def test_disabled_routes_are_not_failed_over_to() -> None:
    balancer = make_balancer(
        make_route("primary", make_instance("a"), priority=1, is_default=True),
        make_route("parked", make_instance("b"), priority=2, enabled=False),
        make_route("fallback", make_instance("c"), priority=3),
    )
    assert walk(plan_attempts(balancer, make_routing())) == [("primary", "a"), ("fallback", "c")]


def test_a_route_named_explicitly_is_attempted_even_when_disabled() -> None:
    parked = make_route("parked", make_instance("b"), priority=2, enabled=False)
    balancer = make_balancer(make_route("primary", make_instance("a"), is_default=True), parked)
    plan = plan_attempts(balancer, make_routing(), first=parked, reason="override")
    assert walk(plan) == [("parked", "b"), ("primary", "a")]


def test_failed_member_is_excluded_and_the_pick_repeats_within_the_route() -> None:
    x, y, z = make_instance("x"), make_instance("y"), make_instance("z")
    balancer = make_balancer(
        make_route("pool", make_group(x, y, policy="round_robin"), priority=1, is_default=True),
        make_route("fallback", z, priority=2),
        budget=10,
    )
    assert walk(plan_attempts(balancer, make_routing())) == [
        ("pool", "x"),
        ("pool", "y"),
        ("fallback", "z"),
    ]


def test_tiers_are_walked_before_the_next_route() -> None:
    p, b, f = make_instance("p"), make_instance("b"), make_instance("f")
    group = make_group(make_member(b, priority=2), make_member(p, priority=1))
    balancer = make_balancer(
        make_route("main", group, priority=1, is_default=True),
        make_route("fallback", f, priority=2),
        budget=10,
    )
    assert walk(plan_attempts(balancer, make_routing())) == [
        ("main", "p"),
        ("main", "b"),
        ("fallback", "f"),
    ]


def test_budget_stops_attempts() -> None:
    balancer, _ = three_routes(budget=2)
    assert walk(plan_attempts(balancer, make_routing())) == [("primary", "a"), ("secondary", "b")]


def test_a_budget_below_one_still_allows_one_attempt() -> None:
    balancer, _ = three_routes(budget=0)
    assert len(walk(plan_attempts(balancer, make_routing()))) == 1


def test_instance_tried_once_per_request_across_routes() -> None:
    shared, other = make_instance("shared"), make_instance("other")
    balancer = make_balancer(
        make_route("one", make_group(shared), priority=1, is_default=True),
        make_route("two", make_group(shared, other), priority=2),
        budget=10,
    )
    assert walk(plan_attempts(balancer, make_routing())) == [("one", "shared"), ("two", "other")]


def test_cooling_route_is_skipped_without_spending_budget() -> None:
    balancer, (a, _, _) = three_routes(budget=1)
    routing = make_routing()
    trip(routing.health, a, routing.clock())
    plan = plan_attempts(balancer, routing)
    attempt = plan.next()
    assert attempt is not None
    assert (attempt.route.name, attempt.number, attempt.last_resort) == ("secondary", 1, False)


def test_everything_cooling_tries_least_recently_failed() -> None:
    balancer, (a, b, c) = three_routes(budget=10)
    clock = FakeClock()
    routing = make_routing(clock)
    trip(routing.health, b, clock.now)
    trip(routing.health, a, clock.advance(1))
    trip(routing.health, c, clock.advance(1))

    plan = plan_attempts(balancer, routing)
    attempt = plan.next()
    assert attempt is not None
    assert attempt.instance is b
    assert attempt.last_resort
    plan.failed()
    assert plan.next() is None  # once, not a tour of every cooling instance


def test_a_last_resort_success_ends_the_cooldown() -> None:
    balancer, (a, b, c) = three_routes()
    routing = make_routing()
    for instance in (a, b, c):
        trip(routing.health, instance, routing.clock())
    plan = plan_attempts(balancer, routing)
    attempt = plan.next()
    assert attempt is not None
    plan.succeeded(latency_s=0.4)
    assert routing.health.state(attempt.instance.pk, routing.clock()).status == "healthy"


def test_nothing_servable_plans_no_attempt() -> None:
    balancer = make_balancer(
        make_route("main", make_group(make_member(make_instance("a"), weight=0)), is_default=True)
    )
    plan = plan_attempts(balancer, make_routing())
    assert plan.next() is None
    assert plan.attempts == []


def test_no_enabled_route_plans_no_attempt() -> None:
    balancer = make_balancer(make_route("main", make_instance("a"), is_default=True, enabled=False))
    plan = plan_attempts(balancer, make_routing())
    assert plan.reason == "no_enabled_route"
    assert plan.next() is None


def test_success_ends_the_plan() -> None:
    balancer, _ = three_routes()
    plan = plan_attempts(balancer, make_routing())
    assert plan.next() is not None
    plan.succeeded()
    assert plan.next() is None
    assert [(a.instance.instance_id, outcome) for a, outcome in plan.log] == [("a", "succeeded")]


def test_next_with_an_open_attempt_counts_it_as_failed() -> None:
    balancer, (a, _, _) = three_routes()
    routing = make_routing()
    plan = plan_attempts(balancer, routing)
    plan.next()
    second = plan.next()
    assert second is not None and second.number == 2
    assert plan.log[0][1] == "failed"
    assert routing.health.state(a.pk, routing.clock()).consecutive_failures == 1


def test_the_plan_reports_outcomes_to_health_and_load() -> None:
    balancer, (a, b, _) = three_routes()
    routing = make_routing()
    plan = plan_attempts(balancer, routing)
    plan.next()
    assert routing.load.in_flight(a.pk) == 1
    plan.failed(retry_after=30)
    assert routing.load.in_flight(a.pk) == 0
    assert routing.health.state(a.pk, routing.clock()).cooldown_until == routing.clock() + 30
    plan.next()
    plan.succeeded(latency_s=0.25)
    assert routing.load.in_flight(b.pk) == 0
    assert routing.load.latency(b.pk) == 0.25
    assert routing.load.latency(a.pk) is None  # failures are not latency samples


def test_abandoned_releases_the_trial_and_the_in_flight_slot() -> None:
    balancer, (a, _, _) = three_routes()
    clock = FakeClock()
    routing = make_routing(clock)
    trip(routing.health, a, clock.now)
    clock.advance(5)  # half-open
    plan = plan_attempts(balancer, routing)
    attempt = plan.next()
    assert attempt is not None and attempt.instance is a
    assert not routing.health.is_eligible(a.pk, clock.now)  # the trial is claimed
    plan.abandoned()
    assert routing.health.is_eligible(a.pk, clock.now)
    assert routing.load.in_flight(a.pk) == 0
    assert plan.next() is None


def test_weighted_mode_spreads_first_route_by_route_weight() -> None:
    balancer, _ = three_routes(mode="weighted")  # weights 3, 1, 0
    routing = make_routing()
    firsts = []
    for _ in range(8):
        plan = plan_attempts(balancer, routing)
        assert plan.reason == "weighted"
        attempt = plan.next()
        assert attempt is not None
        firsts.append(attempt.route.name)
        plan.succeeded()
    assert Counter(firsts) == {"primary": 6, "secondary": 2}
    assert firsts[:4] == ["primary", "primary", "secondary", "primary"]


def test_weighted_mode_fails_over_by_priority_after_the_first_route() -> None:
    balancer, _ = three_routes(mode="weighted")
    routing = make_routing()
    plan_attempts(balancer, routing).next()  # primary
    plan_attempts(balancer, routing).next()  # primary
    plan = plan_attempts(balancer, routing)  # secondary's turn
    assert [route for route, _ in walk(plan)] == ["secondary", "primary", "tertiary"]


def test_intent_classifier_without_a_decision_uses_the_default_route() -> None:
    a, b = make_instance("a"), make_instance("b")
    balancer = make_balancer(
        make_route("chat", a, priority=1),
        make_route("general", b, priority=5, is_default=True),
        mode="intent_classifier",
    )
    plan = plan_attempts(balancer, make_routing())
    assert plan.reason == "default"
    assert plan.decided_route is balancer.route_named("general")


# -- latency threshold and hedging: attempts kept open, then overtaken ---------------------------


def test_next_keep_open_hands_out_the_next_attempt_while_the_slow_one_stays_in_flight() -> None:
    balancer, (a, b, _) = three_routes()
    routing = make_routing()
    plan = plan_attempts(balancer, routing)
    slow = plan.next()
    assert slow is not None and slow.instance is a
    hedge = plan.next(keep_open=True)
    assert hedge is not None and hedge.instance is b
    assert plan.open_attempts == (slow, hedge)
    assert routing.load.in_flight(a.pk) == 1 and routing.load.in_flight(b.pk) == 1
    # The hedge wins: the slow one is overtaken (no verdict), the winner succeeds.
    plan.overtaken(slow)
    plan.succeeded(latency_s=0.2, attempt=hedge)
    assert plan.open_attempts == ()
    assert [(attempt.instance.instance_id, outcome) for attempt, outcome in plan.log] == [
        ("a", "overtaken"),
        ("b", "succeeded"),
    ]
    assert routing.load.in_flight(a.pk) == 0 and routing.load.in_flight(b.pk) == 0
    now = routing.clock()
    assert routing.health.state(a.pk, now).consecutive_failures == 0  # slow is not broken
    assert routing.health.is_eligible(a.pk, now)
    assert routing.load.latency(a.pk) is None  # a lost race says nothing about its latency
    assert plan.next() is None  # answered


def test_an_attempt_cut_at_its_threshold_feeds_its_latency_as_a_lower_bound() -> None:
    balancer, (a, b, _) = three_routes()
    routing = make_routing()
    plan = plan_attempts(balancer, routing)
    slow = plan.next()
    following = plan.next(keep_open=True)
    assert slow is not None and following is not None
    plan.overtaken(slow, latency_s=0.5)
    assert plan.current is following
    assert routing.load.latency(a.pk) == 0.5
    plan.failed(attempt=following)
    third = plan.next()
    assert third is not None and third.instance.instance_id == "c"
    assert routing.health.state(b.pk, routing.clock()).consecutive_failures == 1


def test_next_without_keep_open_fails_every_open_attempt_and_the_budget_counts_hedges() -> None:
    balancer, (a, b, _) = three_routes(budget=2)
    routing = make_routing()
    plan = plan_attempts(balancer, routing)
    first = plan.next()
    second = plan.next(keep_open=True)
    assert first is not None and second is not None
    assert plan.next(keep_open=True) is None  # the budget of 2 is spent by the race
    assert plan.open_attempts == (first, second)
    assert plan.next() is None
    assert plan.open_attempts == ()
    assert [outcome for _, outcome in plan.log] == ["failed", "failed"]
    now = routing.clock()
    assert routing.health.state(a.pk, now).consecutive_failures == 1
    assert routing.health.state(b.pk, now).consecutive_failures == 1
