"""Reserved capacity: a paid hour spread over its requests by tokens, exact to the cent, and
shown."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from gateway.models import CapacityHour, UsageEvent, UsageHourly
from gateway.reporting.capacity import MILLION, capacity_report, spread
from gateway.reporting.rollups import floor_hour, rollup_usage
from targetgroups.models import Instance
from tests.factories import make_balancer, make_instance

pytestmark = pytest.mark.django_db

_ids = itertools.count(1)


def event(at: Any, instance: str, prompt: int, completion: int, **fields: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "created_at": at,
        "request_id": f"cap-{next(_ids)}",
        "endpoint": "chat",
        "serving_name": "dedicated",
        "route": "main",
        "instance": instance,
        "model": "m",
        "status_code": 200,
        "latency_ms": 1000.0,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": Decimal(0),
    }
    values.update(fields)
    return UsageEvent.objects.create(**values)


@pytest.fixture
def hour() -> Any:
    """The start of a closed hour: two hours before the current one."""
    UsageEvent.objects.all().delete()
    UsageHourly.objects.all().delete()
    return floor_hour(timezone.now()) - timedelta(hours=2)


def reserved(since: Any, **fields: Any) -> Instance:
    instance = make_instance(
        **{
            "pricing": "capacity",
            "capacity_price_per_hour": Decimal("3.70"),
            "capacity": 2,
            "capacity_unit": "concurrent_requests",
            **fields,
        }
    )
    Instance.objects.filter(pk=instance.pk).update(capacity_since=since)
    instance.refresh_from_db()
    return instance


def test_spread_adds_up_to_the_price_exactly() -> None:
    # 3.70 over 1,000 + 2,000 + 333 tokens: each share rounded down to 1e-10, the one unit
    # left over going to the largest remainder (the 333-token request's .9667).
    assert spread(Decimal("3.70"), [1000, 2000, 333]) == [
        Decimal("1.1101110111"),
        Decimal("2.2202220222"),
        Decimal("0.3696669667"),
    ]
    assert spread(Decimal("1"), [1, 1, 1]) == [
        Decimal("0.3333333334"),
        Decimal("0.3333333333"),
        Decimal("0.3333333333"),
    ]
    assert spread(Decimal("5"), [0, 0]) == [Decimal(0), Decimal(0)]


def test_a_capacity_hour_is_spread_over_its_requests_by_tokens_exact_to_the_cent(hour) -> None:
    dedicated = reserved(hour + timedelta(minutes=20))
    metered = make_instance(input_price_per_million="1", output_price_per_million="2")
    a = event(hour + timedelta(minutes=25), dedicated.instance_id, 700, 300, latency_ms=1200.0)
    b = event(hour + timedelta(minutes=40), dedicated.instance_id, 1500, 500, latency_ms=2400.0)
    c = event(hour + timedelta(minutes=59), dedicated.instance_id, 300, 33, latency_ms=600.0)
    hit = event(hour + timedelta(minutes=30), dedicated.instance_id, 500, 500, cache_hit=True)
    other = event(
        hour + timedelta(minutes=30), metered.instance_id, 1000, 1000, cost_usd=Decimal("0.003")
    )
    # A request in the current hour: not spread until that hour closes.
    current = event(floor_hour(timezone.now()), dedicated.instance_id, 100, 100)

    rollup_usage()

    costs = {e.pk: e.cost_usd for e in UsageEvent.objects.all()}
    assert costs[a.pk] == Decimal("1.1101110111")
    assert costs[b.pk] == Decimal("2.2202220222")
    assert costs[c.pk] == Decimal("0.3696669667")
    assert sum(costs[e.pk] for e in (a, b, c)) == Decimal("3.70")
    # To the cent, request by request: $1.11 + $2.22 + $0.37 = $3.70.
    assert [round(costs[e.pk], 2) for e in (a, b, c)] == [
        Decimal("1.11"),
        Decimal("2.22"),
        Decimal("0.37"),
    ]
    assert costs[hit.pk] == 0 and costs[other.pk] == Decimal("0.003") and costs[current.pk] == 0

    # The rollups carry the spread cost: the instance's hour costs exactly its price.
    rolled = UsageHourly.objects.filter(instance=dedicated.instance_id, hour=hour)
    assert sum(r.cost_usd for r in rolled) == Decimal("3.70")

    # Two closed hours paid since 20 past the first: the first served 3,333 tokens, the second none.
    hours = list(CapacityHour.objects.filter(instance=dedicated.instance_id).order_by("hour"))
    assert [(h.hour, h.requests, h.tokens, h.spread_usd) for h in hours] == [
        (hour, 3, 3333, Decimal("3.70")),
        (hour + timedelta(hours=1), 0, 0, Decimal(0)),
    ]
    assert hours[0].busy_seconds == pytest.approx(4.2)

    report = capacity_report(start=hour - timedelta(hours=1), end=hour + timedelta(hours=3))
    [row] = report.rows
    assert (row.instance, row.hours, row.requests, row.tokens) == (
        dedicated.instance_id,
        2,
        3,
        3333,
    )
    assert row.cost == Decimal("7.40") and row.spread == Decimal("3.70")
    assert row.idle_cost == Decimal("3.70")
    # Concurrency: 4.2 busy seconds over 2 requests x 7,200 seconds paid.
    assert row.utilisation == pytest.approx(4.2 / 14_400)
    assert row.effective_price_per_million == Decimal("7.40") / 3333 * MILLION
    assert round(row.effective_price_per_million, 2) == Decimal("2220.22")


def test_a_second_run_changes_nothing_and_a_late_event_respreads_its_hour(hour) -> None:
    dedicated = reserved(hour)
    a = event(hour + timedelta(minutes=5), dedicated.instance_id, 1000, 0)
    rollup_usage()
    assert UsageEvent.objects.get(pk=a.pk).cost_usd == Decimal("3.70")
    rollup_usage()
    assert CapacityHour.objects.filter(instance=dedicated.instance_id).count() == 2

    # Written late (the usage buffer held it through an outage): a new id in an old hour.
    late = event(hour + timedelta(minutes=50), dedicated.instance_id, 3000, 0)
    rollup_usage()
    assert UsageEvent.objects.get(pk=a.pk).cost_usd == Decimal("0.925")
    assert UsageEvent.objects.get(pk=late.pk).cost_usd == Decimal("2.775")
    rolled = UsageHourly.objects.filter(instance=dedicated.instance_id, hour=hour)
    assert sum(r.cost_usd for r in rolled) == Decimal("3.70")
    assert CapacityHour.objects.get(instance=dedicated.instance_id, hour=hour).tokens == 4000


def test_a_throughput_capacity_is_used_by_the_tokens_it_served(hour) -> None:
    dedicated = reserved(
        hour, capacity_unit="tokens_per_second", capacity=10, capacity_price_per_hour="1.80"
    )
    event(hour + timedelta(minutes=1), dedicated.instance_id, 9000, 9000)
    rollup_usage(now=hour + timedelta(hours=1, minutes=1))  # only the first hour has closed
    [row] = capacity_report(start=hour, end=hour + timedelta(hours=1)).rows
    assert row.hours == 1 and row.cost == Decimal("1.80")
    assert row.utilisation == pytest.approx(18_000 / 36_000)  # 10 tokens/s x 3,600 s
    assert row.effective_price_per_million == Decimal(100)  # $1.80 for 18,000 tokens


def test_switching_back_to_per_token_stops_the_paid_hours() -> None:
    instance = make_instance(pricing="capacity", capacity_price_per_hour="2", capacity=1)
    assert instance.capacity_since is not None
    instance.pricing = "per_token"
    instance.save()
    instance.refresh_from_db()
    assert instance.capacity_since is None


def test_reserved_capacity_needs_its_size() -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as err:
        make_instance(pricing="capacity", capacity_price_per_hour="2", capacity=0)
    assert "capacity" in err.value.message_dict


def test_usage_page_api_and_csv_show_utilisation_and_effective_price(admin_client, hour) -> None:
    dedicated = reserved(hour, model="llama-dedicated")
    balancer = make_balancer(
        routes=[
            {
                "name": "main",
                "intent": "All.",
                "instance": dedicated,
                "priority": 1,
                "is_default": True,
            }
        ]
    )
    event(
        hour + timedelta(minutes=5),
        dedicated.instance_id,
        2000,
        1000,
        balancer=balancer,
        serving_name=balancer.serving_name,
        latency_ms=1_440_000.0,  # a 24-minute batch request: 1,440 busy seconds
    )

    data = admin_client.get("/api/usage/").json()
    [capacity] = data["capacity"]
    assert capacity["instance"] == dedicated.instance_id
    assert capacity["hours"] == 2
    assert Decimal(capacity["cost_usd"]) == Decimal("7.40")
    assert Decimal(capacity["spread_usd"]) == Decimal("3.70")
    assert Decimal(capacity["idle_cost_usd"]) == Decimal("3.70")
    assert capacity["tokens"] == 3000
    assert capacity["utilisation"] == pytest.approx(0.1)  # 1,440 s of 2 x 7,200 s
    assert Decimal(capacity["effective_price_per_million_usd"]) == Decimal("2466.6666666667")
    assert Decimal(data["totals"]["cost_usd"]) == Decimal("3.70")

    html = admin_client.get("/usage/").content.decode()
    assert 'data-testid="usage-capacity"' in html
    assert "$2,466.67" in html  # effective $ per 1M tokens
    assert "$7.40" in html and "10.0%" in html  # the two paid hours; their utilisation

    response = admin_client.get("/usage/export.csv?table=capacity")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["instance"], r["hours"], r["cost_usd"], r["utilisation"]) for r in rows] == [
        (dedicated.instance_id, "2", "7.4000000000", "0.100000")
    ]
    assert rows[0]["effective_price_per_million_usd"] == "2466.666667"

    assert admin_client.get("/usage/export.csv?table=nope").status_code == 400


def test_the_instance_form_and_api_edit_the_pricing(admin_client) -> None:
    instance = make_instance()
    response = admin_client.patch(
        f"/api/instances/{instance.instance_id}/",
        {
            "pricing": "capacity",
            "capacity_price_per_hour": "4.50",
            "capacity": 8,
            "capacity_unit": "concurrent_requests",
        },
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["pricing"] == "capacity" and body["capacity"] == 8
    assert body["capacity_since"] is not None
    refused = admin_client.patch(
        f"/api/instances/{instance.instance_id}/",
        {"capacity": 0},
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert "capacity" in refused.json()
    instance.refresh_from_db()
    assert instance.capacity == 8

    page = admin_client.get(f"/instances/{instance.instance_id}/").content.decode()
    assert 'name="capacity_price_per_hour"' in page and 'data-testid="pricing"' in page


def test_the_instance_page_switches_an_instance_to_reserved_capacity(admin_client) -> None:
    instance = make_instance(instance_id="dedicated-form", model="llama-70b")
    form = {
        "instance_id": "dedicated-form",
        "display_name": "Dedicated",
        "provider": "simulator",
        "base_url": "",
        "model": "llama-70b",
        "api_key": "",
        "workload_kind": "chat",
        "input_price_per_million": "0",
        "output_price_per_million": "0",
        "pricing": "capacity",
        "capacity_price_per_hour": "4.00",
        "capacity": "0",
        "capacity_unit": "tokens_per_second",
        "quality_tier": "3",
        "connect_timeout": "5",
        "first_byte_timeout": "60",
        "request_timeout": "300",
        "enabled": "on",
    }
    refused = admin_client.post("/instances/dedicated-form/", form)
    assert (
        refused.status_code == 200
        and "Reserved capacity needs its size" in refused.content.decode()
    )
    instance.refresh_from_db()
    assert instance.pricing == "per_token"

    assert (
        admin_client.post("/instances/dedicated-form/", {**form, "capacity": "250"}).status_code
        == 302
    )
    instance.refresh_from_db()
    assert (instance.pricing, instance.capacity, instance.capacity_unit) == (
        "capacity",
        250,
        "tokens_per_second",
    )
    assert instance.capacity_price_per_hour == Decimal("4") and instance.capacity_since is not None
    listing = admin_client.get("/instances/").content.decode()
    assert "$4.00/h · 250 tok/s" in listing
