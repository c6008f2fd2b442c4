"""An operator reads usage and cost: ranges, filters, the attempt log and the CSV, in Chromium."""

from __future__ import annotations

import csv
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from balancers.models import Balancer
from gateway.models import UsageEvent
from gateway.reporting.selectors import format_usd
from targetgroups.models import Instance
from tests.factories import make_api_key

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

# route, instance, prompt tokens, completion tokens, latency (ms)
SUPPORT_MIX = [
    ("efficient", "qwen-cheap-a", 420, 90, 180.0),
    ("efficient", "qwen-cheap-b", 380, 120, 210.0),
    ("reasoning", "gpt-oss-120b", 1800, 900, 2400.0),
    ("efficient", "qwen-cheap-a", 300, 60, 150.0),
    ("fallback", "backup-small", 650, 200, 640.0),
]
FAILED_OVER = [
    {
        "route": "reasoning",
        "instance": "gpt-oss-120b",
        "outcome": "timeout",
        "status": None,
        "ms": 30000.0,
    },
    {"route": "fallback", "instance": "backup-small", "outcome": "ok", "status": 200, "ms": 702.4},
]


def seeded_traffic() -> list[UsageEvent]:
    """A day of support traffic (busier in the afternoon), embeddings, a failover, a few 502s, and
    older days."""
    support = Balancer.objects.get(name="support-balancer")
    embed = Balancer.objects.get(name="embed-balancer")
    app_key, _ = make_api_key(name="support-app", balancers=[support])
    batch_key, _ = make_api_key(name="nightly-embeddings", balancers=[embed])
    instances = {i.instance_id: i for i in Instance.objects.all()}
    now = timezone.now()
    events = []

    def add(
        at: Any,
        balancer: Balancer,
        route: str,
        instance: str,
        prompt: int,
        completion: int,
        latency: float,
        **fields: Any,
    ) -> None:
        price_in, price_out = (
            instances[instance].input_price_per_million,
            instances[instance].output_price_per_million,
        )
        values = {
            "created_at": at,
            "request_id": f"seed-{len(events)}",
            "balancer": balancer,
            "endpoint": "embeddings" if balancer == embed else "chat",
            "serving_name": balancer.serving_name,
            "route": route,
            "instance": instance,
            "model": instances[instance].model,
            "status_code": 200,
            "latency_ms": latency,
            "ttfb_ms": latency / 3,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_usd": (Decimal(prompt) * price_in + Decimal(completion) * price_out) / 1_000_000,
            "decision_reason": "classified",
            "attempts": 1,
            "attempt_log": [
                {
                    "route": route,
                    "instance": instance,
                    "outcome": "ok",
                    "status": 200,
                    "ms": latency,
                }
            ],
        }
        events.append(UsageEvent(**{**values, **fields}))

    for hour in range(22):
        busy = 2 + (9 - abs(hour - 9)) % 8 if hour < 18 else 1
        for n in range(busy):
            route, instance, prompt, completion, latency = SUPPORT_MIX[
                (hour + n) % len(SUPPORT_MIX)
            ]
            at = now - timedelta(hours=hour, minutes=7 * n + 1)
            add(
                at,
                support,
                route,
                instance,
                prompt + 13 * n,
                completion + 5 * hour,
                latency,
                api_key=app_key if n % 3 else None,
                stream=n % 2 == 0,
            )
        if hour % 4 == 1:
            add(
                now - timedelta(hours=hour, minutes=40),
                embed,
                "primary",
                "embed-small",
                5200,
                0,
                35.0,
                api_key=batch_key,
            )
    add(
        now - timedelta(minutes=12),
        support,
        "fallback",
        "backup-small",
        900,
        310,
        30702.4,
        api_key=app_key,
        attempts=2,
        attempt_log=FAILED_OVER,
    )
    for minutes in (25, 95, 190):
        add(
            now - timedelta(minutes=minutes),
            support,
            "",
            "gpt-oss-120b",
            0,
            0,
            30050.0,
            api_key=app_key,
            status_code=502,
            error_type="upstream_timeout",
            attempts=3,
            attempt_log=[
                {"route": r, "instance": i, "outcome": "timeout", "status": None, "ms": 10000.0}
                for r, i in (
                    ("reasoning", "gpt-oss-120b"),
                    ("fallback", "backup-small"),
                    ("efficient", "qwen-cheap-a"),
                )
            ],
        )
    for day in range(2, 6):
        for n in range(6 + day):
            add(
                now - timedelta(days=day, hours=n),
                support,
                "reasoning",
                "gpt-oss-120b",
                2400,
                1100,
                2600.0,
            )
    for event in events:
        if event.status_code >= 400:
            event.cost_usd = Decimal(0)
            event.instance = event.model = ""
    return UsageEvent.objects.bulk_create(events)


def test_an_operator_reads_usage_and_cost(ui, tmp_path: Path) -> None:
    page = ui.page
    events = seeded_traffic()
    last_day = [e for e in events if e.created_at > timezone.now() - timedelta(hours=23)]
    ui.login()
    page.get_by_role("link", name="Usage").first.click()
    expect(page.get_by_role("heading", name="Usage and cost")).to_be_visible()
    expect(page.get_by_test_id("total-requests")).to_have_text(f"{len(last_day):,}")
    expect(page.get_by_test_id("total-cost")).to_have_text(
        format_usd(sum(e.cost_usd for e in last_day))
    )
    expect(page.get_by_test_id("usage-chart").locator("svg")).to_have_count(2)
    expect(page.get_by_test_id("breakdown-balancer").locator("tbody tr").first).to_contain_text(
        "support-balancer"
    )

    # The attempt log of the failed-over request, on demand.
    failover = page.get_by_test_id("recent-requests").locator("tr", has_text="2 attempts")
    failover.get_by_text("2 attempts").click()
    expect(failover.locator(".attempts li")).to_have_count(2)
    expect(failover.locator(".attempts li").first).to_contain_text("timeout")
    ui.shot("usage")

    # Range and filters swap the report in place and keep a real, shareable URL.
    page.evaluate("window.__samePage = true")
    page.get_by_role("navigation", name="Range").get_by_role("link", name="7 days").click()
    expect(page).to_have_url(re.compile(r"/usage/\?range=7d$"))
    expect(page.get_by_test_id("total-requests")).to_have_text(f"{len(events):,}")
    expect(page.get_by_text("Cost per day")).to_be_visible()
    page.get_by_label("Balancer").select_option("embed-balancer")
    expect(page).to_have_url(re.compile(r"/usage/\?range=7d&balancer=embed-balancer$"))
    embeddings = [e for e in events if e.serving_name == "embed-balancer"]
    expect(page.get_by_test_id("total-requests")).to_have_text(str(len(embeddings)))
    assert page.evaluate("window.__samePage") is True

    with page.expect_download() as download_info:
        page.get_by_test_id("export-csv").click()
    rows = list(csv.DictReader(Path(download_info.value.path()).read_text().splitlines()))
    assert {r["balancer"] for r in rows} == {"embed-balancer"}
    assert sum(int(r["requests"]) for r in rows) == len(embeddings)
    assert sum(Decimal(r["cost_usd"]) for r in rows) == sum(e.cost_usd for e in embeddings)

    # Back goes to the previous view of the report.
    page.go_back()
    expect(page).to_have_url(re.compile(r"/usage/\?range=7d$"))
    expect(page.get_by_test_id("total-requests")).to_have_text(f"{len(events):,}")


def test_the_usage_page_fits_a_phone(phone) -> None:
    seeded_traffic()
    phone.login()
    phone.go("/usage/")
    expect(phone.page.get_by_test_id("usage-chart")).to_be_visible()
    overflow = phone.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"/usage/ scrolls sideways by {overflow}px on a phone"
