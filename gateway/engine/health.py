"""Passive health: a circuit breaker per instance, fed by real request outcomes.

DESIGN.md: consecutive failures or a failure rate over a window put an instance
into cooldown (a 429's ``Retry-After`` sets its length; repeated trips back off;
a half-open trial ends it). When every target of every route is cooling down,
try the least recently failed one rather than refusing outright.

The circuit of one instance::

    healthy ──trip──▶ cooling ──cooldown over──▶ half_open ──trial succeeds──▶ healthy
                         ▲                           │
                         └──────trial fails──────────┘   (next backoff)

- Trip: ``failure_threshold`` consecutive failures (3), or a failure rate of at
  least ``window_failure_rate`` (50%) over the last ``window_size`` outcomes (20)
  once ``window_min_samples`` (10) are in, or one failure carrying a
  ``Retry-After`` (the upstream told us exactly how long to stay away).
- Cooldown length: the ``Retry-After`` when given (capped at 300 s), else
  ``backoff_base * backoff_factor ** (trips - 1)`` capped at ``backoff_cap``:
  5, 10, 20, 40 … 300 s. ``trips`` counts trips since the last recovery.
- Half-open: one trial attempt at a time; everyone else sees the instance as
  ineligible. A trial claim that never reports back expires after
  ``trial_timeout`` so a lost request cannot bench an instance for good.
- An attempt begun while the circuit is open (a half-open trial, or the last
  resort when everything is cooling) is the trial: its success closes the
  circuit and resets the backoff, its failure re-opens it with the next backoff.
  Outcomes of requests that were already in flight when the circuit tripped do
  not end a cooldown.

Times are floats on the caller's clock (``time.monotonic()`` in production, a
fake in tests). Sharing across processes is the Django glue's job: it listens
through ``on_change`` and feeds what other processes learned to
``apply_remote``, converting times between clocks (monotonic clocks are not
comparable across processes: exchange wall-clock instants, convert on read).

Not thread-safe: one tracker per event loop.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

HEALTHY = "healthy"
COOLING = "cooling"
HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    failure_threshold: int = 3
    window_size: int = 20
    window_min_samples: int = 10
    window_failure_rate: float = 0.5
    backoff_base: float = 5.0
    backoff_factor: float = 2.0
    backoff_cap: float = 300.0
    retry_after_cap: float = 300.0
    trial_timeout: float = 120.0

    def cooldown_length(self, trips: int, retry_after: float | None = None) -> float:
        if retry_after is not None and retry_after > 0:
            return min(float(retry_after), self.retry_after_cap)
        # The exponent is capped as well as the result: a dead instance trips for days, and
        # 2.0 ** 1025 overflows a float (OverflowError) long before the cap would apply.
        exponent = min(max(trips - 1, 0), 64)
        return min(self.backoff_base * self.backoff_factor**exponent, self.backoff_cap)


@dataclass(frozen=True, slots=True)
class HealthView:
    """What one instance's circuit looks like at ``now``."""

    status: str  # healthy | cooling | half_open
    cooldown_until: float | None  # None when healthy
    consecutive_failures: int
    last_failure_at: float | None
    trips: int  # trips since the last recovery: the backoff step
    trial_in_flight: bool = False

    def at(self, now: float) -> HealthView:
        """The same circuit seen later: a cooldown that is over by ``now`` is half-open."""
        if self.cooldown_until is None:
            return self
        status = COOLING if now < self.cooldown_until else HALF_OPEN
        return self if status == self.status else replace(self, status=status)

    def merged(
        self, cooldown_until: float | None, trips: int, last_failure_at: float | None, now: float
    ) -> HealthView:
        """This view with a state another process published: ``HealthTracker.apply_remote``'s
        rule (the later cooldown wins; one already over at ``now`` changes nothing), on a copy."""
        view = self
        if last_failure_at is not None and (
            view.last_failure_at is None or last_failure_at > view.last_failure_at
        ):
            view = replace(view, last_failure_at=last_failure_at)
        if cooldown_until is None or cooldown_until <= now:
            return view
        if view.cooldown_until is not None and cooldown_until <= view.cooldown_until:
            return view
        return replace(
            view,
            status=COOLING,
            cooldown_until=cooldown_until,
            trips=max(view.trips, trips),
            trial_in_flight=False,
        )


class _Circuit:
    __slots__ = (
        "consecutive_failures",
        "cooldown_until",
        "is_open",
        "last_failure_at",
        "outcomes",
        "trial_started_at",
        "trips",
        "window_failures",
    )

    def __init__(self, window_size: int) -> None:
        self.is_open = False
        # Kept after recovery too: apply_remote uses it to ignore stale remote states.
        self.cooldown_until = -math.inf
        self.trips = 0
        self.consecutive_failures = 0
        self.last_failure_at: float | None = None
        self.outcomes: deque[bool] = deque(maxlen=window_size)  # True = failure
        self.window_failures = 0
        self.trial_started_at: float | None = None

    def push_outcome(self, failed: bool) -> None:
        outcomes = self.outcomes
        if len(outcomes) == outcomes.maxlen and outcomes[0]:
            self.window_failures -= 1
        outcomes.append(failed)
        if failed:
            self.window_failures += 1


ChangeCallback = Callable[[int, HealthView], None]


class HealthTracker:
    """Circuit state per instance pk. See the module docstring for the rules."""

    def __init__(
        self, policy: HealthPolicy | None = None, on_change: ChangeCallback | None = None
    ) -> None:
        self.policy = policy if policy is not None else HealthPolicy()
        self.on_change = on_change
        self._circuits: dict[int, _Circuit] = {}

    # -- reading ----------------------------------------------------------------

    def is_eligible(self, pk: int, now: float) -> bool:
        """May a new attempt go to this instance? (Healthy, or half-open with no trial out.)"""
        circuit = self._circuits.get(pk)
        if circuit is None or not circuit.is_open:
            return True
        if now < circuit.cooldown_until:
            return False
        started = circuit.trial_started_at
        return started is None or now - started >= self.policy.trial_timeout

    def state(self, pk: int, now: float) -> HealthView:
        circuit = self._circuits.get(pk)
        if circuit is None:
            return HealthView(HEALTHY, None, 0, None, 0)
        return self._view(circuit, now)

    def success_rate(self, pk: int) -> float:
        """Share of successes among the recent outcomes in the window (1.0 with none)."""
        circuit = self._circuits.get(pk)
        if circuit is None or not circuit.outcomes:
            return 1.0
        return 1.0 - circuit.window_failures / len(circuit.outcomes)

    def least_recently_failed(self, pks: Iterable[int]) -> int | None:
        """The candidate whose last failure is oldest (never failed counts as oldest).

        The last resort when no target of any route is eligible. Ties keep the
        candidates' order.
        """
        chosen: int | None = None
        chosen_at = float("inf")
        for pk in pks:
            circuit = self._circuits.get(pk)
            failed_at = -float("inf")
            if circuit is not None and circuit.last_failure_at is not None:
                failed_at = circuit.last_failure_at
            if chosen is None or failed_at < chosen_at:
                chosen, chosen_at = pk, failed_at
        return chosen

    # -- outcomes ---------------------------------------------------------------

    def begin_attempt(self, pk: int, now: float) -> None:
        """An attempt starts on this instance: if its circuit is open, this attempt is the trial."""
        circuit = self._circuits.get(pk)
        if circuit is not None and circuit.is_open:
            circuit.trial_started_at = now

    def release(self, pk: int) -> None:
        """The attempt ended without a verdict on the instance (cancelled): free the trial."""
        circuit = self._circuits.get(pk)
        if circuit is not None:
            circuit.trial_started_at = None

    def record_success(self, pk: int, now: float, latency_s: float | None = None) -> None:
        """The instance answered. ``latency_s`` is accepted for symmetry; LoadStats keeps
        latency."""
        circuit = self._circuits.get(pk)
        if circuit is None:
            circuit = self._circuits[pk] = _Circuit(self.policy.window_size)
        circuit.consecutive_failures = 0
        if not circuit.is_open:
            circuit.push_outcome(False)
            return
        if circuit.trial_started_at is None and now < circuit.cooldown_until:
            return  # a request from before the trip: the cooldown stands
        # The trial succeeded: recover with a clean slate.
        circuit.is_open = False
        circuit.trips = 0
        circuit.trial_started_at = None
        circuit.outcomes.clear()
        circuit.window_failures = 0
        self._changed(pk, circuit, now)

    def record_failure(self, pk: int, now: float, retry_after: float | None = None) -> None:
        """The attempt failed in a way that blames the instance. ``retry_after`` in seconds."""
        policy = self.policy
        if retry_after is not None and retry_after <= 0:
            retry_after = None  # "Retry-After: 0" asks for nothing: an ordinary failure
        circuit = self._circuits.get(pk)
        if circuit is None:
            circuit = self._circuits[pk] = _Circuit(policy.window_size)
        circuit.consecutive_failures += 1
        circuit.last_failure_at = now
        if circuit.is_open:
            if circuit.trial_started_at is not None or now >= circuit.cooldown_until:
                self._trip(pk, circuit, now, retry_after)  # the trial failed: next backoff
            elif retry_after is not None:
                # Still cooling; an upstream asking for longer gets longer.
                until = now + policy.cooldown_length(circuit.trips, retry_after)
                if until > circuit.cooldown_until:
                    circuit.cooldown_until = until
                    self._changed(pk, circuit, now)
            return
        circuit.push_outcome(True)
        outcomes = len(circuit.outcomes)
        if (
            retry_after is not None
            or circuit.consecutive_failures >= policy.failure_threshold
            or (
                outcomes >= policy.window_min_samples
                and circuit.window_failures >= policy.window_failure_rate * outcomes
            )
        ):
            self._trip(pk, circuit, now, retry_after)

    # -- sharing and operations -------------------------------------------------

    def apply_remote(
        self,
        pk: int,
        cooldown_until: float | None,
        trips: int,
        last_failure_at: float | None,
        *,
        now: float | None = None,
    ) -> None:
        """Merge a state another process published (times already on our clock).

        The later cooldown wins; a cooldown we already had (or one already over
        at ``now``, when given) changes nothing, so re-applying the same remote
        state is harmless. Does not call ``on_change``: it is not our news.
        """
        circuit = self._circuits.get(pk)
        if circuit is None:
            circuit = self._circuits[pk] = _Circuit(self.policy.window_size)
        if last_failure_at is not None and (
            circuit.last_failure_at is None or last_failure_at > circuit.last_failure_at
        ):
            circuit.last_failure_at = last_failure_at
        if cooldown_until is None or (now is not None and cooldown_until <= now):
            return
        if cooldown_until <= circuit.cooldown_until:
            return
        circuit.is_open = True
        circuit.cooldown_until = cooldown_until
        circuit.trips = max(circuit.trips, trips)
        circuit.trial_started_at = None

    def reset(self, pk: int) -> None:
        """Forget everything about this instance (an operator marked it healthy)."""
        circuit = self._circuits.pop(pk, None)
        if circuit is not None and circuit.is_open and self.on_change is not None:
            self.on_change(pk, HealthView(HEALTHY, None, 0, circuit.last_failure_at, 0))

    def known(self) -> list[int]:
        """Instance pks with any recorded history, for boards and syncing."""
        return list(self._circuits)

    # -- internals ----------------------------------------------------------------

    def _trip(self, pk: int, circuit: _Circuit, now: float, retry_after: float | None) -> None:
        circuit.is_open = True
        circuit.trips += 1
        circuit.cooldown_until = now + self.policy.cooldown_length(circuit.trips, retry_after)
        circuit.trial_started_at = None
        self._changed(pk, circuit, now)

    def _changed(self, pk: int, circuit: _Circuit, now: float) -> None:
        if self.on_change is not None:
            self.on_change(pk, self._view(circuit, now))

    def _view(self, circuit: _Circuit, now: float) -> HealthView:
        if not circuit.is_open:
            return HealthView(
                HEALTHY, None, circuit.consecutive_failures, circuit.last_failure_at, circuit.trips
            )
        return HealthView(
            status=COOLING if now < circuit.cooldown_until else HALF_OPEN,
            cooldown_until=circuit.cooldown_until,
            consecutive_failures=circuit.consecutive_failures,
            last_failure_at=circuit.last_failure_at,
            trips=circuit.trips,
            trial_in_flight=circuit.trial_started_at is not None,
        )
