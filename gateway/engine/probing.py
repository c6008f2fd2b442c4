"""Active health: what a run of probes says about an instance, with hysteresis.

DESIGN.md: a periodic job probes every enabled instance cheaply and marks it
healthy, degraded or unavailable. One probe is a poor witness (a dropped packet,
a restart in progress), so the instance's state follows runs of probes, not the
last one::

    healthy ──1st failure──▶ degraded ──N-th failure in a row──▶ unavailable
       ▲                        │                                    │
       └──M-th success in a row─┘◀──────M-th success in a row────────┘

- A probe's own verdict is ``healthy`` (answered well), ``degraded`` (answered,
  but slowly or with a 4xx other than a refused credential) or ``unavailable``
  (no answer, a 5xx, a refused credential). Degraded and healthy verdicts both
  *pass*; an unavailable verdict *fails*.
- ``down_after`` (N, default 2) failed probes in a row make the instance
  unavailable; fewer make it degraded. An unavailable instance takes no traffic.
- ``up_after`` (M, default 2) passing probes in a row bring a degraded or
  unavailable instance back; until then it keeps its state (an unavailable one
  stays benched while it recovers). A passing probe with a degraded verdict
  brings it back to degraded at best.
- An instance never probed before counts as healthy: a passing first probe
  gives its verdict at once (a new instance need not wait M probes to take
  traffic), a failing one makes it degraded like any other single failure.
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN = "unknown"
HEALTHY = "healthy"
DEGRADED = "degraded"
UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class ProbePolicy:
    down_after: int = 2  # N: failed probes in a row that make an instance unavailable
    up_after: int = 2  # M: passing probes in a row that bring it back


@dataclass(frozen=True, slots=True)
class ProbeState:
    status: str = UNKNOWN  # unknown | healthy | degraded | unavailable
    failures: int = 0  # failed probes in a row
    successes: int = 0  # passing probes in a row


def next_probe_state(previous: ProbeState, verdict: str, policy: ProbePolicy) -> ProbeState:
    """The instance's state after one more probe whose own verdict is ``verdict``."""
    if verdict == UNKNOWN:  # nothing to probe with (no verdict): the state stands
        return previous
    if verdict == UNAVAILABLE:
        failures = previous.failures + 1
        if failures >= policy.down_after or previous.status == UNAVAILABLE:
            return ProbeState(UNAVAILABLE, failures, 0)
        return ProbeState(DEGRADED, failures, 0)
    successes = previous.successes + 1
    if previous.status in (UNKNOWN, HEALTHY):
        return ProbeState(verdict, 0, successes)
    if successes >= policy.up_after:
        return ProbeState(verdict, 0, successes)
    return ProbeState(previous.status, 0, successes)
