"""Send one test request through the gateway's own code, in process.

The wizard's smoke test and the playground use this instead of an HTTP call to
ourselves: no API key to mint, no base URL to guess, and the same proxy, routing
decision, failover and usage event as a client request.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.utils import timezone

from balancers.models import Route
from gateway.engine.auto import GOALS
from gateway.engine.capability import needs_of, unfit_instances
from gateway.hotpath import errors
from gateway.hotpath.auto_request import (
    explain_auto,
    goal_balancer,
    routing_options,
    with_difficulty,
)
from gateway.hotpath.outcomes import record_outcome
from gateway.hotpath.proxy import ClientRequest, proxy
from gateway.hotpath.runtime import routing
from gateway.hotpath.snapshot import GatewayConfig, KeySpec, holder

# Playground requests belong to no API key: the usage event keeps api_key empty. They come from a
# logged-in operator's session, which may force a route (enabled ones only, like any key).
PLAYGROUND_KEY = KeySpec(
    pk=None,  # type: ignore[arg-type]  # no key row: the usage event's api_key stays empty
    name="playground",
    allowed=None,
    rate_limit_per_minute=None,
    allow_route_override=True,
)
# The playground's "model by name" card: the same, allowed to call a provider's models by name
# (gateway/hotpath/direct.py) through the credentials an operator stored.
PLAYGROUND_DIRECT_KEY = dataclasses.replace(PLAYGROUND_KEY, allow_direct_models=True)


@dataclass
class SmokeResult:
    ok: bool
    status: int
    serving_name: str
    prompt: str
    answer: str = ""
    route: str = ""
    instance: str = ""
    model: str = ""
    decision: str = ""
    attempts: int = 0
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    vector_dimensions: int = 0
    error: str = ""
    request_id: str = ""
    requested_route: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    explained: dict[str, Any] | None = None  # auto: the ranking at send time (explain's shape)
    route_note: str = ""  # a forced route that did not answer: why, and who did


async def _config_with(serving_name: str) -> GatewayConfig:
    # A balancer saved a moment ago may be newer than this process's snapshot.
    config = await holder.refresh()
    if serving_name not in config.routing.balancers and serving_name not in GOALS:
        config = await holder.refresh(force=True)
    return config


async def smoke_test(
    *,
    serving_name: str,
    workload_kind: str,
    prompt: str,
    route: str | None = None,
    extra: dict[str, Any] | None = None,
    direct: bool = False,
) -> SmokeResult:
    """One request to `serving_name`, forced onto `route` when given; never raises for a gateway
    error.

    `extra`: more body fields (the playground's `model_routing_config`). For an auto serving name
    the result carries the ranking the request met, computed just before it is sent. `direct`: the
    request may name a provider's model directly (the playground's model-by-name card).
    """
    request_id = "pg-" + uuid.uuid4().hex[:20]
    if workload_kind == "embeddings":
        payload: dict[str, Any] = {"model": serving_name, "input": prompt}
    else:
        payload = {"model": serving_name, "messages": [{"role": "user", "content": prompt}]}
    payload.update(extra or {})
    started = time.monotonic()
    result = SmokeResult(
        ok=False,
        status=0,
        serving_name=serving_name,
        prompt=prompt,
        request_id=request_id,
        requested_route=route or "",
    )
    client_request = ClientRequest(
        endpoint=workload_kind,
        payload=payload,
        key=PLAYGROUND_DIRECT_KEY if direct else PLAYGROUND_KEY,
        request_id=request_id,
        route_override=route or None,
        started=started,
        created_at=timezone.now(),
    )
    try:
        config = await _config_with(serving_name)
        result.explained = _explained(config, serving_name, workload_kind, payload)
        skipped = _why_skipped(config, serving_name, route) if route else ""
        response = await proxy(client_request, config)
    except errors.GatewayError as exc:
        if (
            not client_request.recorded
        ):  # refused before routing (e.g. a disabled route): recorded all the same
            record_outcome(
                status=exc.status,
                error_code=exc.code or exc.type,
                endpoint=workload_kind,
                request_id=request_id,
                started=started,
                created_at=client_request.created_at,
                serving_name=serving_name,
            )
        result.status, result.error = exc.status, exc.message
        result.headers = dict(exc.headers)
        result.decision = exc.headers.get("x-balancer-decision", "")
        result.attempts = int(exc.headers.get("x-balancer-attempts", "0") or 0)
        result.latency_ms = round((time.monotonic() - started) * 1000, 1)
        return result
    result.latency_ms = round((time.monotonic() - started) * 1000, 1)
    result.status = response.status_code
    result.headers = {k.lower(): v for k, v in response.items()}
    result.route = result.headers.get("x-balancer-route", "")
    result.instance = result.headers.get("x-balancer-instance", "")
    result.decision = result.headers.get("x-balancer-decision", "")
    result.attempts = int(result.headers.get("x-balancer-attempts", "0") or 0)
    if route and result.route and result.route != route:
        result.route_note = (
            f"Forced onto {route}, but {route} was not tried: {skipped}. "
            if skipped
            else f"Forced onto {route}, but {route} failed. "
        ) + f"{result.route} answered instead."
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = {}
    if response.status_code >= 400:
        result.error = (
            (body.get("error") or {}).get("message") if isinstance(body, dict) else ""
        ) or f"HTTP {response.status_code}"
        return result
    result.ok = True
    result.model = body.get("model", "")
    usage = body.get("usage") or {}
    result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    result.completion_tokens = int(usage.get("completion_tokens") or 0)
    if workload_kind == "embeddings":
        data = body.get("data") or [{}]
        result.vector_dimensions = len(data[0].get("embedding") or [])
        result.answer = f"{len(data)} embedding of {result.vector_dimensions} dimensions"
    else:
        choices = body.get("choices") or [{}]
        result.answer = ((choices[0].get("message") or {}).get("content") or "").strip()
    return result


def _why_skipped(config: GatewayConfig, serving_name: str, route_name: str) -> str:
    """Why the planner will pass over a forced route, as it sees the route now (the same routing
    snapshot and health): every member cooling down, or none that can serve; "" when it will try
    it."""
    balancer = config.routing.balancers.get(serving_name)
    route = balancer.route_named(route_name) if balancer else None
    if route is None:
        return ""
    members = [
        m
        for m in route.group.members
        if route.group.enabled and m.enabled and m.instance.enabled and m.weight > 0
    ]
    if not members:
        return "it has no member that can serve (disabled or drained)"
    now = time.time()
    views = [routing.health.state(m.instance.pk, now) for m in members]
    if all(v.status == "cooling" for v in views):
        left = min(math.ceil((v.cooldown_until or now) - now) for v in views)
        return f"it is cooling down, {max(left, 0)} s left"
    return ""


def _explained(
    config: GatewayConfig, serving_name: str, workload_kind: str, payload: dict[str, Any]
) -> dict[str, Any] | None:
    balancer = config.routing.balancers.get(serving_name) or goal_balancer(
        config, serving_name, workload_kind
    )
    if balancer is None or balancer.routing_mode != "auto":
        return None
    payload, auto = routing_options(
        balancer, PLAYGROUND_KEY, payload
    )  # a bad config: proxy() answers the 400
    if auto is not None:
        auto = with_difficulty(auto, payload, workload_kind)
    unfit = unfit_instances(
        (m.instance for r in balancer.routes for m in r.group.members),
        needs_of(payload, workload_kind),
    )
    return explain_auto(balancer, auto, unfit)


# -- sample calls -------------------------------------------------------------------------


def gateway_base_url(request: Any) -> str:
    """This server's /v1 as clients reach it: GATEWAY_BASE_URL when set, else from the request."""
    from django.conf import settings

    configured = (settings.GATEWAY_BASE_URL or "").rstrip("/")
    if configured:
        return configured if configured.endswith("/v1") else configured + "/v1"
    return request.build_absolute_uri("/v1")


def sample_calls(
    *, base_url: str, serving_name: str, workload_kind: str, prompt: str, route: str = ""
) -> dict[str, str]:
    """Python SDK and curl snippets for one balancer, ready to paste: exactly the request the
    playground or the smoke test sends (the same prompt, and the route header when one is forced).

    The prompt is written as a JSON string, which is also a valid Python string literal, and the
    curl body is quoted for a POSIX shell, so any prompt pastes as it was typed.
    """
    text = json.dumps(prompt, ensure_ascii=False)
    header_py = (
        f'\n    extra_headers={{"X-Balancer-Route": {json.dumps(route)}}},'
        "  # a key allowed to choose the route"
        if route
        else ""
    )
    header_sh = f" \\\n  -H {shlex.quote('X-Balancer-Route: ' + route)}" if route else ""
    if workload_kind == "embeddings":
        python = (
            "from openai import OpenAI\n\n"
            f'client = OpenAI(base_url="{base_url}", api_key="sb-...")\n\n'
            "result = client.embeddings.create(\n"
            f'    model="{serving_name}",\n'
            f"    input={text},{header_py}\n"
            ")\n"
            "print(result.model, len(result.data[0].embedding))\n"
        )
        path, field = "embeddings", f'"input": {text}'
    else:
        message = f'{{"role": "user", "content": {text}}}'
        python = (
            "from openai import OpenAI\n\n"
            f'client = OpenAI(base_url="{base_url}", api_key="sb-...")\n\n'
            "reply = client.chat.completions.create(\n"
            f'    model="{serving_name}",\n'
            f"    messages=[{message}],{header_py}\n"
            ")\n"
            "print(reply.model, reply.choices[0].message.content)\n"
        )
        path, field = "chat/completions", f'"messages": [{message}]'
    body = "{\n" + f'    "model": {json.dumps(serving_name)},\n    {field}\n' + "  }"
    curl = (
        f"curl {base_url}/{path} \\\n"
        "  -H 'Authorization: Bearer sb-...' \\\n"
        f"  -H 'Content-Type: application/json'{header_sh} \\\n"
        f"  -d {shlex.quote(body)}\n"
    )
    return {"python": python, "curl": curl, "base_url": base_url}


# -- a prompt to try a balancer with ------------------------------------------------------------

NEUTRAL_PROMPTS = {
    "chat": "Reply in one short sentence, so I can see this endpoint answer.",
    "embeddings": "A short sentence to turn into a vector.",
}


def sample_prompt(routes: Iterable[Route], *, workload_kind: str, route: str = "") -> str:
    """The prompt the smoke test, the playground and their sample calls start with, taken from the
    balancer's own routes: the first example prompt of `route` (the smoke test's default route),
    else of the routes in attempt order; a neutral request when no route has an example."""
    ordered = sorted(routes, key=lambda r: (r.name != route, r.priority, r.name))
    for candidate in ordered:
        for example in candidate.examples or []:
            if str(example).strip():
                return str(example).strip()
    return NEUTRAL_PROMPTS.get(workload_kind, NEUTRAL_PROMPTS["chat"])
