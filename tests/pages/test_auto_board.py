"""A goal name's live board (/auto/<goal>/board/): a lane per model it may choose, the requests it
sent to each, failovers and spend, from the usage events; its lanes payload for the stream and the
fallback poll; and the links to it from the balancer list and the playground."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from django.utils import timezone

from gateway.models import UsageEvent
from tests.factories import make_balancer, make_instance

pytestmark = pytest.mark.django_db

FAILOVER_LOG = [
    {"route": "auto", "instance": "sim-cheap", "outcome": "connect", "status": None, "ms": 1.0},
    {"route": "auto", "instance": "sim-large", "outcome": "ok", "status": 200, "ms": 9.0},
]


def served(goal: str, instance: str, model: str, *, minutes_ago: float = 1, **fields) -> None:
    values = {
        "created_at": timezone.now() - timedelta(minutes=minutes_ago),
        "request_id": f"req-{goal}-{instance}-{minutes_ago}",
        "endpoint": "chat",
        "serving_name": goal,
        "route": "auto",
        "instance": instance,
        "model": model,
        "status_code": 200,
        "latency_ms": 10.0,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_usd": Decimal("0.0001"),
        "decision_reason": "auto:cost",
        "attempts": 1,
        "attempt_log": [
            {"route": "auto", "instance": instance, "outcome": "ok", "status": 200, "ms": 9.0}
        ],
    }
    values.update(fields)
    UsageEvent.objects.create(**values)


@pytest.fixture
def instances():
    UsageEvent.objects.all().delete()
    return {
        "cheap": make_instance(
            instance_id="sim-cheap",
            model="sim-fast-1",
            input_price_per_million="0.20",
            output_price_per_million="0.60",
        ),
        "large": make_instance(
            instance_id="sim-large",
            model="sim-large-2",
            input_price_per_million="3.00",
            output_price_per_million="15.00",
        ),
        "free": make_instance(
            instance_id="sim-free",
            model="sim-free-0",
            input_price_per_million="0",
            output_price_per_million="0",
        ),
        "off": make_instance(instance_id="sim-off", model="sim-off-9", enabled=False),
    }


def test_the_board_has_a_lane_per_model_with_the_requests_it_chose(admin_client, instances):
    served("auto-cheap", "sim-cheap", "sim-fast-1", minutes_ago=1)
    served("auto-cheap", "sim-cheap", "sim-fast-1", minutes_ago=2)
    served(
        "auto-cheap",
        "sim-large",
        "sim-large-2",
        minutes_ago=3,
        attempts=2,
        attempt_log=FAILOVER_LOG,
        cost_usd=Decimal("0.002"),
    )
    served("auto-cheap", "sim-cheap", "sim-fast-1", minutes_ago=20)  # outside the live window
    served("auto", "sim-large", "sim-large-2")  # another goal name
    published = make_balancer(
        name="cheap-auto",
        serving_name="cheap-auto",
        routing_mode="auto",
        routes=[
            {
                "name": "main",
                "intent": "All.",
                "instance": instances["cheap"],
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    served("auto-cheap", "sim-cheap", "sim-fast-1", balancer=published)  # a balancer's request

    page = admin_client.get("/auto/auto-cheap/board/")
    assert page.status_code == 200
    board = page.context["board"]
    assert [(lane.model, lane.instance_ids) for lane in board.lanes] == [
        ("sim-fast-1", "sim-cheap"),
        ("sim-free-0", "sim-free"),
        ("sim-large-2", "sim-large"),
    ]  # every enabled instance's model, in name order; the disabled one is not offered
    chosen = {lane.model: (lane.figures.requests, lane.figures.failed_over) for lane in board.lanes}
    assert chosen == {"sim-fast-1": (2, 0), "sim-free-0": (0, 0), "sim-large-2": (1, 1)}
    assert (board.requests, board.failed_over, board.preference) == (3, 1, "cost")
    assert board.lanes[2].figures.cost == Decimal("0.002")
    assert board.month == Decimal("0.0023")  # the 20-minute-old one too, not the balancer's
    html = page.content.decode()
    assert 'data-lane-by="instance"' in html and 'data-instances="sim-large"' in html
    assert 'data-events-url="/auto/auto-cheap/board/events/"' in html
    assert 'data-testid="lane-sim-fast-1"' in html
    rows = html.split('data-testid="board-events"')[1]
    assert rows.count("<tr data-request-id=") == 4
    assert "fallback after sim-cheap connection refused" in rows


def test_the_lanes_payload_names_each_lanes_instances_and_figures(admin_client, instances):
    served("auto-best", "sim-large", "sim-large-2")
    payload = orjson.loads(admin_client.get("/auto/auto-best/board/?lanes=1").content)
    assert payload["routes"] == ["sim-fast-1", "sim-free-0", "sim-large-2"]
    large = payload["lanes"]["sim-large-2"]
    assert large["state"] == "active" and large["instances"] == "sim-large"
    assert 'data-testid="chosen">1<' in large["html"]
    assert 'data-testid="requests-total">1<' in payload["summary"]


def test_auto_free_offers_the_zero_priced_models_and_a_model_that_served_stays(
    admin_client, instances
):
    served("auto-free", "sim-off", "sim-off-9")  # served, then its instance was disabled
    board = admin_client.get("/auto/auto-free/board/").context["board"]
    assert [(lane.model, lane.lane_state()[0]) for lane in board.lanes] == [
        ("sim-free-0", "active"),
        ("sim-off-9", "disabled"),
    ]
    assert board.status == ("Serving", "ok")


def test_an_unknown_goal_name_has_no_board(admin_client, instances):
    assert admin_client.get("/auto/gpt-4o/board/").status_code == 404
    assert admin_client.get("/auto/gpt-4o/board/events/").status_code == 404


def test_the_list_and_the_playground_link_to_the_goal_names_board(admin_client, instances):
    served("auto-cheap", "sim-cheap", "sim-fast-1")
    html = admin_client.get("/balancers/").content.decode()
    row = html.split('data-testid="auto-choice-auto-cheap"')[1].split("</tr>")[0]
    assert 'href="/auto/auto-cheap/board/"' in row
    # Every goal name's board, served or not yet.
    links = html.split('data-testid="goal-boards"')[1].split("</p>")[0]
    assert all(f'href="/auto/{goal}/board/"' in links for goal in ("auto", "auto-free"))
    result = admin_client.post(
        "/playground/auto/", {"goal": "auto-cheap", "prompt": "Hi"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert 'data-testid="playground-auto-board"' in result
    assert 'href="/auto/auto-cheap/board/"' in result
