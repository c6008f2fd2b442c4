"""The playground: send a prompt to any balancer, optionally forced onto one route, or to an auto
goal name (auto, auto-cheap...) with a pool and a preference, and see the ranking it met."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from accounts.roles import VIEWER, role_required
from balancers.models import Balancer
from config.http import HtmxHttpRequest
from gateway.engine.auto import GOALS, PREFERENCES
from playground.services import (
    NEUTRAL_PROMPTS,
    gateway_base_url,
    sample_calls,
    sample_prompt,
    smoke_test,
)
from targetgroups.models import Instance, ProviderCredential
from targetgroups.providers import direct_models, model_kind


def _balancer_context(
    request: HtmxHttpRequest, balancer: Balancer | None, *, route: str = "", prompt: str = ""
) -> dict[str, Any]:
    """The route picker, the prompt and the sample call of one balancer. The sample is the exact
    request Send makes: the prompt in the box and, when one is picked, the route header."""
    if balancer is None:
        return {"balancer": None, "routes": []}
    routes = sorted(balancer.routes.all(), key=lambda r: (r.priority, r.name))
    if route not in {r.name for r in routes}:
        route = ""
    prompt = prompt or sample_prompt(routes, workload_kind=balancer.workload_kind)
    return {
        "balancer": balancer,
        "routes": routes,
        "route": route,
        "prompt": prompt,
        "sample": sample_calls(
            base_url=gateway_base_url(request),
            serving_name=balancer.serving_name,
            workload_kind=balancer.workload_kind,
            prompt=prompt,
            route=route,
        ),
    }


def _first_choice(balancers: list[Balancer]) -> Balancer | None:
    """The balancer the page opens on: the first enabled chat balancer (what most operators try
    first), else the first enabled one."""
    enabled = [b for b in balancers if b.enabled]
    return next((b for b in enabled if b.workload_kind == "chat"), None) or next(
        iter(enabled), None
    )


@role_required(VIEWER)
@require_GET
def playground(request: HtmxHttpRequest) -> HttpResponse:
    balancers = list(Balancer.objects.prefetch_related("routes").order_by("name"))
    wanted = request.GET.get("balancer", "")
    balancer = next((b for b in balancers if b.name == wanted), None) or _first_choice(balancers)
    return render(
        request,
        "playground/playground.html",
        {
            "balancers": balancers,
            **_balancer_context(request, balancer),
            **_auto_context(),
            **_direct_context(),
        },
    )


def _auto_context() -> dict[str, Any]:
    models = (
        Instance.objects.filter(enabled=True, workload_kind="chat")
        .exclude(provider="builtin")
        .order_by("model")
        .values_list("model", flat=True)
        .distinct()
    )
    return {
        "goals": [{"name": name, "preference": preference} for name, preference in GOALS.items()],
        "preferences": PREFERENCES,
        "auto_models": list(models),
    }


@role_required(VIEWER)
@require_GET
def playground_balancer(request: HtmxHttpRequest) -> HttpResponse:
    """The route picker (and prompt) of another balancer, when the balancer select changes."""
    balancer = (
        Balancer.objects.prefetch_related("routes")
        .filter(name=request.GET.get("balancer", ""))
        .first()
    )
    if balancer is None:
        raise Http404("No such balancer.")
    return render(
        request,
        "playground/playground.html#balancer-fields",
        {**_balancer_context(request, balancer), "oob": True},  # with the new balancer's sample
    )


@role_required(VIEWER)
@require_GET
def playground_sample(request: HtmxHttpRequest) -> HttpResponse:
    """The sample call again as the prompt or the route changes (hx-get from the send form)."""
    balancer = (
        Balancer.objects.prefetch_related("routes")
        .filter(name=request.GET.get("balancer", ""))
        .first()
    )
    if balancer is None:
        raise Http404("No such balancer.")
    context = _balancer_context(
        request,
        balancer,
        route=request.GET.get("route", ""),
        prompt=request.GET.get("prompt", "").strip(),
    )
    return render(request, "playground/playground.html#sample-code", context)


@role_required(VIEWER)
@require_POST
async def playground_send(request: HtmxHttpRequest) -> HttpResponse:
    balancer = await Balancer.objects.filter(name=request.POST.get("balancer", "")).afirst()
    if balancer is None:
        raise Http404("No such balancer.")
    route = request.POST.get("route", "")
    prompt = request.POST.get("prompt", "").strip() or sample_prompt(
        [r async for r in balancer.routes.all()], workload_kind=balancer.workload_kind
    )
    result = await smoke_test(
        serving_name=balancer.serving_name,
        workload_kind=balancer.workload_kind,
        prompt=prompt,
        route=route or None,
    )
    # A decision of the router may be marked wrong from here (operators; gateway.corrections).
    correctable = balancer.routing_mode == "intent_classifier" and (
        result.decision == "classified" or result.decision.startswith("default:")
    )
    if request.htmx:
        return await sync_to_async(render)(
            request,
            "playground/playground.html#result",
            {"result": result, "correct_in": balancer.name if correctable else ""},
        )
    return await sync_to_async(render)(
        request, "includes/smoke_test_page.html", {"result": result, "balancer": balancer}
    )


def _direct_context() -> dict[str, Any]:
    """The models a direct call reaches through the enabled provider credentials, by provider."""
    credentials = list(ProviderCredential.objects.filter(enabled=True))
    labels = {c.provider: c.label for c in credentials}
    grouped: dict[str, list[str]] = {}
    for name, provider in direct_models(labels):
        grouped.setdefault(provider, []).append(name)
    return {
        "direct_models": [
            {"provider": provider, "label": labels[provider], "models": names}
            for provider, names in sorted(grouped.items(), key=lambda p: labels[p[0]])
        ]
    }


@role_required(VIEWER)
@require_POST
async def playground_direct(request: HtmxHttpRequest) -> HttpResponse:
    """A request to a provider's model by its own name, through the operator's credential."""
    model = request.POST.get("model", "")
    providers = [
        p
        async for p in ProviderCredential.objects.filter(enabled=True).values_list(
            "provider", flat=True
        )
    ]
    if model not in {name for name, _ in direct_models(providers)}:
        raise Http404("No such model for the stored provider credentials.")
    kind = model_kind(model)
    prompt = request.POST.get("prompt", "").strip() or NEUTRAL_PROMPTS[kind]
    result = await smoke_test(serving_name=model, workload_kind=kind, prompt=prompt, direct=True)
    if request.htmx:
        return await sync_to_async(render)(
            request, "playground/playground.html#result", {"result": result}
        )
    return await sync_to_async(_page_with)(request, result)


@role_required(VIEWER)
@require_POST
async def playground_auto(request: HtmxHttpRequest) -> HttpResponse:
    """A chat request to a goal name with an optional pool and preference
    (`model_routing_config`)."""
    goal = request.POST.get("goal", "auto")
    if goal not in GOALS:
        raise Http404("No such goal name.")
    prompt = request.POST.get("prompt", "").strip() or NEUTRAL_PROMPTS["chat"]
    routing_config: dict[str, Any] = {}
    pool = [name for name in request.POST.getlist("models") if name]
    if pool:
        routing_config["models"] = pool
    if request.POST.get("preference"):
        routing_config["preference"] = request.POST["preference"]
    extra = {"model_routing_config": routing_config} if routing_config else None
    result = await smoke_test(serving_name=goal, workload_kind="chat", prompt=prompt, extra=extra)
    # The goal's live board, unless an operator's balancer of that name answered instead.
    board_goal = "" if await _is_balancer(goal) else goal
    if request.htmx:
        return await sync_to_async(render)(
            request,
            "playground/playground.html#result",
            {"result": result, "board_goal": board_goal},
        )
    return await sync_to_async(_page_with)(request, result, board_goal=board_goal)


async def _is_balancer(serving_name: str) -> bool:
    return await Balancer.objects.filter(serving_name=serving_name).aexists()


def _page_with(request: HtmxHttpRequest, result: Any, *, board_goal: str = "") -> HttpResponse:
    """Without htmx: the playground page with the auto result on top."""
    balancers = list(Balancer.objects.prefetch_related("routes").order_by("name"))
    balancer = _first_choice(balancers)
    return render(
        request,
        "playground/playground.html",
        {
            "balancers": balancers,
            **_balancer_context(request, balancer),
            **_auto_context(),
            **_direct_context(),
            "auto_result": result,
            "board_goal": board_goal,
        },
    )
