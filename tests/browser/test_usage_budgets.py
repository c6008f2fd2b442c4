"""An operator sets up teams and a budget in the pages, then reads spend by team and use case,
the budget's warning and a cost anomaly on the usage page, in Chromium."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_UP, Decimal
from typing import Any

import pytest
from django.db.models import Sum
from django.utils import timezone

from balancers.models import Balancer
from gateway.engine.budgets import period_start
from gateway.models import Team, UsageEvent, UsageHourly
from gateway.reporting.anomalies import detect_anomalies
from gateway.reporting.rollups import floor_hour, rollup_usage
from targetgroups.models import Instance
from tests.factories import make_api_key

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

HOUR = timedelta(hours=1)


def seed_usage(support: Team, research: Team) -> None:
    """Two days of support chat and research summaries; in the last hour a runaway research
    batch."""
    balancer = Balancer.objects.get(name="support-balancer")
    instances = {i.instance_id: i for i in Instance.objects.all()}
    desk, _ = make_api_key(name="support-desk", team=support, use_case="support-chat")
    batch, _ = make_api_key(name="research-batch", team=research, use_case="summaries")
    last = floor_hour(timezone.now()) - HOUR
    events: list[UsageEvent] = []

    def add(at: Any, key: Any, instance: str, prompt: int, completion: int, use_case: str) -> None:
        inst = instances[instance]
        events.append(
            UsageEvent(
                created_at=at,
                request_id=f"seed-{len(events)}",
                endpoint="chat",
                api_key=key,
                team_id=key.team_id,
                use_case=use_case,
                balancer=balancer,
                serving_name=balancer.serving_name,
                route="reasoning" if instance == "gpt-oss-120b" else "efficient",
                instance=instance,
                model=inst.model,
                status_code=200,
                latency_ms=900.0,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=(
                    Decimal(prompt) * inst.input_price_per_million
                    + Decimal(completion) * inst.output_price_per_million
                )
                / 1_000_000,
                decision_reason="classified",
                attempts=1,
            )
        )

    for back in range(47, 0, -1):
        at = last - back * HOUR + timedelta(minutes=10)
        for n in range(3):
            add(at + timedelta(minutes=9 * n), desk, "qwen-cheap-a", 900, 300, "support-chat")
        add(at + timedelta(minutes=5), desk, "gpt-oss-120b", 2500, 700, "triage")
        add(at + timedelta(minutes=20), batch, "gpt-oss-120b", 3000, 600, "summaries")
    for n in range(80):  # the runaway batch, in the last complete hour
        add(last + timedelta(seconds=40 * n), batch, "gpt-oss-120b", 21000, 4200, "summaries")
    now = timezone.now()
    for n in range(6):
        add(now - timedelta(minutes=5 + 7 * n), desk, "qwen-cheap-a", 800, 250, "support-chat")
    UsageEvent.objects.bulk_create(events)


def test_an_operator_budgets_a_team_and_reads_spend_by_team_and_use_case(ui) -> None:
    page = ui.page
    ui.login()

    # Two teams, made on the Teams page.
    page.get_by_role("link", name="Teams").first.click()
    expect(page.get_by_role("heading", name="Teams", level=1)).to_be_visible()
    for name, description in (("support", "Help desk"), ("research", "Nightly summaries")):
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_label("Description").fill(description)
        ui.submit("Create team")
    expect(page.get_by_test_id("team-row")).to_have_count(2)
    support, research = Team.objects.get(name="support"), Team.objects.get(name="research")
    seed_usage(support, research)
    rollup_usage()
    detect_anomalies()  # the hourly job
    month = UsageHourly.objects.filter(
        team_id=support.pk, hour__gte=period_start("monthly", timezone.now())
    ).aggregate(cost=Sum("cost_usd"))["cost"] or Decimal(0)
    limit = (month / Decimal("0.85")).quantize(Decimal("0.0001"), rounding=ROUND_UP)

    # A monthly budget for support, warning at 80%, added on the Budgets page.
    page.get_by_role("link", name="Budgets").first.click()
    page.get_by_label("Budget of").select_option(label="support")
    page.get_by_label("Period").select_option("monthly")
    page.get_by_label("Limit (USD)").fill(str(limit))
    page.get_by_label("Warn at (% of the limit)").fill("80")
    page.get_by_label("Refuse (429 insufficient_quota)").check()
    ui.submit("Add budget")
    expect(page.get_by_test_id("budget-row")).to_have_count(1)
    expect(page.get_by_test_id("budget-row")).to_contain_text("warning")
    ui.shot("budgets")

    page.get_by_role("link", name="Usage").first.click()
    expect(page.get_by_role("heading", name="Usage and cost")).to_be_visible()
    expect(page.get_by_test_id("budget-alert")).to_contain_text("Budget warning")
    expect(page.get_by_test_id("budget-alert")).to_contain_text("team support")
    anomalies = page.get_by_test_id("anomaly-row")
    expect(anomalies.filter(has_text="team research")).to_have_count(2)  # spend and requests
    expect(page.get_by_test_id("chart-anomaly")).to_have_count(1)
    teams = page.get_by_test_id("breakdown-team").locator("tbody tr")
    expect(teams.first).to_contain_text("research")
    expect(teams.nth(1)).to_contain_text("support")
    use_cases = page.get_by_test_id("breakdown-use-case").locator("tbody tr")
    expect(use_cases).to_have_count(3)
    expect(use_cases.first).to_contain_text("summaries")
    ui.shot("usage-budgets")
