"""Learning from corrections: an operator says where a routed prompt should have gone.

On the live board, the usage page and the playground an operator marks a decision of the
router as wrong and names the route it should have taken. With the operator's confirmation
the prompt becomes an example prompt of that route; the route's save bumps the config
version, so every gateway worker refits its router at its next snapshot (within
GATEWAY_CONFIG_POLL_SECONDS), exactly as for an example typed in the wizard.

The rules, in the order they are checked:

1. The balancer routes with the **built-in router** (`intent_classifier` mode, router model
   provider `builtin`): its fitted model is what learns from examples. (An LLM router also
   reads examples, but only three per route, and its accuracy cannot be measured here.)
2. The balancer **keeps prompts** (`Balancer.log_prompts`) and the request's usage event holds
   its prompt. With prompt logging off the gateway keeps no prompt, so there is nothing to
   learn from: the control says so instead of offering a form.
3. The decision was the **router's**: `classified`, `default:no_match` or
   `default:low_confidence`. An override or a content rule chose the route by itself.
4. The right route is an **enabled route** of the balancer, other than the one decided, and it
   has room for one more example (at most 50, as everywhere).
5. The operator **confirmed** it.

The prompt is cut as the router reads it (MAX_PROMPT_CHARS). If it already is an example of
another route (an earlier correction, undone by this one) it is moved. Every correction is
one audit entry ("routing corrected") and one RoutingCorrection row.

**Before and after.** The balancer's *corrected examples* are the prompts of its corrections
that are still examples of the route they were corrected to (this one included). The router
is fitted twice, as the gateway fits it at snapshot build: on the routes as they were, and
with this correction; each routes every corrected example, through the balancer's
confidence threshold and default route as a request would be. The share routed to the
corrected route is `accuracy_before` and `accuracy_after`. "After" is measured on prompts
the refitted model was trained on: it says the model took the correction in, not how it
generalises (docs/routing.md, "Learning from corrections").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from balancers.models import Balancer, Route, RoutingMode
from balancers.services import audit_record
from gateway.hotpath.decision import CLASSIFIED, LOW_CONFIDENCE, MAX_PROMPT_CHARS, NO_MATCH
from gateway.models import RoutingCorrection, UsageEvent
from gateway.router_models.fitted import build_local_router
from gateway.router_models.local import RouteIntent

ROUTER_DECISIONS = (CLASSIFIED, NO_MATCH, LOW_CONFIDENCE)
MAX_EXAMPLES = 50  # per route, as balancers.validation allows
SOURCES = ("board", "usage", "playground")


class CorrectionRefused(Exception):
    """The correction cannot be made; the message says why, to the operator as is."""


@dataclass
class CorrectionOffer:
    """What the correction control shows for one request: a form, or why there is none."""

    balancer: Balancer
    request_id: str
    unavailable: str = ""
    prompt: str = ""
    decided_route: str = ""
    decision_reason: str = ""
    routes: list[str] = field(default_factory=list)  # the routes it may be corrected to


def balancer_unavailable(balancer: Balancer) -> str:
    """Why no decision of this balancer can be corrected ("" when they can)."""
    if balancer.routing_mode != RoutingMode.INTENT_CLASSIFIER:
        return (
            f"Only the router's decisions can be corrected; {balancer.name} routes in "
            f"{balancer.routing_mode} mode."
        )
    router = balancer.router_model
    if router is None or router.provider != "builtin":
        return (
            "Corrections teach the built-in router (intent-classifier); this balancer's router is "
            "an LLM."
        )
    if not balancer.log_prompts:
        return (
            "Prompt logging is off for this balancer, so the gateway kept no prompt to learn from. "
            "An operator can turn on 'Keep prompts' on the balancer's page."
        )
    return ""


def _event(balancer: Balancer, request_id: str) -> UsageEvent | None:
    if not request_id:
        return None
    return (
        UsageEvent.objects.filter(balancer=balancer, request_id=request_id)
        .order_by("-created_at")
        .first()
    )


def _decided_route(event: UsageEvent) -> str:
    """The route the decision picked: the first one tried (a failover may have answered
    elsewhere)."""
    for entry in event.attempt_log or []:
        if isinstance(entry, dict) and entry.get("route"):
            return str(entry["route"])
    return event.route


def correction_offer(*, balancer: Balancer, request_id: str) -> CorrectionOffer:
    offer = CorrectionOffer(balancer=balancer, request_id=request_id)
    offer.unavailable = balancer_unavailable(balancer)
    if offer.unavailable:
        return offer
    event = _event(balancer, request_id)
    if event is None:
        offer.unavailable = (
            "This request's usage event is not recorded yet (the gateway writes them within a "
            "second or two); try again in a moment."
        )
        return offer
    if event.decision_reason not in ROUTER_DECISIONS:
        offer.unavailable = (
            f"The router did not choose this route ({event.decision_reason or 'no decision'}): "
            "an override or a content rule did."
        )
        return offer
    if not event.prompt_text.strip():
        offer.unavailable = (
            "No prompt was kept for this request: it was served before prompt logging was turned "
            "on (or from the response cache)."
        )
        return offer
    offer.prompt = event.prompt_text
    offer.decided_route = _decided_route(event)
    offer.decision_reason = event.decision_reason
    offer.routes = [
        route.name
        for route in sorted(balancer.routes.all(), key=lambda r: (r.priority, r.name))
        if route.enabled and route.name != offer.decided_route
    ]
    if not offer.routes:
        offer.unavailable = "The balancer has no other enabled route to send it to."
    return offer


def _intents(routes: Sequence[Route], examples: dict[str, list[str]]) -> list[RouteIntent]:
    """The routes as the gateway's snapshot gives them to the router: enabled, by (priority,
    name)."""
    return [
        RouteIntent(name=r.name, intent=r.intent, examples=tuple(examples[r.name]))
        for r in sorted(routes, key=lambda r: (r.priority, r.name))
        if r.enabled
    ]


def routed_correctly(
    balancer: Balancer,
    routes: Sequence[Route],
    examples: dict[str, list[str]],
    labelled: Sequence[tuple[str, str]],
) -> int:
    """How many (prompt, route) pairs a router fitted to these examples sends to their route,
    through the balancer's confidence threshold and default route, as a request would go."""
    if not labelled:
        return 0
    router = build_local_router(_intents(routes, examples))
    enabled = {r.name for r in routes if r.enabled}
    default = next((r.name for r in routes if r.is_default), "")
    right = 0
    for prompt, expected in labelled:
        result = router.classify(prompt)
        chosen = default
        if (
            result.route in enabled
            and result.confidence >= balancer.confidence_threshold
            and result.route is not None
        ):
            chosen = result.route
        right += chosen == expected
    return right


def correction_apply(
    *,
    user: Any,
    balancer: Balancer,
    request_id: str,
    route: str,
    confirmed: bool,
    source: str,
) -> RoutingCorrection:
    """Make the request's prompt an example of `route` (rules at the top of this module)."""
    offer = correction_offer(balancer=balancer, request_id=request_id)
    if offer.unavailable:
        raise CorrectionRefused(offer.unavailable)
    routes = list(balancer.routes.all())
    target = next((r for r in routes if r.name == route), None)
    if target is None:
        raise CorrectionRefused(f"{balancer.name} has no route {route!r}.")
    if not target.enabled:
        raise CorrectionRefused(
            f"Route {route} is disabled: enable it before sending prompts to it."
        )
    if route == offer.decided_route:
        raise CorrectionRefused(f"The router already sent this prompt to {route}.")
    prompt = offer.prompt[:MAX_PROMPT_CHARS].strip()
    current = {r.name: [e for e in (r.examples or []) if isinstance(e, str)] for r in routes}
    if prompt in current[route]:
        raise CorrectionRefused(f"This prompt is already an example of {route}.")
    if len(current[route]) >= MAX_EXAMPLES:
        raise CorrectionRefused(
            f"Route {route} has {MAX_EXAMPLES} examples already (the most a route may have): "
            "remove one in the wizard first."
        )
    if not confirmed:
        raise CorrectionRefused("Confirm that this prompt may be kept as an example of the route.")
    corrected = {r.name: list(current[r.name]) for r in routes}
    for name in corrected:
        corrected[name] = [e for e in corrected[name] if e != prompt]
    corrected[route].append(prompt)
    labelled = corrected_examples(balancer, corrected, extra=(prompt, route))
    before = routed_correctly(balancer, routes, current, labelled)
    after = routed_correctly(balancer, routes, corrected, labelled)
    total = len(labelled)
    with transaction.atomic():
        for saved in Route.objects.select_for_update().filter(balancer=balancer):
            examples = [e for e in (saved.examples or []) if isinstance(e, str)]
            if current.get(saved.name) != examples:
                raise CorrectionRefused(
                    "The routes changed while the correction was measured; try again."
                )
            if corrected[saved.name] != examples:
                saved.examples = corrected[saved.name]
                saved.save(update_fields=["examples"])  # bumps the config version on commit
        correction = RoutingCorrection.objects.create(
            balancer=balancer,
            user=user if getattr(user, "pk", None) else None,
            username=getattr(user, "username", "") or "",
            request_id=request_id[:64],
            source=source if source in SOURCES else "",
            prompt=prompt,
            decided_route=offer.decided_route,
            decision_reason=offer.decision_reason,
            route=route,
            corrected_examples=total,
            accuracy_before=before / total,
            accuracy_after=after / total,
        )
        audit_record(
            user=user,
            action="routing corrected",
            object_label=f"{offer.decided_route} -> {route}: {prompt[:120]}",
            balancer=balancer,
            detail={
                "request_id": request_id,
                "source": correction.source,
                "from": offer.decided_route,
                "to": route,
                "prompt": prompt[:500],
                "corrected_examples": total,
                "right_before": before,
                "right_after": after,
            },
        )
    return correction


def corrected_examples(
    balancer: Balancer, examples: dict[str, list[str]], *, extra: tuple[str, str] | None = None
) -> list[tuple[str, str]]:
    """The balancer's corrected examples: each correction's (prompt, route) while the prompt is
    still an example of that route, newest correction of a prompt first and only."""
    pairs: list[tuple[str, str]] = [extra] if extra is not None else []
    seen = {extra[0]} if extra is not None else set()
    for prompt, route in balancer.corrections.order_by("-at", "-id").values_list("prompt", "route"):
        if prompt in seen:
            continue
        seen.add(prompt)
        if prompt in examples.get(route, ()):
            pairs.append((prompt, route))
    return pairs
