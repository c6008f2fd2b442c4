"""The rough edges a new operator hit (issue 15), each pinned through Django's test client:
a refused wizard step answered by a redirect, no draft notice for a wizard only opened, the routes'
intents and examples on the review step, the playground's word about a forced route that did not
answer and its exact sample call, prompts taken from the balancer's own routes, and one rounding
rule for money and one stated window on every page. (The browser halves: tests/browser/
test_rough_edges.py and tests/browser/test_board_live.py.)"""

from __future__ import annotations

import ast
import html as htmllib
import json
import re
import shlex
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from balancers.models import Balancer
from gateway.hotpath import runtime
from gateway.models import UsageEvent
from tests.factories import make_balancer, make_instance
from tests.pages.conftest import route_post_data
from tests.pages.test_wizard_pages import draft, walk_to_routes
from tests.pages.test_wizard_rules import add_rule, step_data

HTMX = {"HX-Request": "true"}
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


# -- 1. a refused step is a redirect: a reload never posts the old values again --------------------


def test_a_refused_step_redirects_to_its_page_so_a_reload_keeps_later_edits(
    admin_client, demo
) -> None:
    admin_client.get("/balancers/new/")
    refused = admin_client.post(
        "/balancers/new/name/",
        {"nav": "next", "name": "Billing Desk", "serving_name": "billing-desk", "description": ""},
    )
    assert refused.status_code == 302 and refused["Location"] == "/balancers/new/name/"
    page = admin_client.get("/balancers/new/name/").content.decode()
    assert "lowercase letters" in page and 'aria-invalid="true"' in page
    assert 'value="Billing Desk"' in page  # the draft as posted, errors beside it
    # Later edits are autosaved; the page the browser reloads is this GET, which keeps them.
    admin_client.post(
        "/balancers/new/name/autosave/",
        {"name": "Billing Desk", "serving_name": "billing-v2", "description": "Billing questions."},
        headers=HTMX,
    )
    reloaded = admin_client.get("/balancers/new/name/").content.decode()
    assert 'value="billing-v2"' in reloaded and "Billing questions." in reloaded


def test_a_refused_save_is_shown_on_the_review_page_until_the_next_edit(
    admin_client, demo, monkeypatch
) -> None:
    walk_to_routes(admin_client)
    admin_client.post(
        "/balancers/new/routes/", route_post_data(draft(admin_client)["routes"]["rows"])
    )

    def refuse(**kwargs):
        raise ValidationError({"request_timeout": ["Refused by the save itself."]})

    monkeypatch.setattr("balancers.forms.balancer_save", refuse)
    save = {"nav": "save", "attempt_budget": "4", "request_timeout": "600", "enabled": "on"}
    response = admin_client.post("/balancers/new/review/", save)
    assert response.status_code == 302 and response["Location"] == "/balancers/new/review/"
    for _ in range(2):  # the page and its reload
        assert (
            "Refused by the save itself."
            in admin_client.get("/balancers/new/review/").content.decode()
        )
    admin_client.post("/balancers/new/review/autosave/", {**save, "request_timeout": "300"})
    assert (
        "Refused by the save itself."
        not in admin_client.get("/balancers/new/review/").content.decode()
    )
    assert not Balancer.objects.filter(name="billing-desk").exists()


# -- 4. opening the wizard is no unsaved balancer -----------------------------------------------


def test_opening_the_wizard_and_leaving_leaves_no_draft_notice_on_the_list(
    admin_client, demo
) -> None:
    admin_client.get("/balancers/new/", follow=True)
    admin_client.get("/balancers/new/workload/")
    # An autosave of the values already there (a focus and a blur) is not an edit either.
    admin_client.post(
        "/balancers/new/name/autosave/", {"name": "", "serving_name": "", "description": ""}
    )
    assert "unsaved balancer" not in admin_client.get("/balancers/").content.decode()
    admin_client.post(
        "/balancers/new/name/autosave/",
        {"name": "billing-desk", "serving_name": "", "description": ""},
    )
    listing = admin_client.get("/balancers/").content.decode()
    assert "You have an unsaved balancer <b>billing-desk</b> in the wizard." in listing


def test_adding_a_route_is_an_edit_the_list_mentions(admin_client, demo) -> None:
    admin_client.get("/balancers/new/", follow=True)
    admin_client.get("/balancers/new/routes/")
    rows = draft(admin_client)["routes"]["rows"]
    admin_client.post("/balancers/new/routes/", route_post_data(rows, nav="add"), headers=HTMX)
    assert (
        "You have an unsaved balancer in the wizard."
        in admin_client.get("/balancers/").content.decode()
    )


# -- 5. the review shows what will be saved: intents, examples, content rules ---------------------


def test_the_review_step_shows_each_routes_intent_and_examples_and_the_content_rules(
    admin_client, demo
) -> None:
    from balancers.demo import SUPPORT_ROUTES

    walk_to_routes(admin_client)
    add_rule(admin_client)
    state = draft(admin_client)
    state["rules"]["rows"][0].update(
        name="invoices", kind="keywords", value="invoice", route="reasoning"
    )
    assert admin_client.post("/balancers/new/routes/", step_data(state))["Location"] == (
        "/balancers/new/review/"
    )
    review = htmllib.unescape(admin_client.get("/balancers/new/review/").content.decode())
    routes = review[
        review.index('<ol class="review-routes">') : review.index('data-testid="review-rules"')
    ]
    for spec in SUPPORT_ROUTES:
        assert spec["intent"] in routes
        for example in spec["examples"]:
            assert f"<li>{example}</li>" in routes
    assert "No example prompts" in routes  # fallback has none
    rules = review[review.index('data-testid="review-rules"') :]
    assert "invoices" in rules and "last user message mentions invoice → route reasoning" in rules


# -- 6. the playground and the smoke test --------------------------------------------------------


@pytest.mark.django_db(
    transaction=True
)  # the in-process gateway reads the demo from its own thread
def test_a_forced_route_that_is_cooling_down_says_so_and_names_the_route_that_answered(
    admin_client, demo, usage_writer
) -> None:
    support = Balancer.objects.get(name="support-balancer")
    pks = [m.instance.pk for m in support.routes.get(name="reasoning").target_group.members.all()]
    for pk in pks:
        runtime.routing.health.apply_remote(
            pk, cooldown_until=time.time() + 30, trips=1, last_failure_at=time.time()
        )
    try:
        result = admin_client.post(
            "/playground/send/",
            {"balancer": "support-balancer", "route": "reasoning", "prompt": "Decide this refund."},
            headers=HTMX,
        ).content.decode()
        smoke = admin_client.post(
            "/balancers/support-balancer/smoke-test/",
            {"prompt": "Decide this refund.", "route": "reasoning"},
            headers=HTMX,
        ).content.decode()
    finally:
        for pk in pks:
            runtime.routing.health.reset(pk)
    for html in (result, smoke):
        assert "HTTP 200" in html
        note = re.search(r'data-testid="route-note">([^<]*)<', html)
        assert note is not None, html
        assert re.fullmatch(
            r"Forced onto reasoning, but reasoning was not tried: it is cooling down, \d+ s left\. "
            r"efficient answered instead\.",
            note.group(1),
        )
    # A forced route that answers gets no note.
    ok = admin_client.post(
        "/playground/send/",
        {"balancer": "support-balancer", "route": "reasoning", "prompt": "Decide this refund."},
        headers=HTMX,
    ).content.decode()
    assert "route reasoning" in ok and 'data-testid="route-note"' not in ok


def _snippets(html: str) -> tuple[str, str]:
    found = {
        name: htmllib.unescape(m)
        for name in ("python", "curl")
        for m in re.findall(rf'id="code-{name}"[^>]*>(.*?)</pre>', html, re.S)
    }
    return found["python"], found["curl"]


def _python_request(code: str) -> dict:
    """The keyword arguments of the sample's create(...) call, evaluated as Python would."""
    call = next(
        node
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "create"
    )
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords}


def _curl_request(command: str) -> tuple[list[str], dict]:
    words = shlex.split(command.replace("\\\n", " "))
    headers = [words[i + 1] for i, w in enumerate(words) if w == "-H"]
    return headers, json.loads(words[words.index("-d") + 1])


def test_the_playground_sample_is_exactly_the_request_send_makes(admin_client, demo) -> None:
    page = admin_client.get("/playground/?balancer=support-balancer").content.decode()
    prompt = htmllib.unescape(
        re.search(r'<textarea id="pg-prompt"[^>]*>([^<]*)</textarea>', page).group(1)
    )
    assert prompt == "Summarise this email in two lines."  # efficient's first example
    python, curl = _snippets(page)
    assert _python_request(python)["messages"] == [{"role": "user", "content": prompt}]
    assert "extra_headers" not in _python_request(python)

    tricky = 'It\'s "urgent": refund $40\nand reply in German.'
    fragment = admin_client.get(
        "/playground/sample/",
        {"balancer": "support-balancer", "route": "reasoning", "prompt": tricky},
        headers=HTMX,
    ).content.decode()
    assert "<html" not in fragment and fragment.count('hx-swap-oob="true"') == 2
    python, curl = _snippets(fragment)
    sent = _python_request(python)
    assert sent["model"] == "support-balancer"
    assert sent["messages"] == [{"role": "user", "content": tricky}]
    assert sent["extra_headers"] == {"X-Balancer-Route": "reasoning"}
    headers, body = _curl_request(curl)
    assert "X-Balancer-Route: reasoning" in headers
    assert body == {"model": "support-balancer", "messages": [{"role": "user", "content": tricky}]}
    # "Let the balancer decide": no route header.
    fragment = admin_client.get(
        "/playground/sample/", {"balancer": "support-balancer", "route": "", "prompt": "Hi"}
    ).content.decode()
    headers, body = _curl_request(_snippets(fragment)[1])
    assert (
        not any(h.startswith("X-Balancer-Route") for h in headers)
        and body["messages"][0]["content"] == "Hi"
    )
    assert admin_client.get("/playground/sample/", {"balancer": "nope"}).status_code == 404


def test_the_save_and_test_page_prompts_with_the_balancers_own_examples(admin_client, demo) -> None:
    make_balancer(
        name="translator",
        serving_name="translator",
        routes=[
            {
                "name": "german",
                "intent": "Translations into German.",
                "instance": make_instance(),
                "priority": 1,
                "is_default": True,
                "examples": ["Translate this invoice into German."],
            }
        ],
    )
    page = htmllib.unescape(admin_client.get("/balancers/translator/test/").content.decode())
    assert (
        '<textarea id="smoke-prompt" name="prompt" rows="3">Translate this invoice into '
        "German.</textarea>" in page
    )
    assert _python_request(_snippets(page)[0])["messages"][0]["content"] == (
        "Translate this invoice into German."
    )
    assert "support" not in page.lower().split("<main", 1)[-1]
    # No examples anywhere: a neutral request, not someone else's support prompt.
    make_balancer(name="plain", serving_name="plain")
    page = htmllib.unescape(admin_client.get("/balancers/plain/test/").content.decode())
    assert "Reply in one short sentence, so I can see this endpoint answer." in page


# -- 7. one rounding rule for money, one stated window ------------------------------------------


def test_money_and_the_live_window_read_the_same_on_every_page(admin_client, demo) -> None:
    support = Balancer.objects.get(name="support-balancer")
    UsageEvent.objects.create(
        created_at=timezone.now(),
        request_id="r-money",
        endpoint="chat",
        balancer=support,
        serving_name="support-balancer",
        route="efficient",
        instance="qwen-cheap-a",
        status_code=200,
        latency_ms=12.0,
        prompt_tokens=1_000,
        completion_tokens=500,
        cost_usd=Decimal("0.000763"),
    )
    pages = {
        url: admin_client.get(url).content.decode()
        for url in (
            "/balancers/",
            "/balancers/support-balancer/",
            "/balancers/support-balancer/board/",
            "/usage/?balancer=support-balancer",
        )
    }
    for url, html in pages.items():
        assert "$0.000763" in html, url
        assert not re.search(r"\$0\.0008(?!\d)", html), url  # the old detail page's rounding
    for url in ("/balancers/support-balancer/", "/balancers/support-balancer/board/"):
        assert "last 15 minutes" in pages[url] and "last hour" not in pages[url], url
    # The detail page counts the request in its lane over that same window.
    detail = pages["/balancers/support-balancer/"]
    lane = detail[
        detail.index('data-testid="lane-efficient"') : detail.index('data-testid="lane-reasoning"')
    ]
    assert "<b>1</b>requests, last 15 minutes" in lane


def test_no_template_formats_an_amount_of_money_by_hand() -> None:
    """Spend, cost, savings and budget limits go through the `usd` filter, never by hand
    (`${{ x|floatformat }}`). Prices (per million tokens, per hour) are rates: two decimals."""
    by_hand = re.compile(r"\$\{\{\s*[\w.]*(cost|spen|sav|today|month|limit|usd|extra)", re.I)
    found = [
        f"{path.relative_to(TEMPLATES)}: {m.group(0)}"
        for path in TEMPLATES.rglob("*.html")
        for m in by_hand.finditer(path.read_text())
    ]
    assert not found, found
