"""The usage-and-cost page: figures from the rollups, filters, ranges, the CSV, the empty state."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from balancers.models import Balancer
from gateway.models import UsageEvent, UsageHourly
from gateway.reporting.selectors import format_usd
from tests.factories import make_api_key

ATTEMPTS = [
    {
        "route": "efficient",
        "instance": "qwen-cheap-b",
        "outcome": "timeout",
        "status": None,
        "ms": 2000.5,
    },
    {
        "route": "fallback",
        "instance": "backup-small",
        "outcome": "http_502",
        "status": 502,
        "ms": 88.0,
    },
]


def usage(
    balancer: Balancer,
    *,
    hours_ago: float = 0,
    status: int = 200,
    route: str = "efficient",
    instance: str = "qwen-cheap-a",
    model: str = "qwen-cheap",
    key: Any = None,
    cost: str = "0.0012",
    prompt: int = 1000,
    completion: int = 200,
    latency: float = 100.0,
    **fields: Any,
) -> UsageEvent:
    return UsageEvent.objects.create(
        created_at=timezone.now() - timedelta(hours=hours_ago),
        request_id="r",
        endpoint="chat",
        balancer=balancer,
        serving_name=balancer.serving_name,
        route=route,
        instance=instance,
        model=model,
        api_key=key,
        status_code=status,
        latency_ms=latency,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=Decimal(cost),
        decision_reason="classified",
        **fields,
    )


@pytest.fixture
def traffic(demo: None) -> dict[str, Any]:
    """Four requests in the last few hours: three on support-balancer (one failed over and lost),
    one embedding."""
    support = Balancer.objects.get(name="support-balancer")
    embed = Balancer.objects.get(name="embed-balancer")
    key, _ = make_api_key(name="support-app")
    usage(support, hours_ago=0.1, key=key)
    usage(support, hours_ago=2)
    usage(
        support,
        hours_ago=5,
        status=502,
        route="",
        instance="",
        model="",
        attempts=2,
        attempt_log=ATTEMPTS,
        error_type="upstream_error",
        cost="0",
        completion=0,
    )
    usage(
        embed,
        hours_ago=1,
        route="primary",
        instance="embed-small",
        model="embed-small",
        key=key,
        cost="0.00002",
        prompt=50,
        completion=0,
        latency=20.0,
    )
    return {"support": support, "embed": embed, "key": key}


def figure(html: str, name: str) -> str:
    match = re.search(rf'data-testid="{name}">([^<]*)<', html)
    assert match, name
    return match.group(1)


def section(html: str, name: str) -> str:
    return html.split(f'data-testid="{name}"', 1)[1].split("</section>", 1)[0]


def test_the_usage_pages_need_a_login(client, demo) -> None:
    for path in ("/usage/", "/usage/export.csv"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


def test_a_new_operator_is_shown_how_to_make_traffic(admin_client, demo) -> None:
    html = admin_client.get("/usage/").content.decode()
    assert 'data-testid="usage-empty"' in html and "No traffic yet" in html
    assert 'href="/playground/"' in html and 'href="/api-keys/"' in html
    assert "<table" not in html and 'data-testid="usage-totals"' not in html
    assert 'href="/usage/" aria-current="page"' in html  # the nav marks the page


def test_the_figures_match_the_events(admin_client, traffic) -> None:
    html = admin_client.get("/usage/").content.decode()
    assert UsageHourly.objects.exists()  # the page rolled up what it shows
    assert figure(html, "total-requests") == "4"
    assert figure(html, "total-error-rate") == "25.0%"
    assert figure(html, "total-tokens") == "3,450"
    assert figure(html, "total-cost") == "$0.002420"  # 2 * $0.0012 + $0.00002
    assert figure(html, "total-latency") == "80 ms"  # (3 * 100 + 20) / 4

    balancers = section(html, "breakdown-balancer")
    assert balancers.index("support-balancer") < balancers.index(
        "embed-balancer"
    )  # costliest first
    assert "$0.002400" in balancers and "99.2%" in balancers and "0.8%" in balancers
    routes = section(html, "breakdown-route")
    assert (
        "support-balancer / efficient" in routes
        and "support-balancer / no route answered" in routes
    )
    assert "embed-balancer / primary" in routes
    instances = section(html, "breakdown-instance")
    assert 'href="/instances/qwen-cheap-a/"' in instances and "no instance answered" in instances
    keys = section(html, "breakdown-api-key")
    assert "support-app" in keys and "No API key" in keys

    recent = section(html, "recent-requests")
    assert recent.count("<tr>") == 5  # the header and four requests
    assert '<span class="pill bad">502</span>' in recent and "upstream_error" in recent
    assert (
        "<summary>2 attempts</summary>" in recent
        and "timeout" in recent
        and "backup-small" in recent
    )
    assert (
        "1,000 → 200" in recent
        and "$0.001200" in recent
        and '<span class="sub">classified</span>' in recent
    )

    chart = section(html, "usage-chart")
    assert html.count("<title>") == 1 + 2 * 24  # the page's, and a bar per hour in each band
    assert "$0.002420 over 4 requests (1 failed) in the last 24 hours." in chart
    assert chart.count('<rect class="cost"') in (2, 3)  # the hours with spend (two may share one)
    assert chart.count('<rect class="err"') == 1


def test_filters_narrow_every_figure(admin_client, traffic) -> None:
    html = admin_client.get("/usage/?balancer=embed-balancer").content.decode()
    assert figure(html, "total-requests") == "1" and figure(html, "total-cost") == "$0.000020"
    assert 'data-testid="breakdown-balancer"' in html and "support-balancer /" not in html
    assert '<option value="embed-balancer" selected>' in html

    html = admin_client.get(f"/usage/?key={traffic['key'].pk}").content.decode()
    assert figure(html, "total-requests") == "2" and figure(html, "total-tokens") == "1,250"

    html = admin_client.get("/usage/?key=none").content.decode()
    assert figure(html, "total-requests") == "2" and figure(html, "total-error-rate") == "50.0%"
    assert '<option value="none" selected>' in html

    html = admin_client.get("/usage/?balancer=embed-balancer&key=none").content.decode()
    assert 'data-testid="usage-none-in-range"' in html and "clear the filters" in html
    assert 'data-testid="usage-totals"' not in html and "<table" not in html

    # Values that are not (or no longer) valid show everything rather than an error page.
    html = admin_client.get(
        "/usage/?balancer=deleted-long-ago&key=999999&range=1y"
    ).content.decode()
    assert figure(html, "total-requests") == "4"


def test_ranges_pick_hourly_or_daily_buckets(admin_client, traffic) -> None:
    usage(traffic["support"], hours_ago=24 * 3, cost="0.5")
    usage(traffic["support"], hours_ago=24 * 20, cost="2")

    day = admin_client.get("/usage/").content.decode()
    assert figure(day, "total-requests") == "4"
    week = admin_client.get("/usage/?range=7d").content.decode()
    assert figure(week, "total-requests") == "5" and figure(week, "total-cost") == "$0.5024"
    assert week.count("<title>") == 1 + 2 * 7 and "Cost per day" in week
    month = admin_client.get("/usage/?range=30d").content.decode()
    assert figure(month, "total-requests") == "6" and figure(month, "total-cost") == "$2.50"
    assert month.count("<title>") == 1 + 2 * 30
    # The range links keep the filters, and the filters keep the range.
    filtered = admin_client.get("/usage/?range=7d&balancer=support-balancer").content.decode()
    assert 'href="/usage/?range=30d&amp;balancer=support-balancer"' in filtered
    assert '<input type="hidden" name="range" value="7d">' in filtered
    assert 'href="/usage/export.csv?range=7d&amp;balancer=support-balancer"' in filtered


def test_htmx_swaps_only_the_report(admin_client, traffic) -> None:
    html = admin_client.get("/usage/?range=7d", headers={"HX-Request": "true"}).content.decode()
    assert html.lstrip().startswith('<div id="usage-report"') and "<html" not in html
    assert 'hx-get="/usage/?range=30d"' in html and 'aria-current="true">7 days<' in html
    # The filter form sends empty fields too; the address bar gets the canonical query.
    response = admin_client.get(
        "/usage/?range=24h&balancer=embed-balancer&key=", headers={"HX-Request": "true"}
    )
    assert response["HX-Push-Url"] == "/usage/?balancer=embed-balancer"
    # A history restore (htmx found no snapshot) needs the whole page.
    page = admin_client.get(
        "/usage/?range=7d", headers={"HX-Request": "true", "HX-History-Restore-Request": "true"}
    )
    assert "<html" in page.content.decode()


def test_the_csv_has_the_breakdown_rows_for_the_range(admin_client, traffic) -> None:
    usage(traffic["support"], hours_ago=24 * 3, cost="0.5")  # outside the default range
    response = admin_client.get("/usage/export.csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(
        r'attachment; filename="usage-\d{8}T\d{4}Z-\d{8}T\d{4}Z\.csv"',
        response["Content-Disposition"],
    )
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["balancer"], r["route"], r["api_key"], r["requests"]) for r in rows] == [
        ("support-balancer", "efficient", "", "1"),  # costliest first; a tie in the columns' order
        ("support-balancer", "efficient", "support-app", "1"),
        ("embed-balancer", "primary", "support-app", "1"),
        ("support-balancer", "", "", "1"),
    ]
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal("0.00242")
    assert (
        sum(int(r["errors"]) for r in rows) == 1
        and sum(int(r["prompt_tokens"]) for r in rows) == 3050
    )
    assert rows[2]["cost_share"] == "0.008264" and rows[2]["mean_latency_ms"] == "20.0"
    assert rows[0]["from"] < rows[0]["to"]

    rows = list(
        csv.DictReader(
            io.StringIO(admin_client.get("/usage/export.csv?range=7d&key=none").content.decode())
        )
    )
    assert [(r["route"], r["requests"], r["cost_usd"]) for r in rows] == [
        ("efficient", "2", "0.5012000000"),
        ("", "1", "0.0000000000"),
    ]


def test_a_key_name_cannot_become_a_spreadsheet_formula(admin_client, demo) -> None:
    key, _ = make_api_key(name="=HYPERLINK(1)")
    usage(Balancer.objects.get(name="support-balancer"), key=key)
    rows = list(csv.DictReader(io.StringIO(admin_client.get("/usage/export.csv").content.decode())))
    assert rows[0]["api_key"] == "'=HYPERLINK(1)"


def test_a_deleted_balancer_keeps_its_usage(admin_client, traffic) -> None:
    admin_client.get("/usage/")  # rolled up while the balancer existed
    traffic["embed"].delete()
    html = admin_client.get("/usage/").content.decode()
    assert figure(html, "total-requests") == "4"
    assert "embed-balancer (deleted or unknown)" in section(html, "breakdown-balancer")


def test_a_goal_name_is_named_as_one_not_as_deleted(admin_client, traffic) -> None:
    UsageEvent.objects.create(
        request_id="goal-1",
        created_at=timezone.now(),
        endpoint="chat",
        status_code=200,
        serving_name="auto-cheap",
        api_key=traffic["key"],
        latency_ms=3.0,
    )
    html = admin_client.get("/usage/").content.decode()
    assert "auto-cheap (goal name)" in section(html, "breakdown-balancer")
    assert "auto-cheap (deleted" not in html
    assert '<b>auto-cheap</b><span class="sub">goal name</span>' in html  # the savings table


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("0", "$0.00"),
        ("1234.5", "$1,234.50"),
        ("0.25", "$0.2500"),
        ("0.0036", "$0.003600"),
        ("0.0000004", "<$0.000001"),
        ("-0.5", "-$0.5000"),
    ],
)
def test_costs_keep_the_precision_they_need(amount: str, shown: str) -> None:
    assert format_usd(Decimal(amount)) == shown


@pytest.mark.parametrize(
    ("share", "shown"), [(None, "—"), (0, "0%"), (1, "100%"), (0.0004, "<0.1%"), (0.43, "43.0%")]
)
def test_shares_read_as_percentages(share: float | None, shown: str) -> None:
    from gateway.templatetags.usage_format import percent

    assert percent(share) == shown


def test_refused_requests_count_as_errors_and_cost_nothing(admin_client, traffic) -> None:
    # What the gateway's edge records for refusals: a status, an error code, no tokens, no cost.
    refused = {"created_at": timezone.now(), "endpoint": "chat", "latency_ms": 0.5}
    UsageEvent.objects.create(
        request_id="r429",
        status_code=429,
        error_type="rate_limit_exceeded",
        balancer=traffic["support"],
        serving_name="support-balancer",
        api_key=traffic["key"],
        **refused,
    )
    UsageEvent.objects.create(
        request_id="r404",
        status_code=404,
        error_type="model_not_found",
        serving_name="nope",
        api_key=traffic["key"],
        **refused,
    )
    UsageEvent.objects.create(
        request_id="r401", status_code=401, error_type="invalid_api_key", **refused
    )
    html = admin_client.get("/usage/").content.decode()
    assert figure(html, "total-requests") == "7"
    assert figure(html, "total-error-rate") == "57.1%"  # the 502 and the three refusals
    assert figure(html, "total-cost") == "$0.002420"  # unchanged: refusals are not spend
    assert figure(html, "total-tokens") == "3,450"
    balancers = section(html, "breakdown-balancer")
    assert "nope (deleted or unknown)" in balancers and "no model named" in balancers
    assert "refusals without a valid key" in section(html, "breakdown-api-key")
