"""Balancer pages: the list, the create/edit wizard, the detail page, the live board, the smoke
test.

One template per page; htmx requests get a `page.html#partial` fragment of it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import (
    Http404,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.roles import OPERATOR, STAFF, VIEWER, role_of, role_required
from balancers.forms import (
    KIND_HELP,
    MODE_HELP,
    STEPS,
    NameForm,
    active_steps,
    blank_row,
    blank_rule,
    draft_check,
    draft_from_balancer,
    draft_new,
    draft_rules,
    draft_save,
    draft_update,
    neighbour_step,
    resolve_destination,
    routes_from_post,
    rule_summary,
)
from balancers.models import AuditEntry, Balancer
from balancers.services import (
    ROUTE_FIELDS,
    ActionRefused,
    audit_record,
    balancer_delete,
    balancer_save,
    balancer_set_prompt_logging,
    member_drain,
    member_restore,
    route_set_enabled,
    rule_values,
    simulator_set_down,
)
from config.http import HtmxHttpRequest
from gateway.board_feed import PROMPT_START_CHARS, FeedUnavailable, hub
from gateway.budgets import budget_list, budget_statuses
from gateway.corrections import (
    CorrectionRefused,
    balancer_unavailable,
    correction_apply,
    correction_offer,
)
from gateway.engine.auto import GOALS
from gateway.hotpath.runtime import mark_healthy
from gateway.models import RoutingCorrection
from gateway.router_models.local import RouteIntent
from gateway.router_models.separation import MAX_ROUTES as SEPARATION_MAX_ROUTES
from gateway.router_models.separation import route_overlaps
from pages.balancers.page_selectors import (
    FAILOVER_HOURS,
    LIVE_MINUTES,
    auto_choices,
    balancer_savings,
    balancer_states,
    balancers_for_pages,
    board_failover,
    goal_board,
    lane_figures,
    latest_prompt_start,
    member_probes,
    recent_events,
    recent_goal_events,
    recent_traffic_totals,
    route_traffic,
    traffic_by_hour,
)
from playground.services import gateway_base_url, sample_calls, sample_prompt, smoke_test
from targetgroups.models import Instance

DRAFT_PREFIX = "balancer-wizard:"


# -- list, detail, board ------------------------------------------------------------------------


@role_required(VIEWER)
@require_GET
def home(request: HtmxHttpRequest) -> HttpResponse:
    return redirect("balancer-list")


@role_required(VIEWER)
@require_GET
def balancer_list(request: HtmxHttpRequest) -> HttpResponse:
    states = balancer_states(balancers_for_pages())
    sparks = traffic_by_hour([s.balancer.pk for s in states])
    savings = balancer_savings(s.balancer for s in states)
    rows = [
        {"state": s, "spark": sparks[s.balancer.pk], "savings": savings[s.balancer.pk]}
        for s in states
    ]
    # A draft is mentioned once something was typed into it, not for opening the wizard and leaving.
    draft = request.session.get(DRAFT_PREFIX + "new") or {}
    return render(
        request,
        "balancers/list.html",
        {
            "rows": rows,
            "draft": draft if draft.get("edited") else None,
            "auto_choices": auto_choices(),
            "goal_names": list(GOALS),
        },
    )


def _state_or_404(name: str) -> Any:
    states = balancer_states(balancers_for_pages(name=name))
    if not states:
        raise Http404("No such balancer.")
    return states[0]


def _smoke_context(request: HtmxHttpRequest, balancer: Balancer) -> dict[str, Any]:
    routes = sorted(balancer.routes.all(), key=lambda r: (r.priority, r.name))
    default = next((r for r in routes if r.is_default), None)
    # The smoke test starts on the default route, with a prompt from the balancer's own routes.
    prompt = sample_prompt(
        routes, workload_kind=balancer.workload_kind, route=default.name if default else ""
    )
    return {
        "balancer": balancer,
        "smoke_routes": routes,
        "smoke_default": default,
        "smoke_prompt": prompt,
        "sample": sample_calls(
            base_url=gateway_base_url(request),
            serving_name=balancer.serving_name,
            workload_kind=balancer.workload_kind,
            prompt=prompt,
        ),
    }


@role_required(VIEWER)
@require_GET
def balancer_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    state = _state_or_404(name)
    balancer = state.balancer
    route_traffic(state)
    return render(
        request,
        "balancers/detail.html",
        {
            **_smoke_context(request, balancer),
            "state": state,
            "spark": traffic_by_hour([balancer.pk])[balancer.pk],
            "totals": recent_traffic_totals(balancer),
            "mode_help": MODE_HELP.get(balancer.routing_mode, ""),
            "rules": [{**rule, "summary": rule_summary(rule)} for rule in rule_values(balancer)],
            "audit": list(balancer.audit_entries.all()[:20]),
            "corrections": list(balancer.corrections.all()[:10]),
            "corrections_unavailable": balancer_unavailable(balancer),
        },
    )


def _can_operate(request: HtmxHttpRequest) -> bool:
    return role_of(request.user) in (OPERATOR, STAFF)


def _board_state(name: str) -> Any:
    state = _state_or_404(name)
    lane_figures(state)
    return state


def board_lanes_payload(name: str) -> bytes:
    """The lanes as the board's live part shows them (state, members, figures), and the summary:
    sent on the SSE stream when they change, and answered to the board's fallback poll."""
    state = _board_state(name)
    now = time.time()
    lanes = {}
    for lane in state.routes:
        lane_state, words = lane.lane_state(now)
        html = render_to_string("balancers/board.html#lane_live", {"r": lane, "now": now})
        lanes[lane.route.name] = {"state": lane_state, "words": words, "html": html}
    summary = render_to_string(
        "balancers/board.html#summary",
        {
            "state": state,
            "totals": recent_traffic_totals(state.balancer, minutes=LIVE_MINUTES),
            "savings": balancer_savings([state.balancer])[state.balancer.pk],
            "failover": board_failover(state.balancer),
            "failover_hours": FAILOVER_HOURS,
        },
    )
    probes = render_to_string("balancers/board.html#probes", {"probes": member_probes(state)})
    return orjson.dumps(
        {
            "routes": [lane.route.name for lane in state.routes],
            "lanes": lanes,
            "summary": summary,
            "probes": probes,
        }
    )


@role_required(VIEWER)
@require_GET
def balancer_board(request: HtmxHttpRequest, name: str) -> HttpResponse:
    if request.GET.get("lanes"):  # the fallback poll while the event stream is down
        return HttpResponse(board_lanes_payload(name), content_type="application/json")
    state = _board_state(name)
    context = {
        "state": state,
        "balancer": state.balancer,
        "events": recent_events(state.balancer),
        "last_prompt": latest_prompt_start(state.balancer),
        "prompt_chars": PROMPT_START_CHARS,
        "totals": recent_traffic_totals(state.balancer, minutes=LIVE_MINUTES),
        "now": time.time(),
        "probes": member_probes(state),
        "savings": balancer_savings([state.balancer])[state.balancer.pk],
        # The balancer's budgets: warning and reached ones are called out (docs/cost.md).
        "budgets": budget_statuses(budgets=budget_list().filter(balancer=state.balancer)),
        # Operators may mark the router's decisions wrong (gateway.corrections).
        "correctable": state.balancer.routing_mode == "intent_classifier" and _can_operate(request),
        "failover": board_failover(state.balancer),
        "failover_hours": FAILOVER_HOURS,
    }
    template = "balancers/board.html#events" if request.htmx else "balancers/board.html"
    return render(request, template, context)


def _balancer_instance(balancer: Balancer, instance_id: str) -> Instance:
    for route in balancer.routes.select_related("instance", "target_group").all():
        if (
            route.instance_id
            and route.instance is not None
            and route.instance.instance_id == instance_id
        ):
            return route.instance
        if route.target_group is not None:
            member = (
                route.target_group.members.select_related("instance")
                .filter(instance__instance_id=instance_id)
                .first()
            )
            if member is not None:
                return member.instance
    raise ActionRefused(
        f"{instance_id or 'That instance'} serves none of {balancer.name}'s routes."
    )


def _board_action(request: HtmxHttpRequest, balancer: Balancer) -> AuditEntry:
    action = request.POST.get("action", "")
    instance_id = request.POST.get("instance", "")
    route = (
        balancer.routes.select_related("target_group")
        .filter(name=request.POST.get("route", ""))
        .first()
    )
    if (
        action in ("route-disable", "route-enable", "member-drain", "member-restore")
        and route is None
    ):
        raise ActionRefused("No such route.")
    if action in ("route-disable", "route-enable"):
        assert route is not None
        return route_set_enabled(
            user=request.user, balancer=balancer, route=route, enabled=action == "route-enable"
        )
    if action in ("member-drain", "member-restore"):
        assert route is not None
        act = member_drain if action == "member-drain" else member_restore
        return act(user=request.user, balancer=balancer, route=route, instance_id=instance_id)
    if action == "cooldown-end":
        instance = _balancer_instance(balancer, instance_id)
        mark_healthy(instance.pk)
        return audit_record(
            user=request.user,
            action="cooldown ended",
            object_label=instance.instance_id,
            balancer=balancer,
        )
    if action in ("simulator-down", "simulator-up"):
        instance = _balancer_instance(balancer, instance_id)
        return simulator_set_down(
            user=request.user, balancer=balancer, instance=instance, down=action == "simulator-down"
        )
    raise ActionRefused("Unknown action.")


@role_required(OPERATOR)
@require_POST
def balancer_board_action(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """An operator action from the live board (confirmed in the browser), recorded in the audit log.
    Configuration changes reach every worker with the config version; a cooldown's end through
    Redis."""
    balancer = get_object_or_404(Balancer, name=name)
    try:
        entry = _board_action(request, balancer)
    except ActionRefused as refusal:
        text, css = str(refusal), "warn"
    else:
        text, css = f"Done: {entry.action}, {entry.object_label}. Recorded in the audit log.", "ok"
    if request.htmx:
        return render(request, "balancers/board.html#notice", {"notice": text, "notice_css": css})
    (messages.success if css == "ok" else messages.warning)(request, text)
    return redirect("balancer-board", name=balancer.name)


def correction_words(correction: RoutingCorrection) -> str:
    """What an applied correction did and changed, in the operator's words."""
    total = correction.corrected_examples
    before = round((correction.accuracy_before or 0) * total)
    after = round((correction.accuracy_after or 0) * total)
    return (
        f"Added as an example of {correction.route} (the router had sent it to "
        f"{correction.decided_route}). The router on this balancer's {total} corrected "
        f"example{'s' if total != 1 else ''}: {before} of {total} right before "
        f"({correction.accuracy_before or 0:.0%}), {after} of {total} after "
        f"({correction.accuracy_after or 0:.0%}). Every gateway worker refits it at its next "
        "snapshot; recorded in the audit log."
    )


@role_required(OPERATOR)
@require_http_methods(["GET", "POST"])
def balancer_correction(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """Mark a routing decision wrong (the board, the usage page, the playground): GET shows the form
    for one request (or why it cannot be corrected), POST makes its prompt an example of the route
    named (gateway.corrections states the rules)."""
    balancer = get_object_or_404(Balancer.objects.select_related("router_model"), name=name)
    data = request.POST if request.method == "POST" else request.GET
    request_id = data.get("request", "")
    source = data.get("source", "")
    if request.method == "POST":
        try:
            correction = correction_apply(
                user=request.user,
                balancer=balancer,
                request_id=request_id,
                route=data.get("route", ""),
                confirmed=data.get("confirm") == "yes",
                source=source,
            )
        except CorrectionRefused as refusal:
            text, css = str(refusal), "warn"
        else:
            text, css = correction_words(correction), "ok"
        if request.htmx:
            return render(
                request, "balancers/correction.html#notice", {"notice": text, "notice_css": css}
            )
        (messages.success if css == "ok" else messages.warning)(request, text)
        return redirect("balancer-detail", name=balancer.name)
    offer = correction_offer(balancer=balancer, request_id=request_id)
    template = "balancers/correction.html#form" if request.htmx else "balancers/correction.html"
    return render(request, template, {"offer": offer, "balancer": balancer, "source": source})


@role_required(OPERATOR)
@require_POST
def balancer_prompt_logging(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """Turn 'Keep prompts' on or off (confirmed in the browser), recorded in the audit log."""
    balancer = get_object_or_404(Balancer, name=name)
    keep = request.POST.get("keep") == "on"
    try:
        balancer_set_prompt_logging(user=request.user, balancer=balancer, keep=keep)
    except ActionRefused as refusal:
        messages.warning(request, str(refusal))
        return redirect("balancer-detail", name=balancer.name)
    messages.success(
        request,
        "Prompts are kept from now on: the board, the usage page and the playground can correct "
        "the router's decisions."
        if keep
        else "Prompt logging is off: new requests keep no prompt (prompts kept so far stay with "
        "their usage events until they expire).",
    )
    return redirect("balancer-detail", name=balancer.name)


SSE_KEEPALIVE_SECONDS = 15.0


@role_required(VIEWER)
@require_GET
async def balancer_board_events(
    request: HtmxHttpRequest, name: str
) -> HttpResponse | StreamingHttpResponse:
    """The board's event stream (text/event-stream): `requests` as the gateway serves them,
    `lanes` when a lane's state or figures change. Fed by gateway.board_feed's hub."""
    balancer = await Balancer.objects.filter(name=name).only("pk").afirst()
    if balancer is None:
        raise Http404("No such balancer.")
    return await _board_stream(request, balancer.pk, functools.partial(board_lanes_payload, name))


async def _board_stream(
    request: HtmxHttpRequest, key: int | str, render_lanes: Callable[[], bytes]
) -> HttpResponse | StreamingHttpResponse:
    """A board's event stream, fed by the hub for the board `key` (a balancer's pk, a goal name)."""
    if not isinstance(request, ASGIRequest):
        # A WSGI server (runserver without ASGI, the tests' live server) would buffer the endless
        # stream whole: 204 tells the browser not to reconnect, and the board polls.
        return HttpResponse(status=204)
    listening = hub.listen(key, render_lanes)
    try:
        queue = await listening.__aenter__()
    except FeedUnavailable:
        return HttpResponse(
            "The live feed is unavailable; the board polls instead.",
            status=503,
            content_type="text/plain",
        )

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if item is None:
                    return
                event, data = item
                yield b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
        finally:
            await listening.__aexit__(None, None, None)

    # The session, user and balancer look-ups ran in this request's own thread, whose database
    # connection Django closes only when the response ends: for a stream, when the board closes.
    # Closed now, so open boards hold no connection each (50 boards held 50 in make bench).
    await sync_to_async(connections.close_all)()
    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the events back
    return response


# -- a goal name's live board (auto, auto-cheap... with no balancer) ----------------------------


def _goal_or_404(goal: str) -> str:
    if goal not in GOALS:
        raise Http404("No such goal name.")
    return goal


def goal_lanes_payload(goal: str) -> bytes:
    """A goal board's live part, as `board_lanes_payload` (lanes by model; their instances too,
    so the board draws an attempt of a new instance in its model's lane)."""
    board = goal_board(goal)
    now = time.time()
    lanes = {}
    for lane in board.lanes:
        lane_state, words = lane.lane_state(now)
        html = render_to_string("balancers/auto_board.html#lane_live", {"r": lane, "now": now})
        lanes[lane.model] = {
            "state": lane_state,
            "words": words,
            "html": html,
            "instances": lane.instance_ids,
        }
    summary = render_to_string("balancers/auto_board.html#summary", {"board": board})
    return orjson.dumps(
        {"routes": [lane.model for lane in board.lanes], "lanes": lanes, "summary": summary}
    )


@role_required(VIEWER)
@require_GET
def auto_board(request: HtmxHttpRequest, goal: str) -> HttpResponse:
    """The live board of a goal name: its requests drawn into the lane of the model that served."""
    _goal_or_404(goal)
    if request.GET.get("lanes"):  # the fallback poll while the event stream is down
        return HttpResponse(goal_lanes_payload(goal), content_type="application/json")
    context = {"board": goal_board(goal), "events": recent_goal_events(goal), "goal": goal}
    template = "balancers/auto_board.html#events" if request.htmx else "balancers/auto_board.html"
    return render(request, template, context)


@role_required(VIEWER)
@require_GET
async def auto_board_events(
    request: HtmxHttpRequest, goal: str
) -> HttpResponse | StreamingHttpResponse:
    """A goal board's event stream: as a balancer's (`balancer_board_events`)."""
    _goal_or_404(goal)
    return await _board_stream(request, goal, functools.partial(goal_lanes_payload, goal))


def _current_routes(balancer: Balancer) -> list[dict[str, Any]]:
    return [{key: getattr(route, key) for key in ROUTE_FIELDS} for route in balancer.routes.all()]


def _current_fields(balancer: Balancer, **changes: Any) -> dict[str, Any]:
    fields = {
        key: getattr(balancer, key)
        for key in (
            "name",
            "serving_name",
            "description",
            "workload_kind",
            "routing_mode",
            "auto_preference",
            "router_model",
            "classifier_timeout",
            "confidence_threshold",
            "attempt_budget",
            "request_timeout",
            "enabled",
        )
    }
    return {**fields, **changes}


@role_required(OPERATOR)
@require_POST
def balancer_toggle(request: HtmxHttpRequest, name: str) -> HttpResponse:
    balancer = get_object_or_404(Balancer, name=name)
    enabled = not balancer.enabled
    try:
        balancer_save(
            balancer=balancer,
            fields=_current_fields(balancer, enabled=enabled),
            routes=_current_routes(balancer),
        )
    except ValidationError as exc:
        messages.error(request, "Could not change it: " + "; ".join(exc.messages))
    else:
        messages.success(
            request,
            f"{balancer.serving_name} is "
            f"{'serving again' if enabled else 'disabled: clients get a 404 for it'}.",
        )
    return redirect("balancer-detail", name=balancer.name)


@role_required(OPERATOR)
@require_POST
def balancer_remove(request: HtmxHttpRequest, name: str) -> HttpResponse:
    balancer = get_object_or_404(Balancer, name=name)
    balancer_delete(balancer=balancer)
    request.session.pop(f"{DRAFT_PREFIX}{balancer.pk}", None)
    messages.success(request, f"Deleted {balancer.name}.")
    return redirect("balancer-list")


@role_required(VIEWER)
@require_GET
def balancer_test(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """Step 6 after the save: the sample call and the smoke test."""
    balancer = get_object_or_404(Balancer.objects.prefetch_related("routes"), name=name)
    return render(
        request,
        "balancers/wizard.html",
        {
            **_smoke_context(request, balancer),
            "step": STEPS[-1],
            "saved": True,
            "steps_nav": [
                {
                    "step": s,
                    "state": "done" if s.slug != "review" else "current",
                    "url": "",
                    "number": i,
                }
                for i, s in enumerate(STEPS, start=1)
            ],
        },
    )


@role_required(VIEWER)
@require_POST
async def balancer_smoke_test(request: HtmxHttpRequest, name: str) -> HttpResponse:
    balancer = await Balancer.objects.filter(name=name).afirst()
    if balancer is None:
        raise Http404("No such balancer.")
    route = request.POST.get("route", "")
    prompt = request.POST.get("prompt", "").strip() or sample_prompt(
        [r async for r in balancer.routes.all()], workload_kind=balancer.workload_kind, route=route
    )
    result = await smoke_test(
        serving_name=balancer.serving_name,
        workload_kind=balancer.workload_kind,
        prompt=prompt,
        route=route or None,
    )
    template = (
        "includes/smoke_test.html#result" if request.htmx else "includes/smoke_test_page.html"
    )
    return await sync_to_async(render)(request, template, {"result": result, "balancer": balancer})


# -- the wizard ---------------------------------------------------------------------------


def _wizard_target(name: str | None) -> Balancer | None:
    return get_object_or_404(Balancer, name=name) if name else None


def _draft_key(balancer: Balancer | None) -> str:
    return f"{DRAFT_PREFIX}{balancer.pk if balancer else 'new'}"


def _load_draft(request: HtmxHttpRequest, balancer: Balancer | None) -> dict[str, Any]:
    key = _draft_key(balancer)
    draft = request.session.get(key)
    if draft is None:
        draft = draft_from_balancer(balancer) if balancer else draft_new()
        _store(request, balancer, draft)
    return draft


def _store(request: HtmxHttpRequest, balancer: Balancer | None, draft: dict[str, Any]) -> None:
    request.session[_draft_key(balancer)] = draft
    request.session.modified = True


def _step_url(balancer: Balancer | None, step: str) -> str:
    if balancer is None:
        return reverse("wizard-step", kwargs={"step": step})
    return reverse("wizard-edit-step", kwargs={"name": balancer.name, "step": step})


def _wizard_urls(balancer: Balancer | None) -> dict[str, str]:
    if balancer is None:
        return {
            "check": reverse("wizard-check"),
            "discard": reverse("wizard-discard"),
            "separation": reverse("wizard-separation"),
        }
    return {
        "check": reverse("wizard-edit-check", kwargs={"name": balancer.name}),
        "discard": reverse("wizard-edit-discard", kwargs={"name": balancer.name}),
        "separation": reverse("wizard-edit-separation", kwargs={"name": balancer.name}),
    }


@role_required(OPERATOR)
@require_GET
def wizard_start(request: HtmxHttpRequest) -> HttpResponse:
    """/balancers/new/: resume the draft in progress, or start one with the defaults filled in."""
    draft = _load_draft(request, None)
    step = draft.get("step")
    return redirect(
        _step_url(None, step if isinstance(step, str) and step in active_steps(draft) else "name")
    )


@role_required(OPERATOR)
@require_GET
def wizard_edit(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """Edit an existing balancer in the same wizard, from a fresh copy of what is saved."""
    balancer = get_object_or_404(Balancer, name=name)
    draft = draft_from_balancer(balancer)
    step = request.GET.get("step", "name")
    draft["step"] = step if step in active_steps(draft) else "name"
    _store(request, balancer, draft)
    return redirect(_step_url(balancer, draft["step"]))


def _steps_nav(
    draft: dict[str, Any], check: Any, current: str, balancer: Balancer | None
) -> list[dict[str, Any]]:
    active = active_steps(draft)
    checked = set(draft.get("checked", []))
    nav = []
    for number, step in enumerate(STEPS, start=1):
        if step.slug not in active:
            state, note = "skipped", f"Not needed for {draft['mode'].get('routing_mode')}"
        elif step.slug == current:
            state, note = "current", ""
        elif step.slug in checked or draft.get("balancer"):
            has_errors = bool(check.step_errors(step.slug)) and step.slug != "review"
            state, note = ("invalid", "Needs attention") if has_errors else ("done", "")
        else:
            state, note = "todo", ""
        nav.append(
            {
                "step": step,
                "state": state,
                "note": note,
                "number": number,
                "url": _step_url(balancer, step.slug),
            }
        )
    return nav


def _render_step(
    request: HtmxHttpRequest,
    balancer: Balancer | None,
    draft: dict[str, Any],
    step: str,
    check: Any = None,
    status: int = 200,
) -> HttpResponse:
    check = check or draft_check(draft)
    index = [s.slug for s in STEPS].index(step)
    active = active_steps(draft)
    context = {
        "draft": draft,
        "check": check,
        "balancer": balancer,
        "editing": balancer is not None,
        "step": STEPS[index],
        "step_number": index + 1,
        "step_total": len(STEPS),
        "steps_nav": _steps_nav(draft, check, step, balancer),
        "step_url": _step_url(balancer, step),
        "autosave_url": _step_url(balancer, step) + "autosave/",
        "urls": _wizard_urls(balancer),
        "show_errors": step in draft.get("checked", []),
        "has_back": neighbour_step(draft, step, -1) is not None,
        "mode_help": MODE_HELP,
        "kind_help": KIND_HELP,
        "routing_mode": draft["mode"].get("routing_mode"),
        "workload_kind": draft["workload"].get("workload_kind"),
        "active_steps": active,
        "review_errors": {s: check.step_errors(s) for s in active} if step == "review" else {},
    }
    if step == "routes":
        context["rows"] = _route_rows(check, show_errors=context["show_errors"])
        context["rule_rows"] = _rule_rows(check, show_errors=context["show_errors"])
    if step == "review":
        context["rows"] = _route_rows(check)
        context["rule_rows"] = _rule_rows(check)
        context["router_instance"] = next(
            (
                i
                for i in check.router.instances
                if i.instance_id == draft["router"].get("router_model")
            ),
            None,
        )
    response = render(request, "balancers/wizard.html", context, status=status)
    response["Cache-Control"] = "no-store"
    return response


def _route_rows(
    check: Any, *, show_errors: bool = False, focus: str | None = None
) -> list[dict[str, Any]]:
    rows = []
    for index, form in enumerate(check.routes, start=1):
        group, instance = resolve_destination(form.row.get("destination", ""))
        for name, bound in form.fields.items():
            bound.widget.attrs.pop("aria-invalid", None)
            if show_errors and name in form.errors:
                bound.widget.attrs["aria-invalid"] = "true"
                bound.widget.attrs["aria-describedby"] = f"{form[name].id_for_label}-error"
        if focus == form.row["key"]:
            form.fields["name"].widget.attrs["autofocus"] = True
        examples = [
            line.strip() for line in (form.row.get("examples") or "").splitlines() if line.strip()
        ]
        rows.append(
            {
                "form": form,
                "row": form.row,
                "index": index,
                "group": group,
                "instance": instance,
                "examples": examples,
                "example_count": len(examples),
            }
        )
    return rows


def _rule_rows(
    check: Any, *, show_errors: bool = False, focus: str | None = None
) -> list[dict[str, Any]]:
    rows = []
    for index, form in enumerate(check.rules, start=1):
        form.show_errors = show_errors
        for name, bound in form.fields.items():
            bound.widget.attrs.pop("aria-invalid", None)
            if show_errors and name in form.errors:
                bound.widget.attrs["aria-invalid"] = "true"
                bound.widget.attrs["aria-describedby"] = f"{form[name].id_for_label}-error"
        if focus == form.row["key"]:
            form.fields["name"].widget.attrs["autofocus"] = True
        rows.append(
            {
                "form": form,
                "row": form.row,
                "index": index,
                "uses": form.uses,
                "summary": rule_summary(form.row),
            }
        )
    return rows


def _render_routes_step_fragment(
    request: HtmxHttpRequest,
    balancer: Balancer | None,
    draft: dict[str, Any],
    partial: str,
    focus: str | None = None,
) -> HttpResponse:
    """One partial of the routes step drawn again after an htmx edit: "routes" (the route rows) or
    "rules" (the content rules); both read the same draft check."""
    check = draft_check(draft)
    show_errors = "routes" in draft.get("checked", [])
    rows = _route_rows if partial == "routes" else _rule_rows
    response = render(
        request,
        f"balancers/wizard.html#{partial}",
        {
            "draft": draft,
            "check": check,
            "routing_mode": draft["mode"].get("routing_mode"),
            ("rows" if partial == "routes" else "rule_rows"): rows(
                check, show_errors=show_errors, focus=focus
            ),
            "show_errors": show_errors,
            "step_url": _step_url(balancer, "routes"),
        },
    )
    response["Cache-Control"] = "no-store"
    return response


def _go(
    request: HtmxHttpRequest, balancer: Balancer | None, draft: dict[str, Any], step: str
) -> HttpResponse:
    draft["step"] = step
    _store(request, balancer, draft)
    return redirect(_step_url(balancer, step))


@role_required(OPERATOR)
@never_cache
@require_http_methods(["GET", "POST"])
def wizard_step(request: HtmxHttpRequest, step: str, name: str | None = None) -> HttpResponse:
    balancer = _wizard_target(name)
    if step not in {s.slug for s in STEPS}:
        raise Http404("No such step.")
    draft = _load_draft(request, balancer)
    if step not in active_steps(draft):
        return redirect(_step_url(balancer, neighbour_step(draft, step, 1) or "routes"))

    if request.method == "GET":
        draft["step"] = step
        _store(request, balancer, draft)
        return _render_step(request, balancer, draft, step)

    nav = request.POST.get("nav", "next")
    draft_update(draft, step, request.POST)
    if step == "routes" and (nav == "add" or nav.startswith("remove:")):
        rows = draft["routes"]["rows"]
        focus = None
        if nav == "add":
            row = blank_row(
                max((int(r["priority"]) for r in rows if str(r["priority"]).isdigit()), default=0)
                + 1
            )
            rows.append(row)
            focus = row["key"]
        else:
            draft["routes"]["rows"] = [r for r in rows if r["key"] != nav.partition(":")[2]]
        draft["routes"]["pristine"] = False
        draft["edited"] = True
        _store(request, balancer, draft)
        if request.htmx:
            return _render_routes_step_fragment(request, balancer, draft, "routes", focus=focus)
        return redirect(_step_url(balancer, "routes"))
    if step == "routes" and (nav in ("add-rule", "rule-kind") or nav.startswith("remove-rule:")):
        rules = draft_rules(draft)
        focus = None
        if nav == "add-rule":
            orders = [int(r["order"]) for r in rules if str(r.get("order", "")).isdigit()]
            rule = blank_rule(max(orders, default=0) + 1)
            rules.append(rule)
            focus = rule["key"]
        elif nav.startswith("remove-rule:"):
            rules = [r for r in rules if r["key"] != nav.partition(":")[2]]
        # "rule-kind": the row is drawn again with the new kind's fields
        draft["rules"] = {"rows": rules}
        draft["edited"] = True
        _store(request, balancer, draft)
        if request.htmx:
            return _render_routes_step_fragment(request, balancer, draft, "rules", focus=focus)
        return redirect(_step_url(balancer, "routes"))

    if nav == "back":
        return _go(request, balancer, draft, neighbour_step(draft, step, -1) or step)

    checked = set(draft.get("checked", []))
    if step == "review":
        checked.update(active_steps(draft))
    else:
        checked.add(step)
    draft["checked"] = sorted(checked)
    _store(request, balancer, draft)
    check = draft_check(draft)

    # A refused step redirects to its own page (post-redirect-get): the draft in the session holds
    # what was posted and the errors show there, and a reload is a GET that never posts the old
    # values again over later (autosaved) edits.
    if step != "review":
        if check.step_errors(step):
            return _go(request, balancer, draft, step)
        return _go(request, balancer, draft, neighbour_step(draft, step, 1) or "review")

    saved = draft_save(check)
    if saved is None:
        return _go(request, balancer, draft, step)
    request.session.pop(_draft_key(balancer), None)
    if balancer is None:
        messages.success(
            request,
            f"{saved.serving_name} is saved. Paste the sample call into any client, or smoke-test "
            "it here.",
        )
        return redirect("balancer-test", name=saved.name)
    messages.success(
        request,
        f"Saved {saved.serving_name}. The gateway routes by the new configuration within a second.",
    )
    return redirect("balancer-detail", name=saved.name)


@role_required(OPERATOR)
@require_POST
def wizard_autosave(request: HtmxHttpRequest, step: str, name: str | None = None) -> HttpResponse:
    """Keep what is typed, as it is typed, so a reload loses nothing (hx-post on change)."""
    balancer = _wizard_target(name)
    draft = _load_draft(request, balancer)
    if step not in active_steps(draft) or (
        step == "review" and "attempt_budget" not in request.POST
    ):
        return HttpResponse(status=204)
    draft_update(draft, step, request.POST)
    _store(request, balancer, draft)
    if step == "routes":
        # The route-set message (exactly one default...) follows the edit live.
        check = draft_check(draft)
        return render(
            request, "balancers/wizard.html#route-set-errors", {"check": check, "oob": True}
        )
    return HttpResponse(status=204)


@role_required(OPERATOR)
@require_GET
def wizard_check(request: HtmxHttpRequest, name: str | None = None) -> HttpResponse:
    """Live validation of the name and the serving name as the operator types (hx-get)."""
    balancer = _wizard_target(name)
    field = request.GET.get("field", "")
    if field not in ("name", "serving_name"):
        raise Http404("Unknown field.")
    value = request.GET.get(field, "").strip()
    errors: list[str] = []
    ok = ""
    if value:
        form = NameForm({field: value}, balancer_pk=balancer.pk if balancer else None)
        errors = [str(message) for message in form.errors.get(field, [])]
        if not errors:
            ok = "Available." if field == "name" else f'Clients will call model="{value}".'
    return render(
        request, "balancers/wizard.html#feedback", {"field": field, "errors": errors, "ok": ok}
    )


@role_required(OPERATOR)
@require_POST
def wizard_separation(request: HtmxHttpRequest, name: str | None = None) -> HttpResponse:
    """How well the routes being typed separate (hx-post from the routes step, after typing pauses):
    the pairs the built-in router would confuse, from gateway.router_models.separation."""
    _wizard_target(name)
    rows = routes_from_post(request.POST)
    overlaps = route_overlaps(
        [
            RouteIntent(
                name=r["name"],
                intent=r["intent"],
                examples=tuple(line for line in r["examples"].splitlines() if line.strip()),
            )
            for r in rows
            if r["name"]
        ]
    )
    return render(
        request,
        "balancers/wizard.html#separation",
        {
            "overlaps": overlaps,
            "checked_routes": len([r for r in rows if r["name"]]),
            "too_many": len(rows) > SEPARATION_MAX_ROUTES,
        },
    )


@role_required(OPERATOR)
@require_POST
def wizard_discard(request: HtmxHttpRequest, name: str | None = None) -> HttpResponseRedirect:
    balancer = _wizard_target(name)
    request.session.pop(_draft_key(balancer), None)
    if balancer is not None:
        messages.info(request, "Changes discarded.")
        return redirect("balancer-detail", name=balancer.name)
    if request.POST.get("restart"):
        return redirect("wizard-start")
    messages.info(request, "Draft discarded.")
    return redirect("balancer-list")
