"""Selection among the members of a target group, and the live load it reads.

DESIGN.md: selection among *eligible* members (member and instance enabled,
instance not cooling down or unavailable): the lowest ``priority`` number present
forms the tier; the policy picks inside the tier; a failed member is excluded and
the pick repeats, moving to the next tier when a tier is exhausted. Weight 0
drains a member.

Eligible here means: ``member.enabled``, ``member.instance.enabled``,
``member.weight > 0``, the health tracker says eligible, and the instance pk is
not in ``excluded`` (the instances already attempted in this request).

Policies, inside the tier:

- ``weighted_round_robin``: smooth weighted round robin (nginx): every eligible
  member gains its weight, the highest current weight wins and pays back the
  tier's total. Deterministic and evenly spread (5:1:1 gives a a b a c a a).
- ``round_robin``: the next eligible member after the last one picked.
- ``random``: weighted random, from the injected ``random.Random``.
- ``least_latency``: the lowest EWMA latency; members never measured go first so
  they get measured. Ties go round robin.
- ``least_busy``: the fewest in-flight requests. Ties go round robin.
- ``capacity_first``: fill paid capacity before paying per token. The eligible
  members priced as reserved capacity (``InstanceSpec.reserved``), whatever
  their tier, go first while one of them is not saturated: the least used one
  (in flight / capacity, or measured tokens per second / capacity) wins, ties
  round robin. A reserved member is saturated when its in-flight requests reach
  its capacity (unit ``concurrent_requests``) or its measured throughput over
  the last ``THROUGHPUT_WINDOW`` seconds reaches it (``tokens_per_second``).
  When every eligible reserved member is saturated the request **spills over**
  to the token-billed members (best tier, smooth weighted round robin) and
  ``SelectionState.last_spilled`` says so. With no token-billed member left,
  the least used saturated reserved member takes the request (it queues
  there rather than failing). A reserved member that is cooling down is not
  saturated, it is ineligible: the request then fails over, not spills.

The rotation state (SWRR current weights, round-robin cursor) lives in
``SelectionState``, keyed by group name + member instance pks, so a rebuilt
snapshot with the same group keeps its fair rotation. This module is the hot
path: a pick is a single pass over the group's members, no sorting.

Not thread-safe: one ``SelectionState`` / ``LoadStats`` per event loop.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from gateway.engine.types import BalancerSpec, GroupSpec, InstanceSpec, MemberSpec, RouteSpec

if TYPE_CHECKING:
    from gateway.engine.health import HealthTracker

WEIGHTED_ROUND_ROBIN = "weighted_round_robin"
ROUND_ROBIN = "round_robin"
RANDOM = "random"
LEAST_LATENCY = "least_latency"
LEAST_BUSY = "least_busy"
CAPACITY_FIRST = "capacity_first"
POLICIES = (WEIGHTED_ROUND_ROBIN, ROUND_ROBIN, RANDOM, LEAST_LATENCY, LEAST_BUSY, CAPACITY_FIRST)
TOKENS_PER_SECOND = "tokens_per_second"
THROUGHPUT_WINDOW = 10.0  # seconds of served tokens behind a measured throughput


def is_servable(member: MemberSpec) -> bool:
    """The static half of eligibility: enabled member, enabled instance, weight above 0."""
    return member.enabled and member.weight > 0 and member.instance.enabled


def list_price(instance: InstanceSpec) -> float:
    """Input + output price per 1M tokens (negative prices read as 0)."""
    return max(instance.input_price_per_million, 0.0) + max(instance.output_price_per_million, 0.0)


def marginal_price(instance: InstanceSpec, load: LoadStats, now: float) -> float:
    """What one more request costs per 1M tokens: nothing on reserved capacity with room left
    (its hour is paid whatever it serves), its per-token prices once it is saturated, as
    capacity-first reads it. Auto's cost factor and the budget downgrade both rank by it."""
    if instance.reserved and load.utilisation(instance, now) < 1.0:
        return 0.0
    return list_price(instance)


class LoadStats:
    """Live load per instance pk: EWMA latency of successful calls, in-flight count.

    The caller (the attempt plan does it for you) calls ``begin(pk)`` when an
    attempt starts and ``end(pk, latency_s)`` when it ends, with the latency
    only for a success. ``alpha`` is the weight of the newest sample.
    """

    __slots__ = ("_full", "_in_flight", "_latency", "_samples", "_served", "alpha")

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self._latency: dict[int, float] = {}
        self._samples: dict[int, int] = {}
        self._in_flight: dict[int, int] = {}
        # Tokens served per instance: (monotonic time, tokens), oldest first, THROUGHPUT_WINDOW
        # long.
        self._served: dict[int, collections.deque[tuple[float, int]]] = {}
        # Reserved instances found full elsewhere (every worker's requests fill them), until when.
        self._full: dict[int, float] = {}

    def saturate(self, pk: int, until: float) -> None:
        """``pk`` counts as saturated until ``until``, whatever this process has in flight on it:
        its capacity is taken by other processes' requests (gateway/hotpath/capacity_slots.py)."""
        self._full[pk] = until

    def served(self, pk: int, tokens: int, now: float) -> None:
        """An answer of ``tokens`` (prompt + completion) came back from ``pk`` at ``now``."""
        if tokens <= 0:
            return
        window = self._served.get(pk)
        if window is None:
            window = self._served[pk] = collections.deque()
        window.append((now, tokens))
        while window and window[0][0] <= now - THROUGHPUT_WINDOW:
            window.popleft()

    def throughput(self, pk: int, now: float) -> float:
        """Tokens per second served by ``pk`` over the last THROUGHPUT_WINDOW seconds."""
        window = self._served.get(pk)
        if not window:
            return 0.0
        while window and window[0][0] <= now - THROUGHPUT_WINDOW:
            window.popleft()
        return sum(tokens for _, tokens in window) / THROUGHPUT_WINDOW

    def utilisation(self, instance: InstanceSpec, now: float) -> float:
        """How full a reserved instance is: 1.0 is saturated (0.0 for no stated capacity)."""
        if instance.capacity <= 0:
            return 0.0
        full = self._full.get(instance.pk)
        if full is not None:
            if now < full:
                return max(1.0, self.in_flight(instance.pk) / instance.capacity)
            del self._full[instance.pk]
        if instance.capacity_unit == TOKENS_PER_SECOND:
            return self.throughput(instance.pk, now) / instance.capacity
        return self.in_flight(instance.pk) / instance.capacity

    def begin(self, pk: int) -> None:
        self._in_flight[pk] = self._in_flight.get(pk, 0) + 1

    def end(self, pk: int, latency_s: float | None = None) -> None:
        count = self._in_flight.get(pk, 0)
        if count > 1:
            self._in_flight[pk] = count - 1
        else:
            self._in_flight.pop(pk, None)
        if latency_s is not None:
            self.observe(pk, latency_s)

    def observe(self, pk: int, latency_s: float) -> None:
        previous = self._latency.get(pk)
        if previous is None:
            self._latency[pk] = latency_s
        else:
            self._latency[pk] = previous + self.alpha * (latency_s - previous)
        self._samples[pk] = self._samples.get(pk, 0) + 1

    def latency(self, pk: int) -> float | None:
        """EWMA latency in seconds, or None when never measured."""
        return self._latency.get(pk)

    def latency_or_unmeasured(self, pk: int) -> float:
        """EWMA latency, or -1.0 for an instance never measured (so it sorts first)."""
        return self._latency.get(pk, -1.0)

    def samples(self, pk: int) -> int:
        return self._samples.get(pk, 0)

    def in_flight(self, pk: int) -> int:
        return self._in_flight.get(pk, 0)


class _Rotation:
    """Mutable rotation state of one group; survives snapshot rebuilds."""

    __slots__ = ("current", "cursor")

    def __init__(self, size: int) -> None:
        self.current = [0] * size  # SWRR current weight, by member index
        self.cursor = 0  # round robin: the member index to try first


class _Candidate:
    """A statically servable member, with what the hot loop reads from it."""

    __slots__ = ("index", "member", "pk", "priority", "weight")

    def __init__(self, index: int, member: MemberSpec) -> None:
        self.index = index
        self.member = member
        self.pk = member.instance.pk
        self.priority = member.priority
        self.weight = member.weight


class _CompiledGroup:
    """One GroupSpec object, prepared once: servable members in tier order."""

    __slots__ = ("candidates", "group", "rotation", "size")

    def __init__(self, group: GroupSpec, rotation: _Rotation) -> None:
        self.group = group  # held so its id() stays ours while cached
        self.size = len(group.members)
        self.rotation = rotation
        servable = [
            _Candidate(index, member)
            for index, member in enumerate(group.members)
            if is_servable(member)
        ]
        # Stable sort: inside a tier, members keep their configured order.
        servable.sort(key=lambda c: c.priority)
        self.candidates = tuple(servable) if group.enabled else ()


class SelectionState:
    """Per-process rotation state for every group (and weighted balancer) seen.

    Pass a seeded ``random.Random`` for deterministic ``random`` picks.
    """

    # Bounds on the caches: config churn must not grow memory without limit.
    MAX_ENTRIES = 4096

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng if rng is not None else random.Random()
        self._rotations: dict[tuple[str, tuple[int, ...]], _Rotation] = {}
        # id(GroupSpec) -> prepared group; the entry keeps the spec alive, so the
        # id cannot be reused by another object while it is cached.
        self._compiled: dict[int, _CompiledGroup] = {}
        self._route_weights: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        # capacity_first: did the last pick spill over from saturated reserved capacity?
        self.last_spilled = False

    # -- members --------------------------------------------------------------

    def pick(
        self,
        group: GroupSpec,
        *,
        now: float,
        health: HealthTracker | None = None,
        load: LoadStats | None = None,
        excluded: Collection[int] = (),
    ) -> MemberSpec | None:
        """The member to attempt next, or None when no member of any tier is eligible.

        Pure choice: it claims nothing. The attempt plan starts the attempt
        (``health.begin_attempt``, ``load.begin``) on the member it takes.
        """
        self.last_spilled = False
        compiled = self._compiled.get(id(group))
        if compiled is None or compiled.group is not group:
            compiled = self._compile(group)
        if group.selection_policy == CAPACITY_FIRST:
            return self._capacity_first(compiled, excluded, health, load or LoadStats(), now)
        tier = _eligible_tier(compiled.candidates, excluded, health, now)
        if not tier:
            return None
        if len(tier) == 1:
            chosen = tier[0]
            compiled.rotation.cursor = (chosen.index + 1) % compiled.size
            return chosen.member
        policy = group.selection_policy
        rotation = compiled.rotation
        if policy == WEIGHTED_ROUND_ROBIN:
            return _smooth_weighted(tier, rotation.current)
        if policy == RANDOM:
            return _weighted_random(tier, self.rng)
        if policy == LEAST_BUSY and load is not None:
            return _least_by(tier, rotation, compiled.size, load.in_flight)
        if policy == LEAST_LATENCY and load is not None:
            return _least_by(tier, rotation, compiled.size, load.latency_or_unmeasured)
        return _round_robin(tier, rotation, compiled.size)

    def _capacity_first(
        self,
        compiled: _CompiledGroup,
        excluded: Collection[int],
        health: HealthTracker | None,
        load: LoadStats,
        now: float,
    ) -> MemberSpec | None:
        reserved: list[_Candidate] = []
        per_token: list[_Candidate] = []
        for candidate in compiled.candidates:
            if candidate.pk in excluded:
                continue
            if health is not None and not health.is_eligible(candidate.pk, now):
                continue
            (reserved if candidate.member.instance.reserved else per_token).append(candidate)
        rotation, size = compiled.rotation, compiled.size
        used = {c.pk: load.utilisation(c.member.instance, now) for c in reserved}
        room = [c for c in reserved if used[c.pk] < 1.0]
        if room:
            return _least_by(room, rotation, size, used.__getitem__)
        if per_token:
            tier = _eligible_tier(per_token, (), None, now)  # the best tier left
            self.last_spilled = bool(reserved)
            return _smooth_weighted(tier, rotation.current)
        if reserved:
            return _least_by(reserved, rotation, size, used.__getitem__)
        return None

    def _compile(self, group: GroupSpec) -> _CompiledGroup:
        key = (group.name, tuple(member.instance.pk for member in group.members))
        rotation = self._rotations.get(key)
        if rotation is None:
            if len(self._rotations) >= self.MAX_ENTRIES:
                self._rotations.clear()
            rotation = self._rotations[key] = _Rotation(len(group.members))
        if len(self._compiled) >= self.MAX_ENTRIES:
            self._compiled.clear()
        compiled = self._compiled[id(group)] = _CompiledGroup(group, rotation)
        return compiled

    # -- routes (weighted routing mode) ---------------------------------------

    def pick_weighted_route(self, balancer: BalancerSpec) -> RouteSpec | None:
        """Smooth WRR over the balancer's enabled routes by route weight (None: no weight)."""
        routes = [r for r in balancer.routes if r.enabled and r.weight > 0]
        if not routes:
            return None
        key = (balancer.serving_name, tuple(r.name for r in routes))
        current = self._route_weights.get(key)
        if current is None:
            if len(self._route_weights) >= self.MAX_ENTRIES:
                self._route_weights.clear()
            current = self._route_weights[key] = [0] * len(routes)
        return routes[_swrr_index(current, [r.weight for r in routes])]


# -- the pick, step by step ----------------------------------------------------


def _eligible_tier(
    candidates: Sequence[_Candidate],
    excluded: Collection[int],
    health: HealthTracker | None,
    now: float,
) -> list[_Candidate]:
    """The eligible members of the best tier still holding one (candidates are in tier order)."""
    tier: list[_Candidate] = []
    tier_priority = 0
    for candidate in candidates:
        if tier and candidate.priority != tier_priority:
            break
        if candidate.pk in excluded:
            continue
        if health is not None and not health.is_eligible(candidate.pk, now):
            continue
        tier.append(candidate)
        tier_priority = candidate.priority
    return tier


def _smooth_weighted(tier: list[_Candidate], current: list[int]) -> MemberSpec:
    total = 0
    best = tier[0]
    best_weight = -1 << 62
    for candidate in tier:
        weight = current[candidate.index] + candidate.weight
        current[candidate.index] = weight
        total += candidate.weight
        if weight > best_weight:  # strict: ties go to the earlier member
            best, best_weight = candidate, weight
    current[best.index] -= total
    return best.member


def _swrr_index(current: list[int], weights: Sequence[int]) -> int:
    total = 0
    best = 0
    for index, weight in enumerate(weights):
        current[index] += weight
        total += weight
        if current[index] > current[best]:
            best = index
    current[best] -= total
    return best


def _weighted_random(tier: list[_Candidate], rng: random.Random) -> MemberSpec:
    # Weighted reservoir sampling: one pass, no list of weights to build.
    total = 0
    chosen = tier[0]
    for candidate in tier:
        total += candidate.weight
        if rng.random() * total < candidate.weight:
            chosen = candidate
    return chosen.member


def _round_robin(tier: list[_Candidate], rotation: _Rotation, size: int) -> MemberSpec:
    cursor = rotation.cursor
    chosen = tier[0]
    best = size
    for candidate in tier:
        distance = (candidate.index - cursor) % size  # how far after the cursor
        if distance < best:
            chosen, best = candidate, distance
    rotation.cursor = (chosen.index + 1) % size
    return chosen.member


def _least_by(
    tier: list[_Candidate], rotation: _Rotation, size: int, measure: Callable[[int], float]
) -> MemberSpec:
    """The member with the lowest measure(pk); ties go to the next in round-robin order."""
    cursor = rotation.cursor
    chosen = tier[0]
    best = None
    for candidate in tier:
        key = (measure(candidate.pk), (candidate.index - cursor) % size)
        if best is None or key < best:
            chosen, best = candidate, key
    rotation.cursor = (chosen.index + 1) % size
    return chosen.member
