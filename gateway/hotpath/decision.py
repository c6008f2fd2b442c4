"""Deciding the first route of a request: override, content rules, classifier, or the balancer's
mode.

An explicit override (X-Balancer-Route) wins; then the balancer's content rules
(gateway.engine.rules: the first enabled rule that matches, reason `rule:<name>`);
then the routing mode.

For `intent_classifier` balancers the router model names a route:
- provider `builtin` (`intent-classifier`): the local classifier, in process;
- any chat instance: an LLM asked with the routes' names, intents and examples.
No match, an unparsable answer, an error or the timeout picks the default route;
so does a confidence under the balancer's threshold. Decisions are cached (LRU
with TTL, keyed by config version, balancer and normalised prompt) and identical
classifications in flight are made once.

The shared classification runs in a task of its own, and every request waiting
for it waits through `asyncio.shield`: a client that disconnects cancels its own
wait, never the shared work, so the other waiters still get their decision. The
work is not cancelled when its last waiter leaves either: it is one short router
call bounded by the balancer's classifier_timeout, and its result fills the
cache for the next identical prompt (often the same client, retrying).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.engine.rules import RuleCheck, explain_rules, first_match, request_facts, rule_kinds
from gateway.engine.types import DIRECT_ROUTE, BalancerSpec, RouteSpec
from gateway.hotpath.router_share import shared_router
from gateway.router_models.fitted import LocalRouter, build_local_router, fit_fingerprint
from gateway.router_models.llm import build_router_messages, parse_router_answer
from gateway.router_models.local import RouteIntent
from gateway.text import last_user_text

logger = logging.getLogger(__name__)

CLASSIFIED = "classified"
NO_MATCH = "default:no_match"
LOW_CONFIDENCE = "default:low_confidence"
TIMEOUT = "default:timeout"
ERROR = "default:error"
OVERRIDE = "override"
RULE_PREFIX = "rule:"

CACHE_SIZE = 10_000
CACHE_TTL = 300.0
MAX_PROMPT_CHARS = 4000


@dataclass(slots=True)
class Decision:
    route: RouteSpec | None  # None: let the mode decide (ordered, weighted, auto)
    reason: str
    confidence: float | None = None
    classifier_ms: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    cached: bool = False
    difficulty: float | None = None  # the local router's P(prompt is hard), for /v1/explain
    rule_checks: list[RuleCheck] | None = None  # every content rule's outcome (decide(trace=True))


class _TTLCache:
    def __init__(self, size: int, ttl: float) -> None:
        self.size, self.ttl = size, ttl
        self._data: collections.OrderedDict[tuple[Any, ...], tuple[float, Decision]] = (
            collections.OrderedDict()
        )

    def get(self, key: tuple[Any, ...]) -> Decision | None:
        item = self._data.get(key)
        if item is None:
            return None
        stored_at, decision = item
        if time.monotonic() - stored_at > self.ttl:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return decision

    def put(self, key: tuple[Any, ...], decision: Decision) -> None:
        self._data[key] = (time.monotonic(), decision)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


_cache = _TTLCache(CACHE_SIZE, CACHE_TTL)
_inflight: dict[tuple[Any, ...], asyncio.Task[Decision]] = {}
_local_models: dict[tuple[int, int], LocalRouter] = {}
_models_by_content: dict[str, LocalRouter] = {}  # by fit_fingerprint, for the models in use
_WS = re.compile(r"\s+")


def _normalise(text: str) -> str:
    return _WS.sub(" ", text.strip().lower())[:MAX_PROMPT_CHARS]


def _prompt_key(text: str) -> bytes:
    """The decision cache's key for a prompt: a 16-byte digest of its normalised text.

    Keyed by the text itself, each entry held the prompt (up to MAX_PROMPT_CHARS): 10,000
    cached 4,000-character prompts took 45 MB of the worker, 5 MB keyed by the digest
    (tracemalloc, 522 against 4,522 bytes an entry).
    """
    return hashlib.blake2b(
        _normalise(text).encode("utf-8", "surrogatepass"), digest_size=16
    ).digest()


def route_intents(balancer: BalancerSpec) -> list[RouteIntent]:
    return [
        RouteIntent(name=r.name, intent=r.intent, examples=r.examples)
        for r in balancer.routes
        if r.enabled
    ]


def local_classifier(balancer: BalancerSpec, version: int, *, share: bool = False) -> LocalRouter:
    """The balancer's built-in router at this version: the model of the same routes if this
    process has one (a change elsewhere in the configuration refits nothing), else one another
    worker fitted (`share`, at snapshot build only: it may wait for that worker), else fitted."""
    key = (version, balancer.pk)
    model = _local_models.get(key)
    if model is None:
        if len(_local_models) > 256:
            _local_models.clear()
        routes = route_intents(balancer)
        content = fit_fingerprint(routes)
        model = _models_by_content.get(content)
        if model is None:
            model = shared_router(routes, content) if share else build_local_router(routes)
            _models_by_content[content] = model
        _local_models[key] = model
    return model


def fit_local_routers(balancers: Iterable[BalancerSpec], version: int) -> None:
    """Fit the built-in router of every intent balancer now, at snapshot build (off the request
    path).

    Models of older snapshots than the previous one are dropped (a fitted model
    holds about 0.8 MB for 10 routes), so a worker keeps at most two generations.
    """
    older = sorted({v for v, _ in _local_models if v < version})[:-1]
    for key in [k for k in _local_models if k[0] in older]:
        _local_models.pop(key, None)
    for balancer in balancers:
        router = balancer.router_model
        if (
            balancer.routing_mode == "intent_classifier"
            and router is not None
            and router.provider == "builtin"
        ):
            try:
                local_classifier(balancer, version, share=True)
            except Exception:
                logger.exception(
                    "fitting the local router model failed for %s", balancer.serving_name
                )
    # Only the models of the two generations kept stay reusable (list(): the event loop's
    # thread may add one meanwhile).
    in_use = {id(model) for model in list(_local_models.values())}
    for content, model in list(_models_by_content.items()):
        if id(model) not in in_use:
            _models_by_content.pop(content, None)


def _fell_back(balancer: BalancerSpec, reason: str, started: float) -> Decision:
    """The default route, because the router model could not decide (timing kept)."""
    return Decision(balancer.default_route, reason, None, (time.perf_counter() - started) * 1000)


def _from_answer(
    balancer: BalancerSpec,
    route_name: str | None,
    confidence: float | None,
    scores: dict[str, float],
    started: float,
) -> Decision:
    elapsed = (time.perf_counter() - started) * 1000
    default = balancer.default_route
    route = balancer.route_named(route_name) if route_name else None
    if route is None or not route.enabled:
        return Decision(default, NO_MATCH, confidence, elapsed, scores)
    if confidence is not None and confidence < balancer.confidence_threshold:
        return Decision(default, LOW_CONFIDENCE, confidence, elapsed, scores)
    return Decision(route, CLASSIFIED, confidence, elapsed, scores)


async def _classify_llm(balancer: BalancerSpec, prompt: str) -> Decision:
    from gateway.upstream import UpstreamResponse, call_upstream

    router = balancer.router_model
    assert router is not None
    started = time.perf_counter()
    routes = route_intents(balancer)
    payload = {
        "model": router.model,
        "messages": build_router_messages(routes, prompt),
        "temperature": 0,
        "max_tokens": 60,
    }
    deadline = time.monotonic() + balancer.classifier_timeout
    try:
        async with asyncio.timeout(balancer.classifier_timeout):
            result = await call_upstream(
                router, endpoint="chat", payload=payload, stream=False, deadline=deadline
            )
    except TimeoutError:
        return _fell_back(balancer, TIMEOUT, started)
    except Exception as exc:
        reason = TIMEOUT if getattr(exc, "is_timeout", False) else ERROR
        return _fell_back(balancer, reason, started)
    if not isinstance(result, UpstreamResponse):
        return _fell_back(balancer, ERROR, started)
    try:
        body = orjson.loads(result.body)
        text = body["choices"][0]["message"]["content"] or ""
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return _fell_back(balancer, ERROR, started)
    name, confidence = parse_router_answer(text, [r.name for r in routes])
    return _from_answer(balancer, name, confidence, {}, started)


def _classify_local(balancer: BalancerSpec, version: int, prompt: str) -> Decision:
    started = time.perf_counter()
    try:
        result = local_classifier(balancer, version).classify(prompt)
    except Exception:
        logger.exception("local router model failed for %s", balancer.serving_name)
        return _fell_back(balancer, ERROR, started)
    decision = _from_answer(balancer, result.route, result.confidence, dict(result.scores), started)
    decision.difficulty = result.difficulty
    return decision


async def classify(
    balancer: BalancerSpec, version: int, messages: Any, *, use_cache: bool = True
) -> Decision:
    prompt = last_user_text(messages)[:MAX_PROMPT_CHARS]
    router = balancer.router_model
    if router is None or not prompt.strip():
        return Decision(balancer.default_route, NO_MATCH, None, 0.0)
    key = (version, balancer.pk, _prompt_key(prompt))
    if use_cache:
        hit = _cache.get(key)
        if hit is not None:
            return Decision(
                hit.route,
                hit.reason,
                hit.confidence,
                0.0,
                hit.scores,
                cached=True,
                difficulty=hit.difficulty,
            )
    if router.provider == "builtin":
        decision = _classify_local(balancer, version, prompt)
        _remember(key, decision)
        return decision
    loop = asyncio.get_running_loop()
    pending = _inflight.get(key)
    if pending is not None and pending.get_loop() is loop:
        shared = await asyncio.shield(pending)
        return Decision(
            shared.route,
            shared.reason,
            shared.confidence,
            shared.classifier_ms,
            shared.scores,
            cached=True,
        )
    task = loop.create_task(_classify_llm(balancer, prompt), name="router-classification")
    _inflight[key] = task
    task.add_done_callback(lambda done: _classified(key, done))
    return await asyncio.shield(task)


def _remember(key: tuple[Any, ...], decision: Decision) -> None:
    # Errors and timeouts are not cached: the next request asks again.
    if decision.reason in (CLASSIFIED, NO_MATCH, LOW_CONFIDENCE):
        _cache.put(key, decision)


def _classified(key: tuple[Any, ...], task: asyncio.Task[Decision]) -> None:
    """A shared classification ended (whether anyone still waits for it)."""
    if _inflight.get(key) is task:
        del _inflight[key]
    if not task.cancelled() and task.exception() is None:
        _remember(key, task.result())


async def decide(
    balancer: BalancerSpec,
    version: int,
    payload: dict[str, Any],
    override: str | None,
    *,
    endpoint: str = "chat",
    key_name: str = "",
    tags: str = "",
    trace: bool = False,
) -> Decision:
    """The first route for this request, with the reason recorded in the usage event.

    `key_name` and `tags` (the x-balancer-tags header) are what the content rules read
    besides the body; `trace` fills `rule_checks` for /v1/explain.
    """
    if override:
        route = balancer.route_named(override)
        if route is None or not route.enabled:
            from gateway.hotpath.errors import bad_request

            names = ", ".join(r.name for r in balancer.routes if r.enabled)
            state = "Unknown" if route is None else "Disabled"
            raise bad_request(
                f"{state} route {override!r} in the X-Balancer-Route header for "
                f"{balancer.serving_name}; enabled routes: {names}.",
                param="X-Balancer-Route",
                code="route_not_available",
            )
        return Decision(route, OVERRIDE)
    checks: list[RuleCheck] | None = None
    if balancer.rules:
        facts = request_facts(
            payload,
            endpoint=endpoint,
            key_name=key_name,
            tags=tags,
            kinds=rule_kinds(balancer.rules),
        )
        if trace:
            checks = explain_rules(balancer, facts)
        matched = first_match(balancer, facts)
        if matched is not None:
            rule, route = matched
            return Decision(route, RULE_PREFIX + rule.name, rule_checks=checks)
    decision = await _decide_by_mode(balancer, version, payload)
    # A copy: the classifier's decision may be the one its cache holds.
    return decision if checks is None else dataclasses.replace(decision, rule_checks=checks)


async def _decide_by_mode(
    balancer: BalancerSpec, version: int, payload: dict[str, Any]
) -> Decision:
    if balancer.routing_mode == "intent_classifier":
        return await classify(balancer, version, payload.get("messages"))
    if balancer.routing_mode == DIRECT_ROUTE:  # a model named directly (gateway/hotpath/direct.py)
        route = balancer.routes[0]
        return Decision(route, f"direct:{route.group.members[0].instance.provider}")
    return Decision(None, balancer.routing_mode)
