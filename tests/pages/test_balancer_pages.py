"""The balancer list, detail page, live board, smoke test and the enable/delete actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from balancers.models import Balancer
from gateway.models import UsageEvent
from pages.balancers.page_selectors import Sparkline, traffic_by_hour


def usage(
    balancer: Balancer, *, hours_ago: float = 0, status: int = 200, route: str = "efficient"
) -> UsageEvent:
    return UsageEvent.objects.create(
        created_at=timezone.now() - timedelta(hours=hours_ago),
        request_id="r",
        endpoint="chat",
        balancer=balancer,
        serving_name=balancer.serving_name,
        route=route,
        instance="qwen-cheap-a",
        status_code=status,
        latency_ms=12.0,
        decision_reason="classified",
    )


def test_the_list_shows_status_mode_routes_and_traffic(admin_client, demo) -> None:
    support = Balancer.objects.get(name="support-balancer")
    for hours in (0, 0, 1, 5):
        usage(support, hours_ago=hours)
    html = admin_client.get("/balancers/").content.decode()
    assert "support-balancer" in html and "embed-balancer" in html
    assert "intent_classifier" in html and "ordered" in html
    assert "fallback · default" in html
    assert "Serving" in html
    assert "4 req" in html and "<polyline" in html
    assert 'aria-label="4 requests in the last 24 hours"' in html


def test_traffic_by_hour_buckets_the_last_day() -> None:
    spark = Sparkline([0, 2, 4])
    assert spark.total == 6 and spark.points.startswith("0.0,")
    assert spark.area.startswith("M0,30 L0.0,") and spark.area.endswith("Z")


@pytest.mark.django_db
def test_traffic_by_hour_counts_per_balancer(demo) -> None:
    support = Balancer.objects.get(name="support-balancer")
    usage(support, hours_ago=0)
    usage(support, hours_ago=0)
    usage(support, hours_ago=3)
    usage(support, hours_ago=30)  # outside the window
    series = traffic_by_hour([support.pk])[support.pk]
    assert len(series.values) == 24 and series.total == 3 and series.values[-1] == 2


def test_the_detail_page_lists_routes_in_attempt_order_with_sample_and_links(
    admin_client, demo
) -> None:
    html = admin_client.get("/balancers/support-balancer/").content.decode()
    assert (
        html.index('data-testid="lane-efficient"')
        < html.index('data-testid="lane-reasoning"')
        < html.index('data-testid="lane-fallback"')
    )
    assert "model=&quot;support-balancer&quot;" in html and "http://testserver/v1" in html
    assert "/playground/?balancer=support-balancer" in html
    assert "/balancers/support-balancer/board/" in html
    assert "/balancers/support-balancer/edit/" in html
    assert 'value="fallback" selected' in html  # the smoke test defaults to the default route


def test_the_board_streams_events_and_offers_lanes_and_requests_to_poll(admin_client, demo) -> None:
    support = Balancer.objects.get(name="support-balancer")
    usage(support, route="reasoning", status=502)
    page = admin_client.get("/balancers/support-balancer/board/").content.decode()
    assert 'data-events-url="/balancers/support-balancer/board/events/"' in page and "<html" in page
    fragment = admin_client.get(
        "/balancers/support-balancer/board/", headers={"HX-Request": "true"}
    ).content.decode()
    assert fragment.lstrip().startswith('<tbody id="board-events"') and "<html" not in fragment
    lanes = admin_client.get("/balancers/support-balancer/board/?lanes=1").json()
    assert lanes["routes"] == ["efficient", "reasoning", "fallback"]
    reasoning = lanes["lanes"]["reasoning"]
    assert reasoning["state"] == "active"
    assert '<dd data-testid="error-rate">100%</dd>' in reasoning["html"]
    assert (
        '<dd data-testid="rpm">0.1</dd>' in reasoning["html"]
    )  # 1 request over the 15-minute window
    assert (
        ">fallback</span>" in lanes["lanes"]["efficient"]["html"]
        or ">primary</span>" in lanes["lanes"]["efficient"]["html"]
    )


def test_the_board_opens_a_failed_over_request_s_attempts(admin_client, demo) -> None:
    support = Balancer.objects.get(name="support-balancer")
    event = usage(support)
    event.attempts = 2
    event.attempt_log = [
        {
            "route": "reasoning",
            "instance": "gpt-oss-120b",
            "outcome": "connect",
            "status": None,
            "ms": 1.2,
        },
        {
            "route": "efficient",
            "instance": "qwen-cheap-a",
            "outcome": "ok",
            "status": 200,
            "ms": 60.4,
        },
    ]
    event.save()
    fragment = admin_client.get(
        "/balancers/support-balancer/board/", headers={"HX-Request": "true"}
    ).content.decode()
    assert "<summary>2 attempts</summary>" in fragment
    assert (
        "fallback after gpt-oss-120b connection refused" in fragment
    )  # the decision in operator words
    assert (
        'reasoning → <span class="mono">gpt-oss-120b</span>' in fragment
        and ">connect</span>" in fragment
    )


def test_the_status_follows_instance_health(admin_client, demo) -> None:
    from targetgroups.models import Instance

    Instance.objects.filter(instance_id="backup-small").update(enabled=False)
    html = admin_client.get("/balancers/support-balancer/").content.decode()
    assert "Degraded" in html and "unavailable" in html


def test_disable_and_enable_keep_the_routes(admin_client, demo) -> None:
    response = admin_client.post("/balancers/support-balancer/toggle/")
    assert response.status_code == 302
    balancer = Balancer.objects.get(name="support-balancer")
    assert balancer.enabled is False and balancer.routes.count() == 3
    assert "Disabled" in admin_client.get("/balancers/").content.decode()
    admin_client.post("/balancers/support-balancer/toggle/")
    balancer.refresh_from_db()
    assert balancer.enabled is True


def test_delete_removes_the_balancer(admin_client, demo) -> None:
    assert admin_client.post("/balancers/embed-balancer/delete/")["Location"] == "/balancers/"
    assert not Balancer.objects.filter(name="embed-balancer").exists()
    assert admin_client.get("/balancers/embed-balancer/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_the_smoke_test_answers_through_the_gateway(admin_client, demo, usage_writer) -> None:
    response = admin_client.post(
        "/balancers/support-balancer/smoke-test/",
        {"prompt": "Summarise this email.", "route": "fallback"},
        headers={"HX-Request": "true"},
    )
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert 'data-testid="smoke-route">fallback<' in html
    assert 'data-testid="smoke-instance">backup-small<' in html
    assert 'data-testid="smoke-answer">' in html and "HTTP 200" in html
    embed = admin_client.post(
        "/balancers/embed-balancer/smoke-test/",
        {"prompt": "hello", "route": ""},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert "embedding of 256 dimensions" in embed and "embed-small" in embed
    # Without htmx the result is a page of its own.
    page = admin_client.post(
        "/balancers/support-balancer/smoke-test/", {"prompt": "Hi", "route": ""}
    ).content.decode()
    assert "<html" in page and "HTTP 200" in page


@pytest.mark.django_db(transaction=True)
def test_the_smoke_test_shows_gateway_errors(admin_client, demo, usage_writer) -> None:
    html = admin_client.post(
        "/balancers/support-balancer/smoke-test/",
        {"prompt": "x", "route": "nope"},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert "HTTP 400" in html and "Unknown route" in html


HOSTILE_PROMPT = "<script>alert('board')</script> please summarise this ticket " + "and more " * 20


def _kept_prompt_event(support: Balancer, text: str) -> UsageEvent:
    event = usage(support)
    event.prompt_text = text
    event.save(update_fields=["prompt_text"])
    return event


def test_the_board_shows_the_latest_prompt_s_start_escaped_when_prompts_are_kept(
    admin_client, demo
) -> None:
    support = Balancer.objects.get(name="support-balancer")
    support.log_prompts = True
    support.save(update_fields=["log_prompts"])
    _kept_prompt_event(support, HOSTILE_PROMPT)
    page = admin_client.get("/balancers/support-balancer/board/").content.decode()
    node = page.split('data-testid="request-node"')[1].split('data-testid="endpoint-node"')[0]
    assert (
        '<div class="small prompt-start" data-testid="last-prompt">'
        "&lt;script&gt;alert(&#x27;board&#x27;)&lt;/script&gt; please summarise this ticket and"
    ) in node
    assert "<script>alert" not in page
    shown = node.split('data-testid="last-prompt">')[1].split("</div>")[0]
    assert shown.endswith("…") and "and more and more" in shown
    assert HOSTILE_PROMPT.rstrip() not in page  # the start only: 80 characters
    assert "first 80 characters" in node


def test_the_board_shows_no_prompt_when_the_balancer_keeps_none(admin_client, demo) -> None:
    support = Balancer.objects.get(name="support-balancer")
    assert support.log_prompts is False
    _kept_prompt_event(support, HOSTILE_PROMPT)  # kept before logging was switched off
    page = admin_client.get("/balancers/support-balancer/board/").content.decode()
    assert 'data-testid="last-prompt"' not in page
    assert "please summarise" not in page and "alert(" not in page
    assert "this balancer keeps no prompts" in page


def _attempt(route: str, instance: str, outcome: str) -> dict[str, object]:
    return {"route": route, "instance": instance, "outcome": outcome, "status": None, "ms": 1.0}


@pytest.mark.parametrize("vendor", ["postgresql", "python"])
def test_a_lane_s_error_rate_counts_the_requests_that_failed_there_and_went_on(
    admin_client, demo, monkeypatch, vendor
) -> None:
    from django.db import connection

    support = Balancer.objects.get(name="support-balancer")
    answered = usage(support, route="reasoning")
    answered.attempts, answered.attempt_log = 1, [_attempt("reasoning", "gpt-oss-120b", "ok")]
    answered.save()
    for _ in range(3):  # reasoning refused the connection; efficient answered
        failover = usage(support, route="efficient")
        failover.attempts = 2
        failover.attempt_log = [
            _attempt("reasoning", "gpt-oss-120b", "connect"),
            _attempt("efficient", "qwen-cheap-a", "ok"),
        ]
        failover.save()
    everywhere = usage(support, route="", status=502)  # failed on every lane: ended on none
    everywhere.attempts = 2
    everywhere.attempt_log = [
        _attempt("reasoning", "gpt-oss-120b", "timeout"),
        _attempt("fallback", "qwen-cheap-b", "http"),
    ]
    everywhere.save()
    inside = usage(support, route="efficient")  # a member failed, its sibling in the lane answered
    inside.attempts = 2
    inside.attempt_log = [
        _attempt("efficient", "qwen-cheap-a", "connect"),
        _attempt("efficient", "qwen-cheap-b", "ok"),
    ]
    inside.save()
    hedged = usage(support, route="fallback")  # a hedged race lost is no failure of the lane
    hedged.attempts = 2
    hedged.attempt_log = [
        _attempt("efficient", "qwen-cheap-a", "hedge_lost"),
        _attempt("fallback", "qwen-cheap-b", "ok"),
    ]
    hedged.save()
    if vendor == "python":  # SQLite's path (make run), on the same rows
        monkeypatch.setattr(connection, "vendor", "sqlite")
    lanes = admin_client.get("/balancers/support-balancer/board/?lanes=1").json()["lanes"]

    def rate(route: str) -> str:
        return lanes[route]["html"].split('data-testid="error-rate">')[1].split("</dd>")[0]

    # reasoning: 1 answered, 3 failed over, 1 failed everywhere: 4 of 5 it did not answer.
    assert rate("reasoning") == "80%"
    assert '<dd data-testid="rpm">0.1</dd>' in lanes["reasoning"]["html"]  # answered: 1 in 15 min
    assert rate("efficient") == "0%"  # answered all 4 that ended there (one inside the lane)
    assert (
        rate("fallback") == "50%"
    )  # answered the hedged race, failed the one that failed everywhere
