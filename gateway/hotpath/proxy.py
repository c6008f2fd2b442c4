"""The hot path: one client request → decision → attempts → response → usage event.

Framework-free apart from Django's response classes: the DRF views of v1_api.py and
the playground (in process) share every line of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse

from gateway.engine.auto import COST, AutoRequest
from gateway.engine.budgets import cheapest_route
from gateway.engine.capability import needs_of
from gateway.engine.planner import AUTO, Attempt, AttemptPlan, plan_attempts
from gateway.engine.types import BalancerSpec, InstanceSpec
from gateway.hotpath import budgets, cache, capacity_slots, errors
from gateway.hotpath.auto_request import (
    empty_pool_error,
    goal_balancer,
    no_capable_target_error,
    routing_options,
    with_difficulty,
)
from gateway.hotpath.decision import MAX_PROMPT_CHARS, Decision, decide
from gateway.hotpath.direct import direct_balancer, with_direct_models
from gateway.hotpath.ratelimit import check_rate_limit
from gateway.hotpath.runtime import routing
from gateway.hotpath.scrub import Scrubber, scrubber_for
from gateway.hotpath.snapshot import GatewayConfig, KeySpec
from gateway.hotpath.usage import UsageRecord, recorder
from gateway.models import USE_CASE_PATTERN
from gateway.text import estimate_tokens, last_user_text, prompt_tokens
from gateway.upstream import UpstreamFailure, UpstreamResponse, UpstreamStream, call_upstream
from gateway.upstream.answers import (
    MalformedAnswer,
    check_answer,
    completion_estimate,
    event_data,
    read_usage,
)

logger = logging.getLogger(__name__)

ENDPOINT_FOR_KIND = {"chat": "/v1/chat/completions", "embeddings": "/v1/embeddings"}
_MILLION = Decimal(1_000_000)


@dataclass(slots=True)
class ClientRequest:
    endpoint: str  # chat | embeddings
    payload: dict[str, Any]
    key: KeySpec
    request_id: str
    route_override: str | None
    started: float  # time.monotonic()
    created_at: datetime
    tags: str = ""  # the x-balancer-tags header, for content rules
    recorded: bool = (
        False  # a usage event is (or will be, at the stream's end) recorded for it here
    )
    # The door the client called when it is not `endpoint` itself (messages: a translated Messages
    # API request routed as chat); the usage event records it.
    usage_endpoint: str = ""
    # the client's own body for instances that speak its wire format (upstream.anthropic.Native)
    native: Any = None
    cache_control: str = (
        ""  # the request's Cache-Control header (no-cache / no-store bypass the response cache)
    )
    # The x-balancer-use-case header as sent; proxy() resolves the request's use case into
    # `use_case` (header, else metadata.use_case, else the key's tag).
    use_case_header: str = ""
    use_case: str = ""


_USE_CASE = re.compile(USE_CASE_PATTERN)
_USE_CASE_RULE = "1 to 63 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"


def resolve_use_case(req: ClientRequest, payload: dict[str, Any]) -> str:
    """The request's use-case tag: the x-balancer-use-case header, else metadata.use_case,
    else its key's tag. A malformed one is a 400, never silently dropped."""
    header = req.use_case_header.strip()
    if header:
        if not _USE_CASE.match(header):
            raise errors.bad_request(
                f"The x-balancer-use-case header must be {_USE_CASE_RULE}.",
                param="x-balancer-use-case",
            )
        return header
    metadata = payload.get("metadata")
    if isinstance(metadata, dict) and "use_case" in metadata:
        value = metadata["use_case"]
        if not isinstance(value, str) or not _USE_CASE.match(value):
            raise errors.bad_request(
                f"metadata.use_case must be a string of {_USE_CASE_RULE}.",
                param="metadata.use_case",
            )
        return value
    return req.key.use_case


def check_route_override(key: KeySpec, override: str | None) -> str | None:
    """An X-Balancer-Route override is for keys allowed to choose a route (the playground's is)."""
    if override and not key.allow_route_override:
        raise errors.GatewayError(
            403,
            "This API key may not choose a route: the X-Balancer-Route header needs a key allowed "
            "to override routing. Send the request without it, or ask an operator to allow route "
            "override on this key.",
            type="permission_error",
            code="route_override_not_allowed",
            param="X-Balancer-Route",
        )
    return override


def validate_payload(endpoint: str, payload: Any) -> dict[str, Any]:
    """The checks the gateway needs; everything else passes through to the upstream untouched."""
    if not isinstance(payload, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise errors.bad_request(
            "'model' is required: send a balancer's serving name.", param="model"
        )
    if endpoint == "chat":
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise errors.bad_request("'messages' must be a non-empty array.", param="messages")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise errors.bad_request(
                    f"messages[{index}] must be an object with a 'role'.",
                    param=f"messages[{index}]",
                )
        if "stream" in payload and not isinstance(payload["stream"], bool):
            raise errors.bad_request("'stream' must be true or false.", param="stream")
        options = payload.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise errors.bad_request("'stream_options' must be an object.", param="stream_options")
    else:
        value = payload.get("input")
        if not (isinstance(value, str) and value) and not (isinstance(value, list) and value):
            raise errors.bad_request("'input' must be a non-empty string or array.", param="input")
    return payload


def find_balancer(
    config: GatewayConfig, key: KeySpec, model: str, endpoint: str | None
) -> BalancerSpec:
    balancer = config.routing.balancers.get(model)
    if balancer is None and (goal := goal_balancer(config, model, endpoint)) is not None:
        return goal  # the key's limit applies to the goal's pool (auto_request.py)
    if balancer is None and (direct := direct_balancer(config, key, model, endpoint)) is not None:
        return direct  # a provider's model named directly (direct.py): the key's flag decides
    if balancer is None or not balancer.enabled:
        raise errors.model_not_found(model)
    if key.allowed is not None and balancer.serving_name not in key.allowed:
        raise errors.forbidden(f"This API key may not use {model!r}.")
    if endpoint is not None and balancer.workload_kind != endpoint:
        raise errors.bad_request(
            f"{model!r} is a {balancer.workload_kind} balancer; call "
            f"{ENDPOINT_FOR_KIND[balancer.workload_kind]} instead.",
            param="model",
            code="wrong_workload_kind",
        )
    return balancer


@functools.lru_cache(maxsize=1024)
def _per_token(price_per_million: float) -> Decimal:
    return Decimal(str(price_per_million)) / _MILLION


def _cost(instance: InstanceSpec, prompt: int, completion: int, cached: int = 0) -> Decimal:
    """What one answer cost. `cached`: of the prompt's tokens, those the provider read from its
    prompt cache, billed at the instance's cached-input price when it has one (its own, else the
    model catalogue's); without one, at the input price like the rest of the prompt."""
    # Reserved capacity is paid by the hour: the hour's price is spread over its requests when
    # it closes (gateway.reporting.capacity), so a request records no cost of its own here.
    if instance.reserved:
        return Decimal(0)
    cached_price = instance.cached_input_price_per_million
    if not cached or cached_price is None:
        return prompt * _per_token(instance.input_price_per_million) + completion * _per_token(
            instance.output_price_per_million
        )
    cached = min(cached, prompt)
    return (
        (prompt - cached) * _per_token(instance.input_price_per_million)
        + cached * _per_token(cached_price)
        + completion * _per_token(instance.output_price_per_million)
    )


class _Ledger:
    """The ledger of one client request: its attempts, timings and budget note, turned into a
    usage event at the end."""

    __slots__ = (
        "attempt_log",
        "balancer",
        "budget_note",
        "decision",
        "plan",
        "req",
        "scrubber",
        "skipped_logged",
        "ttfb_ms",
    )

    def __init__(
        self,
        req: ClientRequest,
        balancer: BalancerSpec,
        decision: Decision,
        plan: AttemptPlan,
        scrubber: Scrubber,
    ) -> None:
        self.req, self.balancer, self.decision, self.plan = req, balancer, decision, plan
        self.scrubber = scrubber
        self.attempt_log: list[dict[str, Any]] = []
        self.ttfb_ms: float | None = None
        self.budget_note = ""  # x-balancer-budget: "downgraded" or "warning"
        self.skipped_logged = 0
        self.log_skipped()

    @property
    def attempts(self) -> int:
        """Attempts made (the log also holds the targets skipped for a capability)."""
        return sum(1 for entry in self.attempt_log if entry["outcome"] != SKIPPED)

    def log_skipped(self) -> None:
        """The plan's targets left out for a capability, each once, in the attempt log."""
        for route, member, reason in self.plan.skipped[self.skipped_logged :]:
            self.attempt_log.append(
                {
                    "route": route.name,
                    "instance": member.instance.instance_id,
                    "outcome": SKIPPED,
                    "status": None,
                    "ms": 0.0,
                    "detail": reason,
                }
            )
        self.skipped_logged = len(self.plan.skipped)

    @property
    def reason(self) -> str:
        return self.decision.reason if self.decision.route is not None else self.plan.reason

    def log_attempt(
        self,
        attempt: Attempt,
        outcome: str,
        started: float,
        status: int | None = None,
        detail: str = "",
        *,
        hedge: bool = False,
    ) -> None:
        entry: dict[str, Any] = {
            "route": attempt.route.name,
            "instance": attempt.instance.instance_id,
            "outcome": outcome,
            "status": status,
            "ms": round((time.monotonic() - started) * 1000, 2),
        }
        if detail:
            entry["detail"] = self.scrubber.text(detail)[:300]
        if hedge:  # started while an earlier attempt, past its latency threshold, still ran
            entry["hedge"] = True
        self.attempt_log.append(entry)

    def headers(self, attempt: Attempt | None) -> dict[str, str]:
        headers = {
            "x-balancer": self.balancer.serving_name,
            "x-balancer-decision": self.reason,
            "x-balancer-attempts": str(self.attempts),
            "x-request-id": self.req.request_id,
        }
        if self.plan.skipped:
            headers["x-balancer-skipped"] = _skipped_header(self.plan)
        if attempt is not None:
            headers["x-balancer-route"] = attempt.route.name
            headers["x-balancer-instance"] = attempt.instance.instance_id
        if self.budget_note:
            headers["x-balancer-budget"] = self.budget_note
        return headers

    def record(
        self,
        *,
        status: int,
        attempt: Attempt | None,
        prompt: int = 0,
        completion: int = 0,
        error_type: str = "",
        stream: bool = False,
        usage_note: str = "",
        cached: int = 0,
    ) -> None:
        instance = attempt.instance if attempt is not None else None
        self.req.recorded = True
        if instance is not None and (prompt or completion):
            routing = self.plan.routing
            routing.load.served(instance.pk, prompt + completion, routing.clock())
            capacity_slots.slots.served(instance, prompt + completion)
        intended = self.plan.intended_route
        recorder.record(
            UsageRecord(
                created_at=self.req.created_at,
                request_id=self.req.request_id,
                endpoint=self.req.usage_endpoint or self.req.endpoint,
                status_code=status,
                latency_ms=round((time.monotonic() - self.req.started) * 1000, 3),
                api_key_id=self.req.key.pk,
                balancer_id=self.balancer.pk or None,  # 0: a goal name's implicit auto balancer
                serving_name=self.balancer.serving_name,
                team_id=self.req.key.team_pk,
                use_case=self.req.use_case,
                route=attempt.route.name if attempt is not None else "",
                instance=instance.instance_id if instance is not None else "",
                model=instance.model if instance is not None else "",
                decision_reason=self.reason,
                confidence=self.decision.confidence,
                classifier_ms=self.decision.classifier_ms,
                attempts=self.attempts,
                attempt_log=self.attempt_log,
                error_type=error_type,
                stream=stream,
                ttfb_ms=self.ttfb_ms,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=_cost(instance, prompt, completion, cached)
                if instance is not None
                else Decimal(0),
                usage_note=self.scrubber.text(usage_note)[:200],
                prompt_text=self.logged_prompt() if self.balancer.log_prompts else "",
                decided_route=intended.name if intended is not None else "",
                spilled=attempt is not None and attempt.spilled,
            )
        )

    def logged_prompt(self) -> str:
        """What a balancer that keeps prompts keeps: the text the router reads (the last user
        message; an embeddings request's input), at most MAX_PROMPT_CHARS, without NULs (PostgreSQL
        text)."""
        payload = self.req.payload
        if self.req.endpoint == "chat":
            text = last_user_text(payload.get("messages"))
        else:
            value = payload.get("input")
            items = value if isinstance(value, list) else [value]
            text = next((item for item in items if isinstance(item, str)), "")
        return text[:MAX_PROMPT_CHARS].replace("\x00", "")

    def prompt_estimate(self) -> int:
        """The request's own estimate of its prompt tokens (for a missing or dropped count)."""
        payload = self.req.payload
        if self.req.endpoint == "chat":
            return prompt_tokens(payload.get("messages"))
        value = payload.get("input")
        texts = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        return sum(
            estimate_tokens(t) if isinstance(t, str) else len(t) if isinstance(t, list) else 0
            for t in texts
        )


async def proxy(req: ClientRequest, config: GatewayConfig) -> HttpResponse | StreamingHttpResponse:
    payload = validate_payload(req.endpoint, req.payload)
    balancer = find_balancer(config, req.key, payload["model"], req.endpoint)
    check_route_override(req.key, req.route_override)
    if req.key.rate_limit_per_minute:
        wait = await check_rate_limit(req.key.pk, req.key.rate_limit_per_minute)
        if wait is not None:
            raise errors.rate_limited(wait)
    req.use_case = resolve_use_case(req, payload)
    balancer, payload = with_direct_models(config, req.key, balancer, payload)
    payload, auto = routing_options(
        balancer, req.key, payload
    )  # consumed: never forwarded upstream
    if auto is not None:
        auto = with_difficulty(auto, payload, req.endpoint)
    # Response cache (gateway.hotpath.cache): a hit answers here, before any decision or attempt.
    lookup = await cache.look_up(balancer, req, req.cache_control)
    if lookup is not None and lookup.entry is not None:
        return cache.hit_response(lookup, req, balancer)  # costs nothing: no budget applies
    # Budgets (gateway.engine.budgets): a reached one refuses (429) or downgrades.
    verdict = await budgets.check(
        config,
        key_pk=req.key.pk,
        team_pk=req.key.team_pk,
        balancer_pk=balancer.pk,
        now=req.created_at,
    )
    if verdict.downgrade is not None:
        if balancer.routing_mode == AUTO:
            auto = dataclasses.replace(
                auto
                or AutoRequest(
                    preference=balancer.auto_preference, free_only=balancer.auto_free_only
                ),
                preference=COST,
            )
            decision = Decision(route=None, reason="budget_downgrade")
        else:
            now = routing.clock()
            cheapest = cheapest_route(
                balancer,
                lambda instance: routing.health.is_eligible(instance.pk, now),
                load=routing.load,
                now=now,
            )
            decision = Decision(route=cheapest, reason="budget_downgrade")
    else:
        decision = await decide(
            balancer,
            config.version,
            payload,
            req.route_override,
            endpoint=req.endpoint,
            key_name=req.key.name,
            tags=req.tags,
        )
    plan = plan_attempts(
        balancer,
        routing,
        first=decision.route,
        reason=decision.reason,
        auto=auto,
        needs=needs_of(payload, req.endpoint),
    )
    plan.on_close = capacity_slots.slots.release
    if plan.skipped and not plan.capable:
        raise no_capable_target_error(balancer, plan.skipped)
    if plan.auto is not None and not plan.auto.pool:
        raise empty_pool_error(balancer, plan.auto)
    ledger = _Ledger(req, balancer, decision, plan, scrubber_for(config.instances, config.secrets))
    if verdict.downgrade is not None:
        ledger.budget_note = "downgraded"
    elif verdict.warning:
        ledger.budget_note = "warning"
    stream = req.endpoint == "chat" and payload.get("stream") is True
    client_wants_usage = bool(stream and (payload.get("stream_options") or {}).get("include_usage"))
    deadline = req.started + balancer.request_timeout
    last_failure: UpstreamFailure | None = None
    too_long: tuple[UpstreamFailure, Attempt] | None = None  # a context-length refusal

    call = _Caller(req, ledger, payload, stream, client_wants_usage, deadline)
    racing: list[_Running] = []  # attempts in flight past the fast path (a latency threshold)
    try:
        while True:
            if not racing:
                attempt = await _next_attempt(plan, balancer)
                if attempt is None:
                    break
                if latency_threshold(attempt) is None:
                    # The fast path: no threshold to watch, the attempt is awaited in place.
                    started = time.monotonic()
                    try:
                        answer = await call(attempt)
                    except UpstreamFailure as failure:
                        if not failure.retryable and context_exceeded(failure):
                            too_long = _outgrown(failure, ledger, attempt, started)
                            continue
                        if not failure.retryable:
                            return _refused(failure, ledger, attempt, started)
                        last_failure = _failed(failure, ledger, attempt, started)
                        if time.monotonic() >= deadline:
                            break
                        continue
                    except asyncio.CancelledError:
                        plan.abandoned()
                        ledger.log_attempt(attempt, "cancelled", started)
                        ledger.record(
                            status=499,
                            attempt=attempt,
                            error_type="client_disconnected",
                            stream=stream,
                        )
                        raise
                    return await _answered(
                        answer, ledger, attempt, started, client_wants_usage, deadline, lookup
                    )
                racing.append(_Running(attempt, call))
            newest = racing[-1]
            threshold = latency_threshold(newest.attempt)
            until = None
            if threshold is not None and not newest.past_threshold:
                until = newest.started + threshold
            try:
                done = await _first_done([r.task for r in racing], until)
            except asyncio.CancelledError:
                for running in racing:
                    await running.stop()
                    plan.abandoned(running.attempt)
                    ledger.log_attempt(running.attempt, "cancelled", running.started)
                ledger.record(
                    status=499,
                    attempt=newest.attempt,
                    error_type="client_disconnected",
                    stream=stream,
                )
                racing.clear()
                raise
            if not done:  # the newest attempt passed its route's latency threshold
                newest.past_threshold = True
                following = await _next_attempt(plan, balancer, keep_open=True)
                if following is None:
                    continue  # nothing to try instead: keep waiting for it
                if not newest.attempt.route.hedge:
                    racing.remove(newest)
                    await newest.stop()
                    elapsed = time.monotonic() - newest.started
                    plan.overtaken(newest.attempt, latency_s=elapsed)
                    ledger.log_attempt(
                        newest.attempt,
                        "latency_threshold",
                        newest.started,
                        detail=f"no first byte within {threshold:g}s",
                    )
                racing.append(_Running(following, call, hedge=bool(racing)))
                continue
            for running in [r for r in racing if r.task in done]:  # oldest first
                racing.remove(running)
                try:
                    answer = running.task.result()
                except UpstreamFailure as failure:
                    if not failure.retryable and context_exceeded(failure):
                        too_long = _outgrown(failure, ledger, running.attempt, running.started)
                        continue
                    if not failure.retryable:
                        await _overtake(racing, ledger, "cancelled")
                        return _refused(failure, ledger, running.attempt, running.started)
                    last_failure = _failed(failure, ledger, running.attempt, running.started)
                    continue
                await _overtake(racing, ledger, "hedge_lost")
                return await _answered(
                    answer,
                    ledger,
                    running.attempt,
                    running.started,
                    client_wants_usage,
                    deadline,
                    lookup,
                    hedge=running.hedge,
                )
            if racing and racing[-1].past_threshold and time.monotonic() < deadline:
                # A racer failed while an older one, past its threshold, still runs: its
                # failover starts now and joins the race.
                following = await _next_attempt(plan, balancer, keep_open=True)
                if following is not None:
                    racing.append(_Running(following, call, hedge=True))
            elif not racing and time.monotonic() >= deadline:
                break
    finally:
        for running in racing:  # an unexpected error: nothing may keep running upstream
            await running.stop()
            if any(a is running.attempt for a in plan.open_attempts):
                plan.abandoned(running.attempt)

    if too_long is not None and last_failure is None:
        # No larger window to fail over to: the upstream's own answer, as any client error.
        refusal, refused = too_long
        ledger.record(
            status=refusal.status or 400, attempt=refused, error_type="context_length_exceeded"
        )
        return _client_error(refusal, ledger.headers(refused), ledger.scrubber)
    status = 504 if last_failure is not None and last_failure.is_timeout else 502
    error_type = (
        last_failure.kind if status == 504 and last_failure is not None else "upstream_failed"
    )
    ledger.record(status=status, attempt=None, error_type=error_type)
    tried = (
        "; ".join(
            f"{a['instance']} ({a['route']}): "
            f"{a['outcome']}{' ' + str(a['status']) if a['status'] else ''}"
            for a in ledger.attempt_log
            if a["outcome"] != SKIPPED
        )
        or "no instance was available"
    )
    raise errors.GatewayError(
        status,
        ledger.scrubber.text(f"Every attempt failed for {balancer.serving_name}. Tried: {tried}."),
        type="upstream_error",
        code="upstream_timeout" if status == 504 else "upstream_unavailable",
        headers=ledger.headers(None),
    )


async def _next_attempt(
    plan: AttemptPlan, balancer: BalancerSpec, *, keep_open: bool = False
) -> Attempt | None:
    """plan.next(), with a shared slot taken on reserved capacity (capacity_slots): when every
    worker's requests fill the instance, the attempt is undone and the pick made again, which
    spills over (or queues on a reserved instance already found full: no slot asked then)."""
    attempt = plan.next(keep_open=keep_open)
    found_full: set[int] = set()
    while (
        attempt is not None
        and capacity_slots.checks_capacity(attempt)
        and attempt.instance.pk not in found_full
    ):
        lease = balancer.request_timeout + capacity_slots.LEASE_MARGIN_SECONDS
        if await capacity_slots.slots.claim(attempt, lease):
            break
        found_full.add(attempt.instance.pk)
        plan.full(attempt, until=capacity_slots.slots.full_until(plan.routing.clock()))
        attempt = plan.next(keep_open=True)
    return attempt


SKIPPED = "skipped"  # an attempt-log entry for a target left out for a capability
CONTEXT_EXCEEDED = "context_length_exceeded"
MAX_SKIPPED_HEADER = 1000
# How upstreams say "the prompt is larger than my context window" in a 4xx answer: OpenAI's
# code `context_length_exceeded` ("This model's maximum context length is N tokens"),
# Anthropic's "prompt is too long: N tokens > M maximum", Gemini's "input token count ...
# exceeds the maximum", vLLM's and others' wordings of the same.
_CONTEXT_CODES = frozenset({"context_length_exceeded"})
_CONTEXT_MESSAGE = re.compile(
    r"context[ _-]?length|context window|maximum context|prompt is too long|input is too long"
    r"|too many (?:input )?tokens|input token count.*exceeds|exceeds the maximum (?:number of "
    r")?tokens",
    re.IGNORECASE,
)


def latency_threshold(attempt: Attempt) -> float | None:
    """The attempt's latency threshold: its route's, else its instance's (docs/routing.md)."""
    threshold = attempt.route.latency_threshold
    return threshold if threshold is not None else attempt.instance.latency_threshold


def context_exceeded(failure: UpstreamFailure) -> bool:
    """Whether an upstream's client error says the prompt is larger than its context window."""
    if failure.status not in (400, 413, 422) or not failure.body:
        return False
    try:
        parsed = orjson.loads(failure.body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and error.get("code") in _CONTEXT_CODES:
        return True
    return _CONTEXT_MESSAGE.search(_upstream_message(failure.body)[:2000]) is not None


def _skipped_header(plan: AttemptPlan) -> str:
    """`inst_a: no vision (...); inst_b: ...` for the x-balancer-skipped header (bounded)."""
    text = "; ".join(f"{m.instance.instance_id}: {reason}" for _, m, reason in plan.skipped)
    return text if len(text) <= MAX_SKIPPED_HEADER else text[: MAX_SKIPPED_HEADER - 3] + "..."


def _cache_entry(
    body: bytes, attempt: Attempt, prompt: int, completion: int, cached: int = 0
) -> cache.Entry:
    return cache.Entry(
        body=body,
        route=attempt.route.name,
        instance=attempt.instance.instance_id,
        model=attempt.instance.model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=_cost(attempt.instance, prompt, completion, cached),
    )


def _failure_text(failure: UpstreamFailure) -> str:
    """What went wrong, with the upstream's own error message when it sent one."""
    message = _upstream_message(failure.body)
    return f"{failure.detail}: {message}" if message else failure.detail


@dataclass(frozen=True, slots=True)
class _Tokens:
    prompt: int
    completion: int
    note: str = ""
    cached: int = 0  # of `prompt`, read from the provider's prompt cache


def _read_answer(
    result: UpstreamResponse, instance: InstanceSpec, ledger: _Ledger
) -> tuple[bytes, _Tokens]:
    """The answer checked (a malformed one is an UpstreamFailure) and its token counts made valid;
    `model` filled in only if the upstream left it out."""
    try:
        data = orjson.loads(result.body)
    except orjson.JSONDecodeError:
        raise UpstreamFailure(
            "malformed", "the upstream answered with a body that is not JSON"
        ) from None
    try:
        check_answer(data, ledger.req.endpoint)
        reported = read_usage(data.get("usage"), limit=settings.GATEWAY_MAX_REPORTED_TOKENS)
    except MalformedAnswer as exc:
        raise UpstreamFailure("malformed", str(exc)) from None
    prompt, completion = reported.prompt, reported.completion
    note = reported.note
    if note:  # a count was dropped: the request's own estimate stands in for it
        if prompt is None:
            prompt = ledger.prompt_estimate()
        if completion is None and ledger.req.endpoint == "chat":
            completion = completion_estimate(data)
        note += ": estimated"
    body = result.body
    if not data.get("model"):
        data["model"] = instance.model
        body = orjson.dumps(data)
    return body, _Tokens(prompt or 0, completion or 0, note, reported.cached)


@dataclass(frozen=True, slots=True)
class _Answer:
    result: UpstreamResponse | UpstreamStream
    body: bytes = b""  # a whole answer, checked (UpstreamResponse)
    tokens: _Tokens | None = None


class _Caller:
    """One attempt's call: the client's payload for the attempt's instance, then the answer read
    and checked (a malformed one is an UpstreamFailure, so it fails over like any other)."""

    __slots__ = ("client_wants_usage", "deadline", "ledger", "payload", "req", "stream")

    def __init__(
        self,
        req: ClientRequest,
        ledger: _Ledger,
        payload: dict[str, Any],
        stream: bool,
        client_wants_usage: bool,
        deadline: float,
    ) -> None:
        self.req, self.ledger, self.payload = req, ledger, payload
        self.stream, self.client_wants_usage, self.deadline = stream, client_wants_usage, deadline

    async def __call__(self, attempt: Attempt) -> _Answer:
        instance = attempt.instance
        payload = self.payload
        upstream_payload = dict(payload)
        upstream_payload["model"] = instance.model
        if self.stream and not self.client_wants_usage:
            # Ask for usage anyway so the request can be costed; the extra chunk is not relayed.
            upstream_payload["stream_options"] = {
                **(payload.get("stream_options") or {}),
                "include_usage": True,
            }
        result = await call_upstream(
            instance,
            endpoint=self.req.endpoint,
            payload=upstream_payload,
            stream=self.stream,
            deadline=self.deadline,
            native=self.req.native,
        )
        if isinstance(result, UpstreamResponse):
            body, tokens = _read_answer(result, instance, self.ledger)
            return _Answer(result, body, tokens)
        return _Answer(result)


class _Running:
    """An attempt running as a task, so that its route's latency threshold can be watched and
    another attempt can race it (docs/routing.md, "Latency threshold and hedging")."""

    __slots__ = ("attempt", "hedge", "past_threshold", "started", "task")

    def __init__(self, attempt: Attempt, call: _Caller, *, hedge: bool = False) -> None:
        self.attempt = attempt
        self.hedge = hedge  # started while an earlier attempt was still running
        self.past_threshold = False
        self.started = time.monotonic()
        self.task: asyncio.Task[_Answer] = asyncio.create_task(call(attempt))

    async def stop(self) -> None:
        """Cancel the attempt: its upstream connection is closed, so the upstream sees the request
        go; an answer that had already come is let go (a stream closed), never relayed or billed."""
        task = self.task
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
        if task.cancelled() or task.exception() is not None:
            return
        result = task.result().result
        if isinstance(result, UpstreamStream):
            await result.aclose()


async def _first_done(
    tasks: list[asyncio.Task[_Answer]], until: float | None
) -> set[asyncio.Task[_Answer]]:
    """Wait for the first of the racing attempts to finish, or for time.monotonic() to reach
    `until` (the newest attempt's latency threshold): an empty set means the threshold has passed
    on the clock the attempt log measures with. The loop's timer alone is not that clock: uvloop
    counts whole milliseconds from the loop's cached time and fires up to ~1 ms early."""
    while True:
        timeout = None if until is None else max(0.0, until - time.monotonic())
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if done or until is None or time.monotonic() >= until:
            return done


async def _overtake(racing: list[_Running], ledger: _Ledger, outcome: str) -> None:
    """The request is settled by another attempt: every one still racing is cancelled, recorded in
    the attempt log with `outcome`, and given no verdict on its instance's health."""
    for running in racing:
        await running.stop()
        ledger.plan.overtaken(running.attempt)
        ledger.log_attempt(running.attempt, outcome, running.started, hedge=running.hedge)
    racing.clear()


def _failed(
    failure: UpstreamFailure, ledger: _Ledger, attempt: Attempt, started: float
) -> UpstreamFailure:
    """A retryable failure: the instance is blamed, the next target may follow."""
    ledger.plan.failed(retry_after=failure.retry_after, attempt=attempt)
    ledger.log_attempt(attempt, failure.kind, started, failure.status, failure.detail)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "attempt on %s failed: %s (%s)",
            attempt.instance.instance_id,
            failure.kind,
            ledger.scrubber.text(_failure_text(failure)),
        )
    return failure


def _outgrown(
    failure: UpstreamFailure, ledger: _Ledger, attempt: Attempt, started: float
) -> tuple[UpstreamFailure, Attempt]:
    """The upstream refused the prompt as larger than its context window: no penalty; the
    targets whose window is not larger are skipped, the next one is larger."""
    ledger.plan.outgrown(attempt)
    ledger.log_attempt(attempt, CONTEXT_EXCEEDED, started, failure.status, _failure_text(failure))
    ledger.log_skipped()
    return failure, attempt


def _refused(
    failure: UpstreamFailure, ledger: _Ledger, attempt: Attempt, started: float
) -> HttpResponse:
    """The instance answered; the request itself is at fault: our own error, with the upstream's
    message."""
    ledger.plan.succeeded(latency_s=time.monotonic() - started, attempt=attempt)
    ledger.log_attempt(attempt, "client_error", started, failure.status)
    ledger.record(status=failure.status or 400, attempt=attempt, error_type="upstream_client_error")
    return _client_error(failure, ledger.headers(attempt), ledger.scrubber)


async def _answered(
    answer: _Answer,
    ledger: _Ledger,
    attempt: Attempt,
    started: float,
    client_wants_usage: bool,
    deadline: float,
    lookup: cache.Lookup | None,
    *,
    hedge: bool = False,
) -> HttpResponse | StreamingHttpResponse:
    """The attempt that answered: its answer relayed, billed and recorded as served."""
    ledger.log_attempt(attempt, "ok", started, 200, hedge=hedge)
    ledger.ttfb_ms = round((time.monotonic() - ledger.req.started) * 1000, 3)
    result = answer.result
    if isinstance(result, UpstreamStream):
        # The verdict on the instance waits for the stream's end: a stream that breaks
        # after its first byte is a failure of the instance (though not failed over).
        ledger.req.recorded = True  # by the relay, when the stream ends
        end = min(deadline, started + attempt.instance.request_timeout)
        return _stream_response(
            result,
            ledger,
            attempt,
            strip_usage=not client_wants_usage,
            started=started,
            end=end,
            lookup=lookup,
        )
    tokens = answer.tokens or _Tokens(0, 0)
    ledger.plan.succeeded(latency_s=time.monotonic() - started, attempt=attempt)
    ledger.record(
        status=200,
        attempt=attempt,
        prompt=tokens.prompt,
        completion=tokens.completion,
        usage_note=tokens.note,
        cached=tokens.cached,
    )
    body = ledger.scrubber.body(answer.body)
    response = HttpResponse(body, content_type="application/json")
    for key, value in ledger.headers(attempt).items():
        response[key] = value
    if lookup is not None:  # response cache: keep the 200 answer
        await cache.store(
            lookup, _cache_entry(body, attempt, tokens.prompt, tokens.completion, tokens.cached)
        )
        cache.mark(response, lookup)
    return response


_ERROR_TYPE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


def _upstream_message(body: bytes | None) -> str:
    """The message of an upstream error body (OpenAI's shape, or text), unscrubbed; "" if none."""
    if not body:
        return ""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace").strip()
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return parsed["message"]
    return ""


def _client_error(
    failure: UpstreamFailure, headers: dict[str, str], scrubber: Scrubber
) -> HttpResponse:
    """An upstream's refusal of the request, rebuilt as our own OpenAI-shaped error: the upstream's
    message, type, param and code kept only as scrubbed, bounded strings; nothing else relayed."""
    status = failure.status or 400
    error: Any = None
    try:
        parsed = orjson.loads(failure.body) if failure.body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
    message = (
        scrubber.text(_upstream_message(failure.body))[:2000]
        or f"The upstream refused the request (HTTP {status})."
    )
    kind = error.get("type") if error is not None else None
    param = error.get("param") if error is not None else None
    code = error.get("code") if error is not None else None
    body = orjson.dumps(
        {
            "error": {
                "message": message,
                "type": kind
                if isinstance(kind, str) and _ERROR_TYPE.match(kind)
                else "invalid_request_error",
                "param": scrubber.text(param)[:200] if isinstance(param, str) else None,
                "code": scrubber.text(str(code))[:100]
                if isinstance(code, str | int) and not isinstance(code, bool)
                else None,
            }
        }
    )
    response = HttpResponse(body, status=status, content_type="application/json")
    for key, value in headers.items():
        response[key] = value
    return response


class _StreamUsage:
    """Token counts seen in a stream's usage chunk, made valid as they arrive."""

    __slots__ = ("cached", "completion", "note", "prompt")

    def __init__(self) -> None:
        self.prompt: int | None = None
        self.completion: int | None = None
        self.cached = 0
        self.note = ""

    def take(self, found: Any) -> None:
        try:
            reported = read_usage(found, limit=settings.GATEWAY_MAX_REPORTED_TOKENS)
        except MalformedAnswer as exc:  # too late to fail over: drop it, like an impossible count
            self.note = f"{exc}"
            self.prompt = self.completion = None
            self.cached = 0
            return
        self.prompt, self.completion, self.note, self.cached = (
            reported.prompt,
            reported.completion,
            reported.note,
            reported.cached,
        )


def _stream_response(
    result: UpstreamStream,
    ledger: _Ledger,
    attempt: Attempt,
    *,
    strip_usage: bool,
    started: float,
    end: float,
    lookup: cache.Lookup | None = None,
) -> StreamingHttpResponse:
    """Relay the stream; it ends at `end` (the request's deadline) whatever the upstream still
    sends.

    After the first byte nothing can fail over, but the outcome still counts for the instance's
    health: a normal end is a success, a break, a stall (no event within the instance's
    first_byte_timeout) or the request's timeout a failure, the client leaving no verdict.
    A failed stream ends with an OpenAI-shaped error event and `data: [DONE]`.
    """
    instance = attempt.instance
    idle = instance.first_byte_timeout
    scrubber = ledger.scrubber
    state = _RelayState()
    ttfb_s = time.monotonic() - started
    capture = cache.capture_for(
        lookup, stream=True
    )  # response cache: the answer assembled as it streams

    def settle(
        *,
        outcome: str,
        status: int,
        error_type: str,
        usage: _StreamUsage,
        content_chunks: int,
        detail: str = "",
    ) -> None:
        if state.settled:
            return
        state.settled = True
        plan = ledger.plan
        if outcome == "ok":
            plan.succeeded(latency_s=ttfb_s, attempt=attempt)
        elif outcome == "abandoned":
            plan.abandoned(attempt)
        else:
            plan.failed(attempt=attempt)
            entry = ledger.attempt_log[-1]
            entry["outcome"], entry["status"] = error_type, status
            entry["ms"] = round((time.monotonic() - started) * 1000, 2)
            if detail:
                entry["detail"] = scrubber.text(detail)[:300]
        note = usage.note
        prompt, completion = usage.prompt, usage.completion
        if prompt is None:
            prompt = ledger.prompt_estimate()
        if completion is None:
            completion = max(0, content_chunks - 2)
        if note:
            note += ": estimated"
        ledger.record(
            status=status,
            attempt=attempt,
            prompt=prompt,
            completion=completion,
            error_type=error_type,
            stream=True,
            usage_note=note,
            cached=usage.cached,
        )
        if (
            capture is not None and lookup is not None and outcome == "ok"
        ):  # response cache: a complete stream
            body = capture.body(prompt, completion)
            if body is not None:
                cache.store_later(
                    lookup, _cache_entry(body, attempt, prompt, completion, usage.cached)
                )

    async def relay() -> AsyncIterator[bytes]:
        state.started = True
        usage = _StreamUsage()
        content_chunks = 0
        outcome, status, error_type = "ok", 200, ""
        failure: UpstreamFailure | None = None
        try:
            try:
                event = _inspect(result.first, usage, strip_usage)
                if event:
                    event = scrubber.body(event)
                    if capture is not None:
                        capture.feed(event)
                    yield event
                iterator = result.rest.__aiter__()
                while True:
                    remaining = end - time.monotonic()
                    wait = min(idle, remaining)
                    try:
                        if wait <= 0:
                            raise TimeoutError
                        async with asyncio.timeout(wait):
                            raw = await iterator.__anext__()
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        if wait < idle:
                            raise UpstreamFailure(
                                "request_timeout",
                                f"the stream ran past the request timeout "
                                f"({end - started:g}s for this attempt)",
                            ) from None
                        raise UpstreamFailure("stall_timeout", f"no data for {idle:g}s") from None
                    content_chunks += 1
                    event = _inspect(raw, usage, strip_usage)
                    if event:
                        event = scrubber.body(event)
                        if capture is not None:
                            capture.feed(event)
                        yield event
            except UpstreamFailure as exc:
                failure = exc
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except (
                Exception
            ) as exc:  # the upstream broke after the first byte (reset, bad framing...)
                failure = UpstreamFailure("stream_interrupted", str(exc) or type(exc).__name__)
            if failure is not None:
                outcome = "failed"
                status = 504 if failure.is_timeout else 502
                error_type = failure.kind if failure.is_timeout else "stream_interrupted"
                detail = scrubber.text(failure.detail)
                logger.warning(
                    "stream from %s failed after the first byte: %s (%s)",
                    instance.instance_id,
                    error_type,
                    detail,
                )
                yield (
                    b"data: "
                    + orjson.dumps(
                        {
                            "error": {
                                "message": _STREAM_ERRORS.get(
                                    error_type, "The upstream stream was interrupted ({detail})."
                                ).format(
                                    detail=detail,
                                    timeout=ledger.balancer.request_timeout,
                                    idle=idle,
                                ),
                                "type": "upstream_error",
                                "param": None,
                                "code": error_type,
                            }
                        }
                    )
                    + b"\n\n"
                )
                yield b"data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            if failure is None:
                outcome, status, error_type = "abandoned", 499, "client_disconnected"
            raise
        finally:
            await result.aclose()
            settle(
                outcome=outcome,
                status=status,
                error_type=error_type,
                usage=usage,
                content_chunks=content_chunks,
                detail=failure.detail if failure is not None else "",
            )

    def unstarted() -> None:
        """The client left before the body was iterated: close the upstream stream, no verdict."""
        if not state.started and not state.settled:
            settle(
                outcome="abandoned",
                status=499,
                error_type="client_disconnected",
                usage=_StreamUsage(),
                content_chunks=0,
            )
            task = asyncio.ensure_future(result.aclose())
            _background.add(task)
            task.add_done_callback(_background.discard)

    response = StreamingHttpResponse(_Relay(relay(), unstarted), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    for key, value in ledger.headers(attempt).items():
        response[key] = value
    cache.mark(response, lookup)
    return response


_STREAM_ERRORS = {
    "request_timeout": "The request ran past the balancer's request_timeout ({timeout:g}s); the "
    "stream was cut.",
    "stall_timeout": "The upstream sent nothing for {idle:g}s; the stream was cut.",
}
_background: set[asyncio.Task[None]] = set()


class _RelayState:
    __slots__ = ("settled", "started")

    def __init__(self) -> None:
        self.started = False
        self.settled = False


class _Relay:
    """A stream's body. Django calls `close()` at the end of the request (from a worker thread);
    a body never iterated (the client left first) is settled then, on the event loop."""

    def __init__(self, body: AsyncIterator[bytes], unstarted: Any) -> None:
        self._body = body
        self._unstarted = unstarted
        self._loop = asyncio.get_running_loop()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body

    def close(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._unstarted)
        except RuntimeError:  # the loop is closed: nothing left to settle
            pass


def _inspect(event: bytes, usage: _StreamUsage, strip_usage: bool) -> bytes | None:
    """Pick the usage out of a chunk; drop the usage-only chunk the client did not ask for."""
    if b'"usage"' not in event or b'"usage":null' in event or b'"usage": null' in event:
        return event
    data = event_data(event)
    if data is None:
        return event
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return event
    if isinstance(chunk, dict) and "usage" in chunk and chunk["usage"] is not None:
        usage.take(chunk["usage"])
        if strip_usage and not chunk.get("choices"):
            return None
    return event
