"""The soak harness's own parts (scripts/soak.py): its settings, the flapping upstream, and the
verdict it draws from what the requests saw. No servers broken here: `make soak-smoke` runs the
whole thing, and `make soak` measures."""

from __future__ import annotations

import time

import httpx
import pytest

from scripts.soak import (
    FAULTS,
    FlappingUpstream,
    Outcome,
    PhaseLog,
    Plan,
    exit_status,
    make_plan,
    parse_args,
    phase_row,
    render_table,
    stream_complete,
)


def plan(**overrides: object) -> Plan:
    args = parse_args(["--smoke"])
    base = make_plan(args)
    return Plan(**{**base.__dict__, **overrides})


def ok(
    phase: str,
    n: int,
    started: float,
    *,
    key: str = "client",
    route: str = "fallback",
    attempts: int = 1,
    latency: float = 0.02,
) -> Outcome:
    return Outcome(
        phase=phase,
        request_id=f"soak-{n:07d}",
        key=key,
        started=started,
        ended=started + latency,
        status=200,
        route=route,
        attempts=attempts,
    )


def failed(
    phase: str, n: int, started: float, *, status: int | None = 502, key: str = "client"
) -> Outcome:
    return Outcome(
        phase=phase,
        request_id=f"soak-{n:07d}",
        key=key,
        started=started,
        ended=started + 0.05,
        status=status,
        error="boom",
    )


def every(outcomes: list[Outcome]) -> set[str]:
    return {o.request_id for o in outcomes if o.ok}


# ---------------------------------------------------------------- settings


def test_smoke_setting_is_a_few_seconds_per_fault_and_the_full_one_longer() -> None:
    smoke = make_plan(parse_args(["--smoke"]))
    full = make_plan(parse_args([]))
    assert smoke.faults == full.faults == FAULTS
    assert smoke.seconds == 6 and full.seconds == 25
    assert smoke.outage < full.outage
    # Bounded: at most ~10% over the paced count, whatever the gateway does.
    assert smoke.max_requests <= smoke.rate * sum(smoke.phase_seconds(f) for f in FAULTS) * 1.1 + 10
    assert sum(smoke.phase_seconds(f) for f in FAULTS) < 75  # < 2 minutes with set-up and flush


def test_faults_run_in_the_order_given_and_unknown_ones_are_refused() -> None:
    assert make_plan(parse_args(["--smoke", "--faults", "redis-hang,baseline"])).faults == (
        "redis-hang",
        "baseline",
    )
    with pytest.raises(SystemExit, match="unknown fault"):
        make_plan(parse_args(["--faults", "baseline,meteor-strike"]))


def test_a_phase_too_short_to_recover_from_its_outage_is_refused() -> None:
    with pytest.raises(SystemExit, match="no time to recover"):
        make_plan(parse_args(["--seconds", "4", "--outage", "3"]))


def test_the_config_change_comes_before_the_workers_are_replaced() -> None:
    # A replaced worker starts with fresh database connections: a config change applied only by
    # new workers would hide a poller broken by the database restart.
    assert (
        FAULTS.index("postgres-restart")
        < FAULTS.index("config-change")
        < FAULTS.index("worker-sigterm")
    )
    assert FAULTS.index("key-revocation") < FAULTS.index("worker-sigkill")


# ---------------------------------------------------------------- verdicts


def test_a_clean_phase_passes() -> None:
    outcomes = [ok("redis-kill", n, n * 0.1) for n in range(20)]
    row = phase_row(
        PhaseLog("redis-kill", 0.0, 2.0, fault_at=0.5, fault_end=1.0),
        outcomes,
        every(outcomes),
        plan(),
    )
    assert (row.requests, row.accepted, row.client_errors, row.events, row.lost) == (
        20,
        20,
        0,
        20,
        0,
    )
    assert row.recovery_s == 0.0 and not row.problems
    assert exit_status([row]) == 0


def test_an_accepted_request_without_a_usage_event_fails_the_soak() -> None:
    outcomes = [ok("postgres-restart", n, n * 0.1) for n in range(10)]
    row = phase_row(
        PhaseLog("postgres-restart", 0.0, 1.0, fault_at=0.2),
        outcomes,
        every(outcomes) - {"soak-0000003"},
        plan(),
    )
    assert row.lost == 1
    assert row.problems == ("1 accepted requests without a usage event (allowed 0)",)
    assert exit_status([row]) == 1


def test_recovery_is_the_end_of_the_last_failed_request_after_the_fault() -> None:
    outcomes = [
        ok("redis-hang", 0, 0.0),
        failed("redis-hang", 1, 1.0),
        failed("redis-hang", 2, 1.5),
        ok("redis-hang", 3, 2.0),
    ]
    row = phase_row(
        PhaseLog("redis-hang", 0.0, 3.0, fault_at=0.5), outcomes, every(outcomes), plan()
    )
    assert row.recovery_s == pytest.approx(1.05)
    assert row.client_errors == 2
    assert row.problems == ("2 client errors (allowed 0)",)


def test_a_phase_whose_requests_never_succeed_again_says_so() -> None:
    outcomes = [ok("redis-kill", 0, 0.0), failed("redis-kill", 1, 1.0, status=None)]
    row = phase_row(
        PhaseLog("redis-kill", 0.0, 2.0, fault_at=0.5), outcomes, every(outcomes), plan()
    )
    assert row.recovery_s is None
    assert "requests did not succeed again within the phase" in row.problems
    assert "| never |" in render_table([row])


def test_a_sigkill_may_fail_the_requests_in_flight_and_lose_the_killed_workers_buffer() -> None:
    p = plan(concurrency=4, flush_seconds=1.0)
    outcomes = [ok("worker-sigkill", n, n * 0.25) for n in range(20)]  # 0 .. 4.75 s
    outcomes += [failed("worker-sigkill", 100 + n, 3.0, status=None) for n in range(3)]
    kill = PhaseLog("worker-sigkill", 0.0, 5.0, fault_at=3.0, fault_end=3.5)
    # 8 requests answered in the 2 s before the kill: 5 of their events are missing.
    events = every(outcomes) - {f"soak-{n:07d}" for n in (5, 6, 7, 8, 9)}
    row = phase_row(kill, outcomes, events, p)
    assert (row.allowed_errors, row.allowed_lost) == (4, 8)
    assert (row.client_errors, row.lost) == (3, 5)
    assert not row.problems
    # The same losses under a SIGTERM (a clean shutdown) fail.
    term = phase_row(
        PhaseLog("worker-sigterm", 0.0, 5.0, fault_at=3.0),
        [o.__class__(**{**o.__dict__, "phase": "worker-sigterm"}) for o in outcomes],
        events,
        p,
    )
    assert len(term.problems) == 2


def test_a_revoked_keys_401s_are_expected_and_the_time_to_its_first_401_is_measured() -> None:
    p = plan(effect_limit=3.0)
    phase = "key-revocation"
    outcomes = [
        ok(phase, 1, 0.5, key="victim"),
        ok(phase, 2, 1.2, key="victim"),  # revoked at 1.0
        failed(phase, 3, 1.9, status=401, key="victim"),
        failed(phase, 4, 2.5, status=401, key="victim"),
        ok(phase, 5, 2.6),
        failed(phase, 6, 0.2, status=401, key="victim"),
    ]  # a 401 before: an error
    revocation = PhaseLog(phase, 0.0, 3.0, fault_at=1.0)
    row = phase_row(revocation, outcomes, every(outcomes), p, revoked_at=1.0)
    assert row.recovery_s == pytest.approx(0.9)
    assert row.client_errors == 1 and row.accepted == 3
    assert row.problems == ("1 client errors (allowed 0)",)

    still_200 = [ok(phase, 1, 1.5, key="victim"), ok(phase, 2, 2.5, key="victim")]
    never = phase_row(revocation, still_200, every(still_200), p, revoked_at=1.0)
    assert never.recovery_s is None
    assert never.problems == ("the revocation had not taken effect by the end of the phase",)

    slow = [ok(phase, 1, 4.5, key="victim"), failed(phase, 2, 4.6, status=401, key="victim")]
    too_late = phase_row(revocation, slow, every(slow), p, revoked_at=1.0)
    assert too_late.problems == ("the revocation took 3.60 s (allowed 3 s)",)


def test_a_route_change_is_in_force_once_no_request_tries_the_disabled_route() -> None:
    phase = "config-change"
    outcomes = [
        ok(phase, 1, 0.5, route="primary"),
        ok(phase, 2, 1.1, route="primary"),
        ok(phase, 3, 1.3, attempts=2),  # primary tried first, failed over: still in force
        ok(phase, 4, 1.6),
        ok(phase, 5, 2.0),
        ok(phase, 6, 4.5, route="primary"),
    ]  # after the route was enabled again: not counted
    change = PhaseLog(phase, 0.0, 5.0, fault_at=1.0, fault_end=4.0)
    row = phase_row(change, outcomes, every(outcomes), plan())
    assert row.recovery_s == pytest.approx(0.6)
    assert not row.problems


def test_a_fault_that_could_not_be_injected_fails_its_row() -> None:
    outcomes = [ok("config-change", 1, 0.5)]
    row = phase_row(
        PhaseLog("config-change", 0.0, 2.0, failed="HarnessError: PATCH refused"),
        outcomes,
        every(outcomes),
        plan(),
    )
    assert row.problems == ("fault not injected: HarnessError: PATCH refused",)


def test_a_stream_counts_as_answered_only_when_it_reaches_done_without_an_error_event() -> None:
    chunk = 'data: {"choices": [{"delta": {"content": "Noted"}}]}\n\n'
    assert stream_complete(chunk + "data: [DONE]\n\n")
    assert not stream_complete(chunk)  # cut after its first event
    assert not stream_complete(
        chunk + 'data: {"error": {"message": "upstream went away"}}\n\ndata: [DONE]\n\n'
    )


# ---------------------------------------------------------------- the flapping upstream


def test_the_flapping_upstream_breaks_only_the_primary_and_keeps_the_fallback_healthy() -> None:
    upstream = FlappingUpstream(period=0.6, broken=0.3, error_share=0.0).start()
    try:
        body = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
        streamed = httpx.post(
            upstream.base_url("steady") + "/chat/completions", json={**body, "stream": True}
        )
        assert stream_complete(streamed.text) and '"usage"' in streamed.text
        seen: dict[str, set[int]] = {"flappy": set(), "steady": set()}
        started = time.monotonic()
        # At least two whole cycles, however slowly a loaded machine answers.
        while time.monotonic() - started < 1.5 or (
            seen["flappy"] != {200, 503} and time.monotonic() - started < 10
        ):
            with httpx.Client(timeout=5) as client:
                for model in seen:
                    seen[model].add(
                        client.post(
                            upstream.base_url(model) + "/chat/completions", json=body
                        ).status_code
                    )
                    seen[model].add(client.get(upstream.base_url(model) + "/models").status_code)
        assert seen == {"flappy": {200, 503}, "steady": {200}}
    finally:
        upstream.stop()
