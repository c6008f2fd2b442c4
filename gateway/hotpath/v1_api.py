"""The OpenAI-compatible gateway endpoints (/v1/...), as DRF async views (adrf).

The work is in gateway.hotpath.proxy; these views only authenticate, parse and answer
errors in the OpenAI shape. `GatewayApiView` runs the part of DRF's `initial()`
these views use, key authentication, inline instead of in a thread as adrf
would: it does no I/O, and a thread hop per request costs more than the whole
routing decision. The rest of `initial()` has nothing to do here (no format
suffixes, versioning, permissions or throttles; the views answer Django
responses, JSON or SSE, so there is no content to negotiate).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from adrf.requests import AsyncRequest
from adrf.views import APIView
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer

from gateway.engine.capability import needs_of, unfit_instances
from gateway.engine.planner import first_route, route_order
from gateway.engine.rules import MATCHED, RuleCheck
from gateway.engine.types import DIRECT_ROUTE, BalancerSpec, RouteSpec, RuleSpec
from gateway.hotpath import completions_wire, errors, messages_wire, outcomes, responses_wire
from gateway.hotpath.auth import GatewayKeyAuthentication, GatewayPrincipal
from gateway.hotpath.auto_request import explain_auto, routing_options, with_difficulty
from gateway.hotpath.decision import Decision, decide
from gateway.hotpath.direct import with_direct_models
from gateway.hotpath.proxy import (
    ClientRequest,
    check_route_override,
    find_balancer,
    proxy,
    validate_payload,
)
from gateway.hotpath.readiness import readiness
from gateway.hotpath.runtime import routing
from gateway.hotpath.snapshot import GatewayConfig, KeySpec, holder
from gateway.hotpath.usage import recorder
from targetgroups.providers import direct_models, model_kind

logger = logging.getLogger(__name__)

# What /v1 serves, named in the 404 for any other path.
ENDPOINTS = (
    "POST /v1/chat/completions",
    "POST /v1/embeddings",
    "GET /v1/models",
    "GET /v1/models/{model}",
    "POST /v1/explain",
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "POST /v1/responses",
    "GET /v1/responses/{id}",
    "DELETE /v1/responses/{id}",
    "GET /v1/responses/{id}/input_items",
    "POST /v1/completions",
)


def exception_response(exc: Exception) -> HttpResponse:
    """Every gateway error in the OpenAI shape; never a traceback."""
    if isinstance(exc, errors.GatewayError):
        return exc.response()
    if isinstance(exc, drf_exceptions.APIException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        kind = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        return errors.GatewayError(
            exc.status_code, detail, type=kind, code=exc.default_code
        ).response()
    logger.exception("unexpected gateway error", exc_info=exc)
    return errors.GatewayError(
        500, "Internal gateway error; see the gateway log.", type="server_error"
    ).response()


def drf_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse:
    return exception_response(exc)


def read_json(request: HttpRequest) -> Any:
    limit = settings.GATEWAY_MAX_BODY_BYTES
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > limit:
        raise errors.too_large(limit)
    try:
        body = request.body
    except RequestDataTooBig:
        raise errors.too_large(limit) from None
    if len(body) > limit:
        raise errors.too_large(limit)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(f"The request body is not valid JSON: {exc}.") from None
    request.gateway_payload = payload  # type: ignore[attr-defined]  # the serving name of a refused request's event
    return payload


def request_id(request: HttpRequest) -> str:
    # The edge (gateway.hotpath.asgi) picks it once per request, so every answer and event carries
    # the same one.
    given = getattr(request, "gateway_request_id", None)
    return given or outcomes.request_id_for(request.META.get("HTTP_X_REQUEST_ID", ""))


def route_override(request: HttpRequest, key: KeySpec) -> str | None:
    """The X-Balancer-Route header, if this key may send one (403 otherwise; proxy() checks it
    too)."""
    return check_route_override(key, request.META.get("HTTP_X_BALANCER_ROUTE") or None)


async def load_config() -> GatewayConfig:
    try:
        return await holder.get()
    except Exception:
        logger.exception("cannot load the gateway configuration")
        raise errors.GatewayError(
            503,
            "The gateway configuration is not available yet; retry shortly.",
            type="server_error",
            code="config_unavailable",
            headers={"Retry-After": "1"},
        ) from None


class JsonOnly(BaseContentNegotiation):
    """Always JSON (streams set their own type): no Accept parsing, and no 406 for
    `Accept: text/event-stream`, which SSE clients send."""

    def select_parser(self, request: Any, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


_AUTHENTICATORS = (GatewayKeyAuthentication(),)
_NEGOTIATOR = JsonOnly()


class GatewayApiView(APIView):
    schema = (
        None  # the OpenAI-compatible API is OpenAI's; /api/schema/ documents the management API
    )
    content_negotiation_class = JsonOnly
    authentication_classes = [GatewayKeyAuthentication]
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []
    parser_classes: list[Any] = []
    renderer_classes = [JSONRenderer]
    # adrf's dispatch() reads view_is_async on every request, and Django's classproperty
    # walks every handler method to answer (3.9% of the worker's CPU at 256 connections).
    view_is_async = True

    def get_exception_handler(self) -> Any:
        return drf_exception_handler

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> AsyncRequest:
        # What adrf builds, without instantiating the (stateless) authenticator, the parser
        # list and the negotiator anew for every request.
        return AsyncRequest(
            request,
            parsers=(),
            authenticators=_AUTHENTICATORS,
            negotiator=_NEGOTIATOR,
            parser_context={"view": self, "args": args, "kwargs": kwargs},
        )

    async def async_dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.args, self.kwargs = args, kwargs
        drf_request = self.initialize_request(request, *args, **kwargs)
        self.request = drf_request
        self.headers = self.default_response_headers
        method = (request.method or "").lower()
        try:
            # The method first, before any key: a wrong one is the same mistake with or without a
            # key.
            if method == "options":
                response = HttpResponse(status=204, headers={"Allow": self.allow_header()})
            elif method not in self.http_method_names or not hasattr(self, method):
                raise errors.GatewayError(
                    405,
                    f"{request.method} is not allowed on {request.path}; allowed: "
                    f"{self.allow_header()}.",
                    code="method_not_allowed",
                    headers={"Allow": self.allow_header()},
                )
            else:
                request.gateway_config = await load_config()  # type: ignore[attr-defined]
                self.perform_authentication(drf_request)
                request.gateway_key = self.key(drf_request)  # type: ignore[attr-defined]
                response = await getattr(self, method)(drf_request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(drf_request, response, *args, **kwargs)
        return self.response

    def allow_header(self) -> str:
        return ", ".join(self._allowed_methods())

    @staticmethod
    def key(request: Any) -> KeySpec:
        user = request.user
        assert isinstance(user, GatewayPrincipal)
        return user.key

    @staticmethod
    def config(request: Any) -> GatewayConfig:
        return request._request.gateway_config


async def serve_proxy(
    request: HttpRequest, endpoint: str, key: KeySpec, config: GatewayConfig
) -> HttpResponse:
    client_request = ClientRequest(
        endpoint=endpoint,
        payload=read_json(request),
        key=key,
        request_id=request_id(request),
        route_override=request.META.get("HTTP_X_BALANCER_ROUTE") or None,
        cache_control=request.META.get("HTTP_CACHE_CONTROL", ""),
        started=time.monotonic(),
        created_at=datetime.now(
            UTC
        ),  # what timezone.now() gives with USE_TZ, without reading settings
        tags=request.META.get("HTTP_X_BALANCER_TAGS", ""),
        use_case_header=request.META.get("HTTP_X_BALANCER_USE_CASE", ""),
    )
    request.client_request = client_request  # type: ignore[attr-defined]  # the edge records what proxy() did not
    return await proxy(client_request, config)  # type: ignore[return-value]


def translated_request(
    request: HttpRequest, payload: dict[str, Any], key: KeySpec, door: str
) -> ClientRequest:
    """The chat request that a body of another door (`door`: messages, responses, completions)
    became, routed as chat and recorded with the door's name; the edge told about it."""
    client_request = ClientRequest(
        endpoint="chat",
        usage_endpoint=door,
        payload=payload,
        key=key,
        request_id=request_id(request),
        route_override=request.META.get("HTTP_X_BALANCER_ROUTE") or None,
        started=time.monotonic(),
        created_at=datetime.now(UTC),
        tags=request.META.get("HTTP_X_BALANCER_TAGS", ""),
        use_case_header=request.META.get("HTTP_X_BALANCER_USE_CASE", ""),
    )
    request.client_request = client_request  # type: ignore[attr-defined]  # the edge records what proxy() did not
    return client_request


class ChatCompletionsApi(GatewayApiView):
    async def post(self, request: Any) -> HttpResponse:
        return await serve_proxy(request._request, "chat", self.key(request), self.config(request))


class EmbeddingsApi(GatewayApiView):
    async def post(self, request: Any) -> HttpResponse:
        return await serve_proxy(
            request._request, "embeddings", self.key(request), self.config(request)
        )


def _model_entry(balancer: BalancerSpec) -> dict[str, Any]:
    owned_by = "smart-balancers"
    if balancer.routing_mode == DIRECT_ROUTE:  # a provider's model named directly: its provider's
        owned_by = balancer.routes[0].group.members[0].instance.provider
    return {
        "id": balancer.serving_name,
        "object": "model",
        "created": 0,
        "owned_by": owned_by,
        "workload_kind": balancer.workload_kind,
        "routing_mode": balancer.routing_mode,
    }


def _direct_entry(name: str, provider: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": provider,
        "workload_kind": model_kind(name),
        "routing_mode": DIRECT_ROUTE,
    }


class ModelListApi(GatewayApiView):
    async def get(self, request: Any) -> HttpResponse:
        config, key = self.config(request), self.key(request)
        entries = {
            name: _model_entry(b)
            for name, b in config.routing.balancers.items()
            if b.enabled and (key.allowed is None or name in key.allowed)
        }
        # The goal names (auto, auto-cheap...) of chat this key reaches at least one instance
        # through,
        # unless an operator's balancer has the name.
        for (kind, goal), balancer in config.routing.goals.items():
            if kind == "chat" and goal not in config.routing.balancers and _reaches(balancer, key):
                entries[goal] = _model_entry(balancer)
        # A key allowed to call models by name: the catalogue's models of each provider with a
        # credential (targetgroups.providers.direct_models), unless a serving name has the name.
        if key.allow_direct_models and config.providers:
            for name, provider in direct_models(config.providers):
                entries.setdefault(name, _direct_entry(name, provider))
        return JsonResponse({"object": "list", "data": [entries[n] for n in sorted(entries)]})


def _reaches(goal: BalancerSpec, key: KeySpec) -> bool:
    allowed = key.allowed_instances
    return any(
        (allowed is None or m.instance.pk in allowed)
        and not (
            goal.auto_free_only
            and (m.instance.input_price_per_million or m.instance.output_price_per_million)
        )
        for route in goal.routes
        for m in route.group.members
    )


class ModelDetailApi(GatewayApiView):
    async def get(self, request: Any, model: str) -> HttpResponse:
        config = self.config(request)
        return JsonResponse(_model_entry(find_balancer(config, self.key(request), model, None)))


def as_chat(api: str | None, body: Any) -> Any:
    """The chat request that the body of another door (?api=messages | responses | completions)
    is routed as; a chat body as it is. `previous_response_id` is not followed."""
    try:
        if api == "messages":
            return messages_wire.to_chat(body)
        if api == "responses":
            return responses_wire.to_chat(body)[0]
        if api == "completions":
            return completions_wire.to_chat(body)
    except (
        messages_wire.InvalidMessages,
        responses_wire.InvalidResponsesRequest,
        completions_wire.InvalidCompletionRequest,
    ) as exc:
        raise errors.bad_request(str(exc), param=exc.param) from None
    if api not in (None, "", "chat"):
        raise errors.bad_request(
            "'api' must be chat, messages, responses or completions.", param="api"
        )
    return body


class ExplainApi(GatewayApiView):
    """Which route a chat request would take, and why, without calling any upstream but the router
    model. `?api=messages|responses|completions` explains a body of that door, routed as the chat
    request it becomes."""

    async def post(self, request: Any) -> HttpResponse:
        config = self.config(request)
        payload = validate_payload(
            "chat", as_chat(request._request.GET.get("api"), read_json(request._request))
        )
        balancer = find_balancer(config, self.key(request), payload["model"], "chat")
        override = route_override(request._request, self.key(request))
        key = self.key(request)
        balancer, payload = with_direct_models(config, key, balancer, payload)
        payload, auto = routing_options(balancer, key, payload)
        decision = await decide(
            balancer,
            config.version,
            payload,
            override,
            key_name=key.name,
            tags=request._request.META.get("HTTP_X_BALANCER_TAGS", ""),
            trace=True,
        )
        route, reason = decision.route, decision.reason
        ranking: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        difficulty = decision.difficulty
        demand = None
        unfit = unfit_instances(
            (m.instance for r in balancer.routes for m in r.group.members),
            needs_of(payload, "chat"),
        )
        if route is None and balancer.routing_mode == "auto":
            if auto is not None:
                auto = with_difficulty(auto, payload)
            explained = explain_auto(balancer, auto, unfit)
            route, reason = explained["route"], explained["reason"]
            ranking, skipped = explained["ranking"], explained["skipped"]
            difficulty, demand = explained["difficulty"], explained["demand"]
        else:
            if route is None:
                route, reason = first_route(balancer, routing.selection)
            skipped = _capability_skips(balancer, route, unfit)
        scores = decision.scores
        if not scores and balancer.routing_mode == "weighted":
            total = sum(r.weight for r in balancer.routes if r.enabled) or 1
            scores = {r.name: round(r.weight / total, 4) for r in balancer.routes if r.enabled}
        return JsonResponse(
            {
                "model": balancer.serving_name,
                "routing_mode": balancer.routing_mode,
                "route": route.name if route else None,
                "reason": reason,
                "confidence": decision.confidence,
                "scores": scores,
                "order": [r.name for r in route_order(balancer, route)],
                # Routes with a latency threshold: past it the next target is tried (hedge: raced).
                "latency_thresholds": _latency_thresholds(route_order(balancer, route)),
                "classifier_ms": None
                if decision.classifier_ms is None
                else round(decision.classifier_ms, 3),
                "difficulty": None if difficulty is None else round(difficulty, 4),
                # auto: what the request asks by its size, tools and images (engine/auto.py)
                "demand": demand,
                "cached": decision.cached,
                "ranking": ranking,
                "skipped": skipped,
                "rule": _matched_rule(decision),
                "rules": [_rule_check(check) for check in decision.rule_checks or ()],
            }
        )


def _latency_thresholds(routes: list[RouteSpec]) -> list[dict[str, Any]]:
    """The thresholds in attempt order: a route's, else each of its instances' own (no hedge)."""
    found: list[dict[str, Any]] = []
    for r in routes:
        if r.latency_threshold is not None:
            found.append(
                {
                    "route": r.name,
                    "threshold_ms": round(r.latency_threshold * 1000),
                    "hedge": r.hedge,
                }
            )
            continue
        for m in r.group.members:
            if m.instance.latency_threshold is not None:
                found.append(
                    {
                        "route": r.name,
                        "instance": m.instance.instance_id,
                        "threshold_ms": round(m.instance.latency_threshold * 1000),
                        "hedge": False,
                    }
                )
    return found


def _capability_skips(
    balancer: BalancerSpec, first: RouteSpec | None, unfit: dict[int, str]
) -> list[dict[str, Any]]:
    """The targets of the route order that cannot serve the request, with the reason."""
    found: list[dict[str, Any]] = []
    seen: set[int] = set()
    for route in route_order(balancer, first):
        for member in route.group.members:
            pk = member.instance.pk
            if pk in unfit and pk not in seen:
                seen.add(pk)
                found.append(
                    {
                        "route": route.name,
                        "instance": member.instance.instance_id,
                        "model": member.instance.model,
                        "reason": unfit[pk],
                    }
                )
    return found


def _rule_entry(rule: RuleSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": rule.name, "kind": rule.kind, "route": rule.route}
    if rule.kind in ("regex", "keywords"):
        entry["value"] = rule.text
    elif rule.kind == "prompt_tokens":
        entry.update(min_tokens=rule.min_tokens, max_tokens=rule.max_tokens)
    elif rule.kind == "metadata":
        entry.update(metadata_key=rule.metadata_key, value=rule.value)
    elif rule.value:
        entry["value"] = rule.value
    return entry


def _matched_rule(decision: Decision) -> dict[str, Any] | None:
    """The content rule that chose the route, or None (an override, or no rule matched)."""
    for check in decision.rule_checks or ():
        if check.outcome == MATCHED:
            return _rule_entry(check.rule)
    return None


def _rule_check(check: RuleCheck) -> dict[str, Any]:
    """One rule's outcome: matched, no_match, rule_disabled, route_disabled or not_checked."""
    return {**_rule_entry(check.rule), "outcome": check.outcome}


async def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Any other path under /v1: a 404 in the OpenAI shape, naming what exists."""
    return errors.GatewayError(
        404,
        f"Unknown endpoint {request.method} {request.path[:200]}. This gateway serves: "
        f"{', '.join(ENDPOINTS)}.",
        code="unknown_endpoint",
    ).response()


async def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness for load balancers, with the config version this worker routes from."""
    config = holder.peek()
    return JsonResponse(
        {
            "status": "ok",
            "config_version": config.version if config else None,
            "usage_pending": recorder.pending,
            "usage_dropped": recorder.dropped,
            # refused by the database: see the usage dead letters
            "usage_set_aside": recorder.set_aside,
        }
    )


async def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness for load balancers (gateway/hotpath/readiness.py): 200 when this worker can serve,
    else 503."""
    verdict = await readiness.verdict()
    if verdict.ready:
        return JsonResponse(
            {"status": "ready", "config_version": verdict.config_version, "checks": verdict.checks}
        )
    response = errors.GatewayError(
        503,
        "Not ready: " + "; ".join(verdict.problems()) + ".",
        type="server_error",
        code="not_ready",
    ).response()
    response._has_been_logged = True  # type: ignore[attr-defined]  # readiness logs its changes, not each probe
    return response
