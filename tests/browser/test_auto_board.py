"""A goal name's live board against the real gateway (uvicorn serving /v1 and the pages, with
Redis): requests sent to `auto-cheap` and `auto` with no balancer enter the lane of the model
they chose within a second, and a failover is drawn from the chosen model's lane to the next one
when the chosen instance is switched down."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tests.browser.conftest import LIVE_FEED, PASSWORD, UI, _new_ui
from tests.factories import make_api_key, make_instance
from tests.live_server import LiveGateway

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module", autouse=True)
def _collected_static() -> None:
    """The uvicorn process serves /static/ from STATIC_ROOT (servestatic), as in production."""
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture(scope="module")
def gateway(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveGateway]:
    server = LiveGateway(extra_env={**LIVE_FEED, "GATEWAY_BOARD_STATE_SECONDS": "0.3"})
    yield server
    server.stop()


class GoalBoard:
    def __init__(self, gateway: LiveGateway, tab: UI, secret: str, instances: dict[str, Any]):
        self.gateway, self.tab, self.page = gateway, tab, tab.page
        self.secret, self.instances = secret, instances

    def open(self, goal: str) -> None:
        from playwright.sync_api import expect

        self.tab.go(f"/auto/{goal}/board/")
        expect(self.page.get_by_test_id("feed-status")).to_have_text("Live.")

    def call(self, goal: str) -> httpx.Response:
        response = httpx.post(
            self.gateway.v1 + "/chat/completions",
            timeout=10,
            headers={"Authorization": f"Bearer {self.secret}"},
            json={"model": goal, "messages": [{"role": "user", "content": "Say hello."}]},
        )
        assert response.status_code == 200, response.text
        return response

    def lane(self, model: str) -> Any:
        return self.page.get_by_test_id(f"lane-{model}")

    def chip(self, model: str, request_id: str, kind: str = "") -> Any:
        return self.lane(model).locator(
            f'.req{"." + kind if kind else ""}[data-request-id="{request_id}"]'
        )

    def switch(self, name: str, *, down: bool) -> None:
        instance = self.instances[name]
        instance.options = {"down": True} if down else {}
        instance.save()
        self.gateway.wait_for_config()


def _goal_board(browser: Any, gateway: LiveGateway, operator: Any) -> Iterator[GoalBoard]:
    # The board counts every request of the goal name in the last 15 minutes. In the whole suite an
    # earlier test's usage writer (a thread with its own connection) committed one more auto-cheap
    # row after that test rolled back: the board read 4 requests for the 3 sent. Start from none.
    from gateway.models import UsageEvent, UsageHourly, UsageRollupState

    for model in (UsageEvent, UsageHourly, UsageRollupState):
        model.objects.all().delete()
    instances = {
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
            quality_tier=5,
        ),
    }
    _, secret = make_api_key()
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    operator.password = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    operator.save(update_fields=["password"])
    gateway.wait_for_config()
    context, tab = _new_ui(browser, SimpleNamespace(url=gateway.base_url), width=1366, height=900)
    tab.login()
    yield GoalBoard(gateway, tab, secret, instances)
    context.close()
    tab.problems.check()


@pytest.fixture
def goal_board(
    browser: Any, gateway: LiveGateway, transactional_db: Any, operator: Any
) -> Iterator[GoalBoard]:
    yield from _goal_board(browser, gateway, operator)


def test_goal_name_requests_enter_the_chosen_models_lane_and_a_failover_is_drawn(
    goal_board: GoalBoard,
) -> None:
    from playwright.sync_api import expect

    board, page = goal_board, goal_board.page
    models = {"sim-cheap": "sim-fast-1", "sim-large": "sim-large-2"}

    # auto-cheap: the cheapest model that can serve, every time.
    board.open("auto-cheap")
    expect(board.lane("sim-fast-1").get_by_test_id("chosen")).to_have_text("0")
    for _ in range(3):
        response = board.call("auto-cheap")
        assert response.headers["x-balancer-decision"] == "auto:cost"
        assert response.headers["x-balancer-instance"] == "sim-cheap"
        expect(board.chip("sim-fast-1", response.headers["x-request-id"], "ok")).to_be_visible(
            timeout=1000
        )
    expect(board.lane("sim-fast-1").get_by_test_id("chosen")).to_have_text("3", timeout=5000)
    expect(page.get_by_test_id("requests-total")).to_have_text("3")
    expect(page.get_by_test_id("spend-today")).not_to_have_text("$0.00")
    expect(page.get_by_test_id("last-request")).to_contain_text("auto: cost")
    expect(page.get_by_test_id("board-events").locator("tr")).to_have_count(3)

    # auto (balanced) on its own board: the request lands in the lane of whichever model served.
    board.open("auto")
    response = board.call("auto")
    assert response.headers["x-balancer-decision"] == "auto:balanced"
    chosen = models[response.headers["x-balancer-instance"]]
    expect(board.chip(chosen, response.headers["x-request-id"], "ok")).to_be_visible(timeout=1000)
    expect(page.get_by_test_id("board-events").locator("tr").first).to_contain_text(chosen)
    # auto-cheap's requests are not on auto's board.
    expect(page.get_by_test_id("board-events").locator("tr")).to_have_count(1)

    # The chosen instance switched down: auto-cheap fails over down its ranking, drawn lane to lane.
    board.open("auto-cheap")
    board.switch("cheap", down=True)
    for _ in range(2):
        response = board.call("auto-cheap")
        assert response.headers["x-balancer-instance"] == "sim-large"
        assert response.headers["x-balancer-attempts"] == "2"
        request_id = response.headers["x-request-id"]
        expect(board.chip("sim-fast-1", request_id, "failed")).to_be_visible(timeout=1000)
        expect(board.chip("sim-fast-1", request_id).get_by_test_id("failover")).to_have_text(
            "↓ sim-large-2"
        )
        expect(board.chip("sim-large-2", request_id, "ok")).to_be_visible(timeout=1000)
    expect(page.get_by_test_id("board-events").locator("tr").first).to_contain_text(
        "fallback after sim-cheap connection refused"
    )
    expect(board.lane("sim-large-2").get_by_test_id("failed-over")).to_have_text("2", timeout=5000)
    expect(page.get_by_test_id("failed-over-total")).to_have_text("2")
    expect(board.lane("sim-fast-1").get_by_test_id("lane-state")).to_have_text(
        "degraded", timeout=5000
    )  # simulated down: the member is red, the lane degraded until its circuit opens
    board.tab.shot("board-auto")
    board.switch("cheap", down=False)


@pytest.fixture(scope="module")
def embedded_gateway(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveGateway]:
    server = LiveGateway(
        extra_env={"GATEWAY_HTTPS": "0", "REDIS_URL": "", "GATEWAY_BOARD_STATE_SECONDS": "0.3"}
    )
    yield server
    server.stop()


def test_without_redis_a_goal_names_board_still_moves_live(
    browser: Any, embedded_gateway: LiveGateway, transactional_db: Any, operator: Any
) -> None:
    """`make run`: one process, no Redis; the feed hands a goal name's batch to its boards."""
    from playwright.sync_api import expect

    opened = _goal_board(browser, embedded_gateway, operator)
    board = next(opened)
    board.open("auto-cheap")
    response = board.call("auto-cheap")
    assert response.headers["x-balancer-instance"] == "sim-cheap"
    expect(board.chip("sim-fast-1", response.headers["x-request-id"], "ok")).to_be_visible(
        timeout=1000
    )
    next(opened, None)  # closes the tab and checks its console
