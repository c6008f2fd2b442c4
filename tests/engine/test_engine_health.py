from __future__ import annotations

import pytest

from gateway.engine.health import HealthPolicy, HealthTracker, HealthView

T0 = 1000.0
PK = 1


def tripped(tracker: HealthTracker | None = None, now: float = T0) -> HealthTracker:
    tracker = tracker or HealthTracker()
    for _ in range(3):
        tracker.record_failure(PK, now)
    return tracker


def test_an_unknown_instance_is_healthy() -> None:
    tracker = HealthTracker()
    assert tracker.is_eligible(PK, T0)
    assert tracker.state(PK, T0) == HealthView("healthy", None, 0, None, 0)


def test_three_consecutive_failures_trip_the_circuit() -> None:
    tracker = HealthTracker()
    tracker.record_failure(PK, T0)
    tracker.record_failure(PK, T0 + 1)
    assert tracker.is_eligible(PK, T0 + 1)
    tracker.record_failure(PK, T0 + 2)
    assert not tracker.is_eligible(PK, T0 + 2)
    view = tracker.state(PK, T0 + 2)
    assert view.status == "cooling"
    assert view.cooldown_until == T0 + 2 + 5.0
    assert view.consecutive_failures == 3
    assert view.last_failure_at == T0 + 2
    assert view.trips == 1


def test_a_success_resets_the_consecutive_count() -> None:
    tracker = HealthTracker()
    for _ in range(3):  # 6 failures out of 9: under the window's 10-sample minimum
        tracker.record_failure(PK, T0)
        tracker.record_failure(PK, T0)
        tracker.record_success(PK, T0)
        assert tracker.state(PK, T0).consecutive_failures == 0
    assert tracker.is_eligible(PK, T0)


def test_failure_rate_over_the_window_trips() -> None:
    tracker = HealthTracker()
    # Alternating: never two failures in a row, but half of the outcomes fail.
    for i in range(9):
        if i % 2:
            tracker.record_success(PK, T0)
        else:
            tracker.record_failure(PK, T0)
    assert tracker.is_eligible(PK, T0)  # 9 samples: under the minimum of 10
    tracker.record_success(PK, T0)
    assert tracker.is_eligible(PK, T0)  # 5 of 10 failed, but the last was a success
    tracker.record_failure(PK, T0)  # 6 of 11
    assert tracker.state(PK, T0).status == "cooling"


def test_failure_rate_looks_only_at_the_last_outcomes() -> None:
    tracker = HealthTracker(HealthPolicy(failure_threshold=100))
    for _ in range(9):
        tracker.record_failure(PK, T0)
        tracker.record_success(PK, T0)
        tracker.record_success(PK, T0)
    # 9 failures out of 27, and of the last 20: 6 or 7 failed, under 50%.
    assert tracker.is_eligible(PK, T0)
    assert tracker.success_rate(PK) == pytest.approx(14 / 20)


def test_retry_after_sets_cooldown_length() -> None:
    tracker = HealthTracker()
    tracker.record_failure(PK, T0, retry_after=42)  # one 429 is enough: the upstream said so
    view = tracker.state(PK, T0)
    assert view.status == "cooling"
    assert view.cooldown_until == T0 + 42
    assert not tracker.is_eligible(PK, T0 + 41.9)
    assert tracker.is_eligible(PK, T0 + 42)


def test_retry_after_zero_is_an_ordinary_failure() -> None:
    tracker = HealthTracker()
    tracker.record_failure(PK, T0, retry_after=0)
    assert tracker.is_eligible(PK, T0)


def test_retry_after_is_capped() -> None:
    tracker = HealthTracker()
    tracker.record_failure(PK, T0, retry_after=3600)
    assert tracker.state(PK, T0).cooldown_until == T0 + 300


def test_retry_after_while_cooling_extends_the_cooldown() -> None:
    tracker = tripped()
    tracker.record_failure(PK, T0 + 1, retry_after=60)
    assert tracker.state(PK, T0 + 1).cooldown_until == T0 + 61


def test_cooldown_ends_in_half_open() -> None:
    tracker = tripped()
    assert tracker.state(PK, T0 + 4.9).status == "cooling"
    assert tracker.state(PK, T0 + 5).status == "half_open"
    assert tracker.is_eligible(PK, T0 + 5)


def test_half_open_allows_one_trial() -> None:
    tracker = tripped()
    now = T0 + 5
    assert tracker.is_eligible(PK, now)
    tracker.begin_attempt(PK, now)
    assert not tracker.is_eligible(PK, now)  # the others wait for the trial's verdict
    assert tracker.state(PK, now).trial_in_flight


def test_a_lost_trial_expires() -> None:
    tracker = tripped()
    tracker.begin_attempt(PK, T0 + 5)
    assert not tracker.is_eligible(PK, T0 + 5 + 119)
    assert tracker.is_eligible(PK, T0 + 5 + 120)


def test_release_frees_the_trial() -> None:
    tracker = tripped()
    tracker.begin_attempt(PK, T0 + 5)
    tracker.release(PK)
    assert tracker.is_eligible(PK, T0 + 5)


def test_trial_success_closes_the_circuit() -> None:
    tracker = tripped()
    tracker.begin_attempt(PK, T0 + 5)
    tracker.record_success(PK, T0 + 6, latency_s=0.2)
    view = tracker.state(PK, T0 + 6)
    assert view.status == "healthy"
    assert view.trips == 0
    assert view.cooldown_until is None
    assert tracker.success_rate(PK) == 1.0  # a clean slate: old failures do not re-trip it


def test_repeated_trips_back_off_exponentially() -> None:
    tracker = tripped()
    now = T0
    lengths = []
    for _ in range(8):
        until = tracker.state(PK, now).cooldown_until
        assert until is not None
        lengths.append(until - now)
        now = until  # half-open
        tracker.begin_attempt(PK, now)
        tracker.record_failure(PK, now)  # the trial fails
    assert lengths == [5, 10, 20, 40, 80, 160, 300, 300]

    tracker.begin_attempt(PK, now + 300)
    tracker.record_success(PK, now + 300)  # recovery resets the backoff
    tripped(tracker, now + 301)
    assert tracker.state(PK, now + 301).cooldown_until == now + 301 + 5


def test_success_from_before_the_trip_does_not_end_the_cooldown() -> None:
    tracker = tripped()
    tracker.record_success(PK, T0 + 1)  # a request that was already in flight
    assert tracker.state(PK, T0 + 1).status == "cooling"


def test_on_change_reports_trip_trial_failure_and_recovery() -> None:
    changes: list[tuple[int, str, int]] = []
    tracker = HealthTracker(
        on_change=lambda pk, view: changes.append((pk, view.status, view.trips))
    )
    tracker.record_success(PK, T0)
    tracker.record_failure(PK, T0)
    tracker.record_failure(PK, T0)
    assert changes == []
    tracker.record_failure(PK, T0)
    tracker.begin_attempt(PK, T0 + 5)
    tracker.record_failure(PK, T0 + 5)
    tracker.begin_attempt(PK, T0 + 15)
    tracker.record_success(PK, T0 + 15)
    assert changes == [(PK, "cooling", 1), (PK, "cooling", 2), (PK, "healthy", 0)]


def test_apply_remote_takes_the_later_cooldown() -> None:
    tracker = tripped()  # cooling until T0 + 5
    tracker.apply_remote(PK, cooldown_until=T0 + 3, trips=1, last_failure_at=T0 - 10)
    assert tracker.state(PK, T0).cooldown_until == T0 + 5
    tracker.apply_remote(PK, cooldown_until=T0 + 50, trips=4, last_failure_at=T0 + 1)
    view = tracker.state(PK, T0 + 2)
    assert view.cooldown_until == T0 + 50
    assert view.trips == 4
    assert view.last_failure_at == T0 + 1


def test_apply_remote_cools_a_healthy_instance_silently() -> None:
    changes: list[int] = []
    tracker = HealthTracker(on_change=lambda pk, view: changes.append(pk))
    tracker.apply_remote(PK, cooldown_until=T0 + 30, trips=2, last_failure_at=T0)
    assert not tracker.is_eligible(PK, T0 + 29)
    assert tracker.is_eligible(PK, T0 + 30)
    assert changes == []  # not our news: no echo back to the other processes


def test_apply_remote_is_harmless_to_repeat_after_recovery() -> None:
    tracker = HealthTracker()
    tracker.apply_remote(PK, cooldown_until=T0 + 30, trips=1, last_failure_at=T0)
    tracker.begin_attempt(PK, T0 + 30)
    tracker.record_success(PK, T0 + 31)
    tracker.apply_remote(PK, cooldown_until=T0 + 30, trips=1, last_failure_at=T0)
    assert tracker.state(PK, T0 + 31).status == "healthy"


def test_apply_remote_ignores_a_cooldown_already_over() -> None:
    tracker = HealthTracker()
    tracker.apply_remote(PK, cooldown_until=T0 - 1, trips=1, last_failure_at=T0 - 20, now=T0)
    view = tracker.state(PK, T0)
    assert view.status == "healthy"
    assert view.last_failure_at == T0 - 20


def test_least_recently_failed_prefers_never_failed_then_the_oldest_failure() -> None:
    tracker = HealthTracker()
    tracker.record_failure(1, T0 + 5)
    tracker.record_failure(2, T0 + 1)
    tracker.record_failure(3, T0 + 9)
    assert tracker.least_recently_failed([1, 2, 3]) == 2
    assert tracker.least_recently_failed([1, 3, 4]) == 4
    assert tracker.least_recently_failed([]) is None


def test_reset_forgets_the_instance() -> None:
    tracker = tripped()
    tracker.reset(PK)
    assert tracker.state(PK, T0) == HealthView("healthy", None, 0, None, 0)


def test_a_dead_instance_tripping_for_days_keeps_the_capped_cooldown() -> None:
    # 2.0 ** 1025 overflows a float: thousands of failed trials must not raise OverflowError.
    policy = HealthPolicy()
    assert policy.cooldown_length(trips=5000) == policy.backoff_cap
    assert policy.cooldown_length(trips=1) == policy.backoff_base
