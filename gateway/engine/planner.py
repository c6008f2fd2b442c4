"""The attempt planner: which route, which instance, and in what order to fail over.

The rules, as DESIGN.md states them and this file applies them:

1. The routing mode picks the *first* route. ``intent_classifier`` is decided
   by the caller (classifier or playground override) and passed in; ``ordered``
   takes the enabled route with the lowest priority; ``weighted`` spreads
   requests over the enabled routes by route weight (smooth WRR).
2. After the first route, the attempt order is the remaining *enabled* routes
   by priority (ties by name). One rule, so primary/fallback is predictable in
   every mode.
3. Inside a route, its target group picks: the best tier first, the group's
   policy inside the tier (see ``selection``). A failed member is excluded and
   the pick repeats; an exhausted tier gives way to the next tier, an exhausted
   route to the next route.
4. An instance is attempted at most once per request, whichever routes hold it.
5. The balancer's attempt budget caps the attempts of one request.
6. If nothing at all is eligible for the first attempt (everything cooling
   down), the least recently failed instance of all those routes is tried once,
   rather than refusing outright.
7. Capabilities (``capability``): a target that cannot serve the request
   (tools, images, JSON mode, streaming, max output, context window) is never
   attempted, in any mode, not even as the last resort; each one is recorded
   in ``skipped`` with the reason. An upstream that refuses the prompt as too
   long (``outgrown()``) drops every target whose window is not larger, and the
   request fails over to a larger window, with no health penalty.
8. ``auto`` mode ranks the eligible instances of all routes (see ``auto``) and
   fails over down that ranking, under the same rules 4 to 6; the last resort
   of rule 6 stays inside the request's pool (its key's limit, its
   ``model_routing_config`` and ``models``, ``auto-free``).

How the gateway drives a plan (one per client request)::

    plan = plan_attempts(balancer, routing, first=route, reason="classifier")
    while (attempt := plan.next()) is not None:
        ...call attempt.instance...
        if answered:               plan.succeeded(latency_s=ttfb); break
        if retryable failure:      plan.failed(retry_after=...); continue
        if the client went away:   plan.abandoned(); break

``succeeded`` is also right for a client error (4xx) returned to the client: the
instance answered.

A route's latency threshold (``RouteSpec.latency_threshold``) is the caller's to watch: past it,
``next(keep_open=True)`` hands out the next attempt while the slow one stays open (in flight, no
verdict yet). Without ``hedge`` the caller then cancels the slow one and reports it ``overtaken``;
with it both race, the winner is ``succeeded`` and the loser ``overtaken`` (no verdict on its
health: it was slow, not broken; a cut attempt's elapsed time feeds its latency EWMA as a lower
bound). Every outcome method takes the attempt it is about; left out, it is the newest open one. A
stream's verdict waits for its end (a stream that breaks, stalls or runs past the request timeout
after its first byte is ``failed``, though it cannot fail over; a client that leaves is
``abandoned``), so the attempt stays open, and counted in flight, while it is relayed. ``next()``
with the last attempt still open counts it as failed. The plan updates health and load; the caller
only reports outcomes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.engine.auto import AutoRanking, AutoRequest, RankedInstance, rank_auto
from gateway.engine.capability import Needs, outgrown_reason, unfit_instances
from gateway.engine.health import HealthTracker
from gateway.engine.selection import LoadStats, SelectionState, is_servable
from gateway.engine.types import BalancerSpec, InstanceSpec, MemberSpec, RouteSpec

# Routing modes, and the reasons a plan gives for its first route.
INTENT_CLASSIFIER = "intent_classifier"
ORDERED = "ordered"
WEIGHTED = "weighted"
AUTO = "auto"
REASON_DEFAULT = "default"  # intent_classifier with no decision passed in
REASON_NO_ROUTE = "no_enabled_route"

# Outcomes recorded in AttemptPlan.log.
SUCCEEDED = "succeeded"
FAILED = "failed"
ABANDONED = "abandoned"
OVERTAKEN = "overtaken"  # past its latency threshold: cut, or lost a hedged race
OUTGROWN = "outgrown"  # the upstream refused the prompt as larger than its context window


@dataclass(slots=True)
class RoutingState:
    """What the engine remembers between requests: one per gateway process."""

    health: HealthTracker = field(default_factory=HealthTracker)
    selection: SelectionState = field(default_factory=SelectionState)
    load: LoadStats = field(default_factory=LoadStats)
    clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int  # 1-based: the x-balancer-attempts value if this one answers
    route: RouteSpec
    member: MemberSpec
    last_resort: bool = False  # everything was cooling down: tried anyway
    ranked: RankedInstance | None = None  # auto mode: the rung it came from
    # capacity_first: the reserved capacity was saturated, a token-billed member took it
    spilled: bool = False

    @property
    def instance(self) -> InstanceSpec:
        return self.member.instance


# -- rules 1 and 2: the first route, then the others ----------------------------


def first_route(balancer: BalancerSpec, selection: SelectionState) -> tuple[RouteSpec | None, str]:
    """The first route for the balancer's mode, and why. None only when no route is enabled.

    ``ordered`` (and ``auto``, whose ranking replaces routes): the primary, the
    enabled route with the lowest priority. ``weighted``: smooth WRR by route
    weight. ``intent_classifier``: the caller should pass the classifier's
    decision instead; asked here, the answer is the default route.
    """
    enabled = [route for route in balancer.routes if route.enabled]
    if not enabled:
        return None, REASON_NO_ROUTE
    mode = balancer.routing_mode
    if mode == WEIGHTED:
        chosen = selection.pick_weighted_route(balancer)
        if chosen is not None:
            return chosen, WEIGHTED
        return enabled[0], ORDERED  # every enabled route has weight 0
    if mode == INTENT_CLASSIFIER:
        default = balancer.default_route
        return (default if default.enabled else enabled[0]), REASON_DEFAULT
    return enabled[0], ORDERED


def route_order(balancer: BalancerSpec, first: RouteSpec | None) -> list[RouteSpec]:
    """``first``, then the remaining enabled routes by (priority, name).

    ``first`` is kept even when disabled: whoever named it (classifier,
    playground override smoke-testing a route) meant it.
    """
    # The snapshot keeps balancer.routes sorted by (priority, name).
    rest = [route for route in balancer.routes if route.enabled and route is not first]
    return rest if first is None else [first, *rest]


# -- rules 3 to 7: the plan -------------------------------------------------------

_Found = tuple[RouteSpec, MemberSpec, RankedInstance | None]


class AttemptPlan:
    """The attempts of one request, handed out one at a time by ``next()``."""

    __slots__ = (
        "_finished",
        "_open",
        "_position",
        "_ranking",
        "_reach",
        "_routes",
        "_tried",
        "_unfit",
        "attempts",
        "auto",
        "balancer",
        "budget",
        "current",
        "log",
        "on_close",
        "reason",
        "routing",
        "skipped",
    )

    def __init__(
        self,
        balancer: BalancerSpec,
        routing: RoutingState,
        *,
        routes: list[RouteSpec] | None = None,
        ranking: list[RankedInstance] | None = None,
        reason: str = "",
        auto: AutoRanking | None = None,
        unfit: dict[int, str] | None = None,
    ) -> None:
        self.balancer = balancer
        self.routing = routing
        self.reason = reason  # why the first route (or "auto:<preference>")
        self.budget = max(balancer.attempt_budget, 1)
        self.attempts: list[Attempt] = []
        self.log: list[tuple[Attempt, str]] = []  # every attempt and its outcome
        self.current: Attempt | None = None  # the newest open attempt
        self._open: list[Attempt] = []  # attempts without an outcome (more than one: hedging)
        self._routes = routes if routes is not None else []
        self._ranking = ranking
        self.auto = auto  # auto mode: the whole ranking, skipped instances included
        self._position = 0  # index into routes, or into the ranking
        self._tried: set[int] = set()  # instance pks attempted in this request
        # Instances that cannot serve this request (capability rules), with the reason.
        self._unfit: dict[int, str] = dict(unfit or {})
        # Every target left out for a capability, in the order met: (route, member, reason).
        self.skipped: list[tuple[RouteSpec, MemberSpec, str]] = []
        # Auto mode: the instances the request may use at all (its pool, and those of it that
        # a capability left out); None: every member of the routes.
        self._reach: frozenset[int] | None = (
            None
            if auto is None
            else auto.pool
            | {s.instance.pk for s in auto.skipped if s.reason == self._unfit.get(s.instance.pk)}
        )
        self._finished = False
        # Told of every attempt given an outcome (the hot path frees its shared capacity slot).
        self.on_close: Callable[[Attempt], None] | None = None
        self._note_skipped()

    @property
    def decided_route(self) -> RouteSpec | None:
        """The route the routing decision named (before any failover)."""
        if self.attempts:
            return self.attempts[0].route
        if self._ranking:
            return self._ranking[0].route
        return self._routes[0] if self._routes else None

    @property
    def intended_route(self) -> RouteSpec | None:
        """The route the decision named, even when none of its members could be attempted
        (all cooling down): what a failover is measured against."""
        if self._ranking is not None:
            return self._ranking[0].route if self._ranking else None
        return self._routes[0] if self._routes else None

    @property
    def open_attempts(self) -> tuple[Attempt, ...]:
        """The attempts started and not yet given an outcome, oldest first."""
        return tuple(self._open)

    def next(self, *, keep_open: bool = False) -> Attempt | None:
        """The next attempt to make, or None: answered, budget spent, or nothing left.

        The open attempts count as failed, unless ``keep_open`` (a latency threshold passed:
        the caller cuts or races them and reports their outcome itself)."""
        if not keep_open:
            while self._open:
                self.failed(attempt=self._open[-1])
        if self._finished or len(self.attempts) >= self.budget:
            return None
        now = self.routing.clock()
        if self._ranking is not None:
            found = self._next_ranked(self._ranking, now)
        else:
            found = self._next_in_routes(now)
        last_resort = found is None and not self.attempts
        if last_resort:
            found = self._last_resort()
        if found is None:
            self._finished = True
            return None
        route, member, ranked = found
        spilled = self._ranking is None and not last_resort and self.routing.selection.last_spilled
        return self._start(route, member, ranked, now=now, last_resort=last_resort, spilled=spilled)

    def succeeded(self, latency_s: float | None = None, attempt: Attempt | None = None) -> None:
        """The attempt's instance answered; ``latency_s`` feeds its EWMA."""
        attempt = self._close(SUCCEEDED, attempt)
        pk = attempt.instance.pk
        self.routing.health.record_success(pk, self.routing.clock(), latency_s)
        self.routing.load.end(pk, latency_s)
        self._finished = True

    def failed(self, retry_after: float | None = None, attempt: Attempt | None = None) -> None:
        """The attempt failed in a way that blames the instance; ``next()`` may follow."""
        attempt = self._close(FAILED, attempt)
        pk = attempt.instance.pk
        self.routing.health.record_failure(pk, self.routing.clock(), retry_after)
        self.routing.load.end(pk)

    def outgrown(self, attempt: Attempt | None = None) -> None:
        """The current attempt's upstream refused the prompt as larger than its context window.

        No verdict on the instance (it answered); every target whose known window is not
        larger than that one's is left out, so ``next()`` goes on to a larger window.
        """
        attempt = self._close(OUTGROWN, attempt)
        refused = attempt.instance
        self.routing.health.release(refused.pk)
        self.routing.load.end(refused.pk)
        for _, member in self._members():
            pk = member.instance.pk
            if pk in self._unfit or pk == refused.pk:
                continue
            reason = outgrown_reason(refused, member.instance)
            if reason is not None:
                self._unfit[pk] = reason
        self._note_skipped()

    @property
    def capable(self) -> bool:
        """Whether any servable target of the plan is left once the capability rules apply."""
        return any(
            member.instance.pk not in self._unfit and is_servable(member)
            for _, member in self._members()
        )

    def _members(self) -> list[tuple[RouteSpec, MemberSpec]]:
        """Every member of the routes this plan may use, each instance once, in route order."""
        routes = self._routes if self._ranking is None else route_order(self.balancer, None)
        seen: set[int] = set()
        found: list[tuple[RouteSpec, MemberSpec]] = []
        for route in routes:
            if not route.group.enabled:
                continue
            for member in route.group.members:
                pk = member.instance.pk
                if pk not in seen and (self._reach is None or pk in self._reach):
                    seen.add(pk)
                    found.append((route, member))
        return found

    def _note_skipped(self) -> None:
        if not self._unfit:
            return
        noted = {member.instance.pk for _, member, _ in self.skipped}
        for route, member in self._members():
            pk = member.instance.pk
            if pk in self._unfit and pk not in noted and pk not in self._tried:
                if is_servable(member):
                    self.skipped.append((route, member, self._unfit[pk]))
                noted.add(pk)

    def abandoned(self, attempt: Attempt | None = None) -> None:
        """The request ended without a verdict on the instance (client gone, cancelled)."""
        attempt = self._close(ABANDONED, attempt)
        pk = attempt.instance.pk
        self.routing.health.release(pk)
        self.routing.load.end(pk)
        self._finished = True

    def full(self, attempt: Attempt, *, until: float) -> None:
        """The attempt's reserved instance turned out to be full across every process (its shared
        slots are taken): the attempt is undone, with no verdict on the instance and no place
        in the budget, and the instance counts as saturated until ``until``, so that the next
        pick spills over (or, with no token-billed member left, queues on it)."""
        self._open = [a for a in self._open if a is not attempt]
        self.current = self._open[-1] if self._open else None
        self.attempts = [a for a in self.attempts if a is not attempt]
        pk = attempt.instance.pk
        self._tried.discard(pk)
        self.routing.health.release(pk)
        self.routing.load.end(pk)
        self.routing.load.saturate(pk, until)

    def overtaken(self, attempt: Attempt, latency_s: float | None = None) -> None:
        """The attempt was cut at its latency threshold or lost a hedged race: no verdict on the
        instance's health. ``latency_s``: the time it had taken without a first byte, a lower bound
        of its latency, for its EWMA (give it only when it is one: a cut at the threshold)."""
        attempt = self._close(OVERTAKEN, attempt)
        pk = attempt.instance.pk
        self.routing.health.release(pk)
        self.routing.load.end(pk, latency_s)

    # -- walking ----------------------------------------------------------------

    def _next_in_routes(self, now: float) -> _Found | None:
        routing = self.routing
        while self._position < len(self._routes):
            route = self._routes[self._position]
            excluded = self._tried if not self._unfit else self._tried | self._unfit.keys()
            member = routing.selection.pick(
                route.group, now=now, health=routing.health, load=routing.load, excluded=excluded
            )
            if member is not None:
                return route, member, None
            self._position += 1  # tiers exhausted: on to the next route
        return None

    def _next_ranked(self, ranking: list[RankedInstance], now: float) -> _Found | None:
        health = self.routing.health
        while self._position < len(ranking):
            rung = ranking[self._position]
            self._position += 1
            pk = rung.instance.pk
            # Health may have changed since the ranking was made (other requests).
            if pk not in self._tried and pk not in self._unfit and health.is_eligible(pk, now):
                return rung.route, rung.member, rung
        return None

    def _last_resort(self) -> _Found | None:
        """Everything is cooling down: the least recently failed instance, once."""
        routes = self._routes if self._ranking is None else route_order(self.balancer, None)
        owner: dict[int, tuple[RouteSpec, MemberSpec]] = {}
        for route in routes:
            if not route.group.enabled:
                continue
            for member in route.group.members:
                candidate = member.instance.pk
                if (
                    is_servable(member)
                    and candidate not in self._unfit
                    and (self.auto is None or candidate in self.auto.pool)
                ):
                    owner.setdefault(candidate, (route, member))
        pk = self.routing.health.least_recently_failed(owner)
        if pk is None:
            return None
        route, member = owner[pk]
        return route, member, None

    def _start(
        self,
        route: RouteSpec,
        member: MemberSpec,
        ranked: RankedInstance | None,
        *,
        now: float,
        last_resort: bool,
        spilled: bool = False,
    ) -> Attempt:
        attempt = Attempt(len(self.attempts) + 1, route, member, last_resort, ranked, spilled)
        pk = member.instance.pk
        self._tried.add(pk)
        self.routing.health.begin_attempt(pk, now)
        self.routing.load.begin(pk)
        self.attempts.append(attempt)
        self._open.append(attempt)
        self.current = attempt
        return attempt

    def _close(self, outcome: str, attempt: Attempt | None = None) -> Attempt:
        if attempt is None:
            attempt = self.current
        if attempt is None or all(a is not attempt for a in self._open):
            raise RuntimeError("no such attempt in progress: call next() first")
        self._open = [a for a in self._open if a is not attempt]
        self.current = self._open[-1] if self._open else None
        self.log.append((attempt, outcome))
        if self.on_close is not None:
            self.on_close(attempt)
        return attempt


def plan_attempts(
    balancer: BalancerSpec,
    routing: RoutingState,
    *,
    first: RouteSpec | None = None,
    reason: str = "",
    auto: AutoRequest | None = None,
    needs: Needs | None = None,
) -> AttemptPlan:
    """The attempt plan of one request.

    ``first``: the route decided by the caller (the classifier's choice, or a
    playground override), with ``reason`` for the usage event. Without it the
    mode decides: ``auto`` ranks instances (for ``auto``, what the request
    asked: preference, pool, fallback list), the other modes use ``first_route``.
    ``needs``: what the request needs of a target (``capability.needs_of``); the
    instances that cannot serve it are left out of every mode.
    """
    unfit = (
        unfit_instances((m.instance for r in balancer.routes for m in r.group.members), needs)
        if needs is not None
        else {}
    )
    if first is None and balancer.routing_mode == AUTO:
        if auto is None:
            auto = AutoRequest(
                preference=balancer.auto_preference, free_only=balancer.auto_free_only
            )
        ranking = rank_auto(
            balancer,
            auto,
            health=routing.health,
            load=routing.load,
            now=routing.clock(),
            unfit=unfit,
        )
        return AttemptPlan(
            balancer,
            routing,
            ranking=ranking.ranked,
            reason=f"auto:{ranking.preference}",
            auto=ranking,
            unfit=unfit,
        )
    if first is None:
        first, reason = first_route(balancer, routing.selection)
    return AttemptPlan(
        balancer, routing, routes=route_order(balancer, first), reason=reason, unfit=unfit
    )
