"""Correcting the router from the pages: prompt logging turned on (audited), a playground request
marked wrong, its prompt an example of the route named, the figures shown, the next request
routed there; the control on the usage page and the board; viewers neither see nor post it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from balancers.models import AuditEntry, Balancer, Route
from gateway.models import RoutingCorrection, UsageEvent
from tests.pages.ui_support import usage_writer_reset

pytestmark = pytest.mark.django_db(transaction=True)

CORRECT = "/balancers/support-balancer/correction/"
# A rewording request about an escalation: the demo router sends it to efficient (confidence 0.56);
# this operator wants everything about escalations on reasoning.
PROMPT = "Rewrite this escalation note so it sounds more polite."


def send(client: Any, prompt: str = PROMPT) -> str:
    html = client.post(
        "/playground/send/",
        {"balancer": "support-balancer", "route": "", "prompt": prompt},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert "HTTP 200" in html, html
    return html


def request_id(html: str) -> str:
    found = re.search(r'<b class="mono">(pg-[0-9a-f]+)</b>', html)
    assert found is not None, html
    return found.group(1)


def test_an_operator_corrects_a_playground_decision_and_the_next_request_follows_it(
    admin_client, admin_user, demo, usage_writer
) -> None:
    # Prompt logging is off in the demo: the control says why it cannot correct.
    first = send(admin_client)
    assert "route efficient" in first and "<b>classified</b>" in first
    assert 'data-testid="correction-control"' in first
    usage_writer_reset()
    offer = admin_client.get(
        CORRECT,
        {"request": request_id(first), "source": "playground"},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert "Prompt logging is off for this balancer" in offer and "<form" not in offer
    assert UsageEvent.objects.get(request_id=request_id(first)).prompt_text == ""

    response = admin_client.post("/balancers/support-balancer/prompt-logging/", {"keep": "on"})
    assert response.status_code == 302
    assert Balancer.objects.get(name="support-balancer").log_prompts is True
    detail = admin_client.get("/balancers/support-balancer/").content.decode()
    assert "on: each request's last user message is kept" in detail

    second = send(admin_client)
    assert "route efficient" in second
    usage_writer_reset()
    rid = request_id(second)
    assert UsageEvent.objects.get(request_id=rid).prompt_text == PROMPT
    form = admin_client.get(
        CORRECT, {"request": rid, "source": "playground"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert 'data-testid="correction-form"' in form and PROMPT in form
    assert '<option value="reasoning">' in form and '<option value="efficient">' not in form

    unconfirmed = admin_client.post(
        CORRECT,
        {"request": rid, "route": "reasoning", "source": "playground"},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert 'class="alert warn"' in unconfirmed and "Confirm" in unconfirmed
    assert (
        PROMPT
        not in Route.objects.get(balancer__name="support-balancer", name="reasoning").examples
    )

    notice = admin_client.post(
        CORRECT,
        {"request": rid, "route": "reasoning", "source": "playground", "confirm": "yes"},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert 'class="alert ok"' in notice
    assert "Added as an example of reasoning (the router had sent it to efficient)" in notice
    assert "1 corrected example: 0 of 1 right before (0%), 1 of 1 after (100%)" in notice
    reasoning = Route.objects.get(balancer__name="support-balancer", name="reasoning")
    assert reasoning.examples[-1] == PROMPT
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "prompt logging on",
        "routing corrected",
    ]
    correction = RoutingCorrection.objects.get()
    assert (correction.source, correction.username) == ("playground", admin_user.username)

    # The save bumped the config version: the playground's next request meets the refitted router.
    third = send(admin_client)
    assert "route reasoning" in third and "<b>classified</b>" in third

    detail = admin_client.get("/balancers/support-balancer/").content.decode()
    corrections = detail.split('data-testid="corrections"')[1]
    assert "efficient → <b>reasoning</b>" in corrections
    assert (
        'accuracy on 1 corrected example: <span data-testid="accuracy-change">0% → 100%</span>'
        in corrections
    )


def test_the_usage_page_and_the_board_offer_the_correction_on_router_decisions(
    admin_client, demo, usage_writer
) -> None:
    Balancer.objects.filter(name="support-balancer").update(log_prompts=True)
    rid = request_id(send(admin_client))
    usage_writer_reset()
    control = f"/balancers/support-balancer/correction/?request={rid}&amp;source="
    usage = admin_client.get("/usage/").content.decode()
    assert control + "usage" in usage
    board = admin_client.get("/balancers/support-balancer/board/").content.decode()
    assert control + "board" in board
    assert 'data-correction-url="/balancers/support-balancer/correction/"' in board
    # Without htmx the form is a page of its own.
    page = admin_client.get(CORRECT, {"request": rid, "source": "usage"}).content.decode()
    assert "<h1>Correct a routing decision</h1>" in page and PROMPT in page


def test_a_viewer_sees_no_correction_control_and_cannot_post_one(
    client, django_user_model, demo, usage_writer
) -> None:
    from django.contrib.auth.models import Group

    Balancer.objects.filter(name="support-balancer").update(log_prompts=True)
    user = django_user_model.objects.create_user("watcher", password="x")
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)
    html = send(client)
    assert 'data-testid="correction-control"' not in html
    usage_writer_reset()
    assert 'data-testid="correction-control"' not in client.get("/usage/").content.decode()
    rid = request_id(html)
    posted = client.post(CORRECT, {"request": rid, "route": "reasoning", "confirm": "yes"})
    assert posted.status_code == 403
    assert client.get(CORRECT, {"request": rid}).status_code == 403
    assert (
        client.post("/balancers/support-balancer/prompt-logging/", {"keep": "off"}).status_code
        == 403
    )
    assert not RoutingCorrection.objects.exists()
    assert (
        PROMPT
        not in Route.objects.get(balancer__name="support-balancer", name="reasoning").examples
    )
