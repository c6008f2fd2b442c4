"""Teams and use cases: a key's team and tag, a request's own tag (header or metadata), and
spend broken down by both on the usage page, its CSV and /api/usage/."""

from __future__ import annotations

import csv
import io
import time
from decimal import Decimal

import openai
import pytest

from gateway.models import UsageEvent
from gateway.services import team_create
from tests.factories import make_api_key, make_balancer

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "hello"}]
PRICE = "1000.00"  # 11 + 7 tokens from the fake upstream: $0.018 a request
PER_REQUEST = Decimal("0.018")


def wait_events(count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while UsageEvent.objects.filter(serving_name="tu").count() < count:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_spend_is_broken_down_by_team_and_use_case(setup, admin_client):
    # A writer thread of an earlier test's gateway may commit after that test's flush.
    from gateway.models import UsageHourly, UsageRollupState

    for model in (UsageEvent, UsageHourly, UsageRollupState):
        model.objects.all().delete()
    inst = setup.instance("tu-model", input_price_per_million=PRICE, output_price_per_million=PRICE)
    make_balancer(
        serving_name="tu",
        routes=[{"name": "m", "intent": "x", "instance": inst, "priority": 1, "is_default": True}],
    )
    support, research = team_create(name="support"), team_create(name="research")
    _, support_secret = make_api_key(team=support, use_case="support-chat")
    _, research_secret = make_api_key(team=research)
    _, loner_secret = make_api_key()
    s, r, n = (
        setup.client(support_secret),
        setup.client(research_secret),
        setup.client(loner_secret),
    )
    triage = {"x-balancer-use-case": "triage"}

    s.chat.completions.create(model="tu", messages=HELLO)  # the key's tag
    s.chat.completions.create(model="tu", messages=HELLO, extra_headers=triage)  # the header's
    r.chat.completions.create(model="tu", messages=HELLO, metadata={"use_case": "summaries"})
    r.chat.completions.create(  # both: the header wins
        model="tu", messages=HELLO, metadata={"use_case": "summaries"}, extra_headers=triage
    )
    n.chat.completions.create(model="tu", messages=HELLO)  # no team, no tag
    with pytest.raises(openai.BadRequestError) as bad_header:
        n.chat.completions.create(
            model="tu", messages=HELLO, extra_headers={"x-balancer-use-case": "two words"}
        )
    assert bad_header.value.param == "x-balancer-use-case"
    with pytest.raises(openai.BadRequestError) as bad_metadata:
        n.chat.completions.create(model="tu", messages=HELLO, metadata={"use_case": "-x"})
    assert bad_metadata.value.param == "metadata.use_case"
    assert setup.upstream.count("tu-model") == 5
    wait_events(7)

    # /api/usage/: every row names its team and use case; they sum to the breakdowns.
    rows = admin_client.get("/api/usage/").json()["rows"]
    by_team: dict[str, Decimal] = {}
    by_use_case: dict[str, Decimal] = {}
    for row in rows:
        by_team[row["team"]] = by_team.get(row["team"], Decimal(0)) + Decimal(row["cost_usd"])
        by_use_case[row["use_case"]] = by_use_case.get(row["use_case"], Decimal(0)) + Decimal(
            row["cost_usd"]
        )
    assert by_team == {"support": 2 * PER_REQUEST, "research": 2 * PER_REQUEST, "": PER_REQUEST}
    assert by_use_case == {
        "triage": 2 * PER_REQUEST,
        "support-chat": PER_REQUEST,
        "summaries": PER_REQUEST,
        "": PER_REQUEST,
    }

    # The CSV has the same two columns.
    export = admin_client.get("/usage/export.csv")
    table = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert {(row["team"], row["use_case"]) for row in table} == {
        ("support", "support-chat"),
        ("support", "triage"),
        ("research", "summaries"),
        ("research", "triage"),
        ("", ""),
    }

    # The page: a breakdown by team and one by use case, costliest first.
    page = admin_client.get("/usage/").content.decode()
    team_section = page.split('data-testid="breakdown-team"')[1].split("</section>")[0]
    assert "support" in team_section and "research" in team_section and "No team" in team_section
    use_case_section = page.split('data-testid="breakdown-use-case"')[1].split("</section>")[0]
    assert use_case_section.index("triage") < use_case_section.index("summaries")
    assert "No use case" in use_case_section
