"""Which routes the built-in router would confuse (gateway.router_models.separation)."""

from __future__ import annotations

from gateway.router_models.local import RouteIntent
from gateway.router_models.separation import route_overlaps

BILLING = RouteIntent(
    "billing",
    "Billing questions: invoices, refunds, payments.",
    ("Where is my invoice?", "I was charged twice", "Refund my order", "Update my card"),
)
PAYMENTS = RouteIntent(
    "payments",
    "Questions about invoices, refunds and charges.",
    (
        "Send me the invoice again",
        "Why was I charged?",
        "I want my money back",
        "Change payment method",
    ),
)
TECH = RouteIntent(
    "tech",
    "Technical support: bugs, crashes, error messages.",
    ("The app crashes on start", "Error 500 when I log in", "Button does nothing", "Sync fails"),
)
FALLBACK = RouteIntent("fallback", "Anything else.")


def test_routes_that_say_the_same_thing_overlap_and_distinct_ones_do_not() -> None:
    overlaps = route_overlaps([BILLING, PAYMENTS, TECH, FALLBACK])
    assert [{o.route, o.other} for o in overlaps] == [{"billing", "payments"}]
    [overlap] = overlaps
    assert overlap.held_out and overlap.confused >= 2 and overlap.similarity is not None
    assert "overlap" in overlap.message
    assert route_overlaps([BILLING, TECH, FALLBACK]) == []


def test_intents_alone_are_compared_when_no_route_has_examples() -> None:
    bare = [RouteIntent(r.name, r.intent) for r in (BILLING, PAYMENTS, TECH)]
    [overlap] = route_overlaps(bare)
    assert {overlap.route, overlap.other} == {"billing", "payments"} and overlap.held_out == 0


def test_too_few_or_unnamed_routes_give_no_verdict() -> None:
    assert route_overlaps([BILLING]) == []
    assert route_overlaps([BILLING, RouteIntent("", "x")]) == []
