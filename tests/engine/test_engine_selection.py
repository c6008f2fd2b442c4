from __future__ import annotations

import random
from collections import Counter

import pytest
from engine_factories import make_group, make_instance, make_member, trip

from gateway.engine.health import HealthTracker
from gateway.engine.selection import LoadStats, SelectionState

NOW = 1000.0


def picks(state: SelectionState, group, n: int, **kwargs) -> list[str]:
    kwargs.setdefault("now", NOW)
    chosen = [state.pick(group, **kwargs) for _ in range(n)]
    return [m.instance.instance_id if m else "-" for m in chosen]


def test_smooth_wrr_is_deterministic_and_proportional() -> None:
    a, b, c = make_instance("a"), make_instance("b"), make_instance("c")
    group = make_group(make_member(a, weight=5), make_member(b, weight=1), make_member(c, weight=1))

    first = picks(SelectionState(), group, 7)
    assert first == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's smooth spread
    assert picks(SelectionState(), group, 7) == first

    counts = Counter(picks(SelectionState(), group, 700))
    assert counts == {"a": 500, "b": 100, "c": 100}


def test_round_robin_rotates_through_the_tier() -> None:
    group = make_group(
        make_instance("a"), make_instance("b"), make_instance("c"), policy="round_robin"
    )
    assert picks(SelectionState(), group, 6) == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_skips_an_excluded_member_without_losing_its_place() -> None:
    a, b, c = make_instance("a"), make_instance("b"), make_instance("c")
    group = make_group(a, b, c, policy="round_robin")
    state = SelectionState()
    assert picks(state, group, 1) == ["a"]
    assert picks(state, group, 1, excluded={b.pk}) == ["c"]
    assert picks(state, group, 2) == ["a", "b"]


def test_weight_zero_drains_a_member() -> None:
    a, b = make_instance("a"), make_instance("b")
    for policy in ("weighted_round_robin", "round_robin", "random", "least_latency", "least_busy"):
        group = make_group(make_member(a, weight=0), make_member(b, weight=3), policy=policy)
        assert set(picks(SelectionState(random.Random(1)), group, 20)) == {"b"}


def test_disabled_member_or_instance_is_never_picked() -> None:
    off_member = make_member(make_instance("off_member"), enabled=False)
    off_instance = make_member(make_instance("off_instance", enabled=False))
    group = make_group(off_member, off_instance, make_member(make_instance("on")))
    assert set(picks(SelectionState(), group, 10)) == {"on"}


def test_disabled_group_picks_nothing() -> None:
    group = make_group(make_instance("a"), enabled=False)
    assert SelectionState().pick(group, now=NOW) is None


def test_lower_tier_waits_while_the_first_tier_has_an_eligible_member() -> None:
    group = make_group(
        make_member(make_instance("primary"), priority=1, weight=1),
        make_member(make_instance("backup"), priority=2, weight=100),
    )
    assert set(picks(SelectionState(), group, 20)) == {"primary"}


def test_it_moves_to_the_next_tier_when_the_first_is_exhausted() -> None:
    p1, p2 = make_instance("p1"), make_instance("p2")
    b1, b2 = make_instance("b1"), make_instance("b2")
    group = make_group(
        make_member(b1, priority=5),
        make_member(p1, priority=1),
        make_member(b2, priority=5),
        make_member(p2, priority=1),
        policy="round_robin",
    )
    state = SelectionState()
    assert set(picks(state, group, 4)) == {"p1", "p2"}
    assert set(picks(state, group, 4, excluded={p1.pk, p2.pk})) == {"b1", "b2"}
    assert picks(state, group, 1, excluded={p1.pk, p2.pk, b1.pk, b2.pk}) == ["-"]


def test_cooling_members_leave_the_tier_to_the_next_tier() -> None:
    primary, backup = make_instance("primary"), make_instance("backup")
    group = make_group(make_member(primary, priority=1), make_member(backup, priority=2))
    health = HealthTracker()
    trip(health, primary, NOW)
    assert picks(SelectionState(), group, 3, health=health) == ["backup"] * 3
    # Cooldown over: the primary is half-open and wins its tier back for a trial.
    assert picks(SelectionState(), group, 1, health=health, now=NOW + 10) == ["primary"]


def test_random_is_weighted_and_reproducible_with_a_seed() -> None:
    group = make_group(
        make_member(make_instance("a"), weight=3),
        make_member(make_instance("b"), weight=1),
        policy="random",
    )
    first = picks(SelectionState(random.Random(42)), group, 4000)
    assert picks(SelectionState(random.Random(42)), group, 4000) == first
    share = Counter(first)["a"] / 4000
    assert share == pytest.approx(0.75, abs=0.03)


def test_least_latency_measures_new_members_first_then_picks_the_fastest() -> None:
    slow, fast, new = make_instance("slow"), make_instance("fast"), make_instance("new")
    group = make_group(slow, fast, new, policy="least_latency")
    load = LoadStats()
    load.observe(slow.pk, 2.0)
    load.observe(fast.pk, 0.3)
    state = SelectionState()
    assert picks(state, group, 1, load=load) == ["new"]
    load.observe(new.pk, 0.9)
    assert picks(state, group, 3, load=load) == ["fast"] * 3


def test_least_busy_picks_fewest_in_flight_and_breaks_ties_round_robin() -> None:
    a, b, c = make_instance("a"), make_instance("b"), make_instance("c")
    group = make_group(a, b, c, policy="least_busy")
    load = LoadStats()
    state = SelectionState()
    assert picks(state, group, 3, load=load) == ["a", "b", "c"]  # all idle: rotate
    load.begin(a.pk)
    load.begin(b.pk)
    assert picks(state, group, 2, load=load) == ["c", "c"]
    load.begin(c.pk)
    load.begin(c.pk)
    assert picks(state, group, 2, load=load) == ["a", "b"]


def test_rotation_survives_a_snapshot_rebuild_of_the_same_group() -> None:
    a, b, c = make_instance("a"), make_instance("b"), make_instance("c")

    def build():
        return make_group(
            make_member(a, weight=5),
            make_member(b, weight=1),
            make_member(c, weight=1),
            name="pool",
        )

    state = SelectionState()
    sequence = picks(state, build(), 3) + picks(state, build(), 4)
    assert sequence == ["a", "a", "b", "a", "c", "a", "a"]


def test_excluded_instances_are_skipped() -> None:
    a, b = make_instance("a"), make_instance("b")
    group = make_group(a, b)
    assert set(picks(SelectionState(), group, 5, excluded={a.pk})) == {"b"}


def test_load_stats_ewma_weighs_the_newest_sample_by_alpha() -> None:
    load = LoadStats(alpha=0.5)
    assert load.latency(1) is None
    load.observe(1, 1.0)
    load.observe(1, 3.0)
    assert load.latency(1) == pytest.approx(2.0)
    load.end(1, 2.0)  # an end without a begin does not go negative
    assert load.in_flight(1) == 0
    assert load.latency(1) == pytest.approx(2.0)
    assert load.samples(1) == 3


def test_load_stats_counts_in_flight_requests() -> None:
    load = LoadStats()
    load.begin(7)
    load.begin(7)
    load.end(7)
    assert load.in_flight(7) == 1
