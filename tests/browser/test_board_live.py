"""The live board against the real gateway (uvicorn serving /v1 and the pages): requests drawn as
they are served, failovers, lane states and figures moving, without a reload.

pytest-django's live server is WSGI and cannot stream; these tests drive a LiveGateway instead.
"""

from __future__ import annotations

import collections
import http.client
import re
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest

from tests.browser.conftest import LIVE_FEED, PASSWORD, UI, _new_ui
from tests.factories import make_api_key, make_balancer, make_instance
from tests.live_server import LiveGateway

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module", autouse=True)
def _collected_static() -> None:
    """The uvicorn process serves /static/ from STATIC_ROOT (servestatic), as in production."""
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture(scope="module")
def redis_gateway(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveGateway]:
    server = LiveGateway(extra_env={**LIVE_FEED, "GATEWAY_BOARD_STATE_SECONDS": "0.3"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def embedded_gateway(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveGateway]:
    server = LiveGateway(
        extra_env={"GATEWAY_HTTPS": "0", "REDIS_URL": "", "GATEWAY_BOARD_STATE_SECONDS": "0.3"}
    )
    yield server
    server.stop()


class Board:
    def __init__(self, gateway: LiveGateway, tab: UI, secret: str, primary: Any) -> None:
        self.gateway, self.tab, self.page, self.secret, self.primary = (
            gateway,
            tab,
            tab.page,
            secret,
            primary,
        )

    def call(self, text: str = "Say hello to the board.") -> httpx.Response:
        response = httpx.post(
            self.gateway.v1 + "/chat/completions",
            timeout=10,
            headers={"Authorization": f"Bearer {self.secret}"},
            json={"model": "board-test", "messages": [{"role": "user", "content": text}]},
        )
        assert response.status_code == 200, response.text
        return response

    def lane(self, route: str) -> Any:
        return self.page.get_by_test_id(f"lane-{route}")

    def chip(self, route: str, request_id: str, kind: str = "") -> Any:
        """The request's mark on a lane; `kind`: "ok" (answered there), "failed" (an attempt failed
        there)."""
        return self.lane(route).locator(
            f'.req{"." + kind if kind else ""}[data-request-id="{request_id}"]'
        )

    def switch_primary(self, *, down: bool) -> None:
        self.primary.options = {"down": True} if down else {}
        self.primary.save()
        self.gateway.wait_for_config()


def _open_board(browser: Any, gateway: LiveGateway, operator: Any) -> Iterator[Board]:
    from playwright.sync_api import expect

    primary = make_instance(
        instance_id="sim-primary",
        model="sim-fast-1",
        input_price_per_million="0.20",
        output_price_per_million="0.60",
    )
    backup = make_instance(
        instance_id="sim-backup",
        model="sim-large-2",
        input_price_per_million="3.00",
        output_price_per_million="15.00",
    )
    make_balancer(
        name="board-test",
        serving_name="board-test",
        routing_mode="ordered",
        routes=[
            {
                "name": "primary",
                "intent": "Everything, cheaply.",
                "instance": primary,
                "priority": 1,
            },
            {
                "name": "fallback",
                "intent": "Behind the primary.",
                "instance": backup,
                "priority": 2,
                "is_default": True,
            },
        ],
    )
    _, secret = make_api_key()
    # The uvicorn process keeps the production hashers (the tests' MD5 is set in this process only).
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    operator.password = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    operator.save(update_fields=["password"])
    gateway.wait_for_config()
    context, tab = _new_ui(browser, SimpleNamespace(url=gateway.base_url), width=1366, height=900)
    tab.login()
    tab.go("/balancers/board-test/board/")
    expect(tab.page.get_by_test_id("feed-status")).to_have_text("Live.")
    yield Board(gateway, tab, secret, primary)
    context.close()
    tab.problems.check()


@pytest.fixture
def board(
    browser: Any, redis_gateway: LiveGateway, transactional_db: Any, operator: Any
) -> Iterator[Board]:
    yield from _open_board(browser, redis_gateway, operator)


@pytest.fixture
def embedded_board(
    browser: Any, embedded_gateway: LiveGateway, transactional_db: Any, operator: Any
) -> Iterator[Board]:
    yield from _open_board(browser, embedded_gateway, operator)


def test_each_request_enters_its_lane_within_a_second_and_the_figures_move(board: Board) -> None:
    from playwright.sync_api import expect

    from balancers.models import Balancer

    # Prompt logging on: the request node shows each request's first characters, as text.
    balancer = Balancer.objects.get(name="board-test")
    balancer.log_prompts = True
    balancer.save()  # the config version is bumped on commit
    board.gateway.wait_for_config()
    board.page.reload()
    expect(board.page.get_by_test_id("feed-status")).to_have_text("Live.")
    lane = board.lane("primary")
    expect(lane.get_by_test_id("rpm")).to_have_text("0.0")
    expect(board.page.get_by_test_id("saved-month")).to_have_text("$0.00")
    prompts = [
        "Where is my parcel? It left the depot on Monday morning and the tracking page is still "
        "blank.",
        "<b>Refund</b> order 4417, please: the blender arrived cracked and the box was soaked "
        "through.",
        "Can I change the delivery address of an order that has already shipped to a friend's "
        "flat?",
    ]
    for text in prompts:
        response = board.call(text)
        assert response.headers["x-balancer-route"] == "primary"
        expect(board.chip("primary", response.headers["x-request-id"])).to_be_visible(timeout=1000)
        # The first 80 characters, markup shown as typed (never parsed).
        expect(board.page.get_by_test_id("last-prompt")).to_have_text(text[:80].rstrip() + "…")
    expect(board.page.get_by_test_id("last-prompt").locator("b")).to_have_count(0)
    expect(board.page.get_by_test_id("last-request")).to_contain_text("ordered: primary first")
    expect(lane.get_by_test_id("rpm")).to_have_text("0.2", timeout=5000)  # 3 requests / 15 minutes
    expect(lane.get_by_test_id("tokens")).not_to_have_text("0")
    expect(board.page.get_by_test_id("requests-total")).to_have_text("3")
    expect(board.page.get_by_test_id("spend-today")).not_to_have_text("$0.00")
    # Served by the cheap primary: the saving against all on the priciest route (fallback) moves
    # too.
    expect(board.page.get_by_test_id("saved-month")).not_to_have_text("$0.00")
    expect(board.page.get_by_test_id("board-events").locator("tr")).to_have_count(3)
    board.tab.shot("board-live-traffic")


def test_a_failover_is_drawn_and_the_lane_goes_unavailable_and_comes_back(board: Board) -> None:
    from playwright.sync_api import expect

    board.call()
    board.switch_primary(down=True)
    ids = []
    for _ in range(3):  # three failures in a row trip the primary's circuit (5 s cooldown)
        response = board.call()
        assert response.headers["x-balancer-route"] == "fallback"
        assert response.headers["x-balancer-attempts"] == "2"
        request_id = response.headers["x-request-id"]
        ids.append(request_id)
        expect(board.chip("primary", request_id, "failed")).to_be_visible(timeout=1000)
        expect(board.chip("primary", request_id).get_by_test_id("failover")).to_have_text(
            "↓ fallback"
        )
        expect(board.chip("fallback", request_id, "ok")).to_be_visible(timeout=1000)
    expect(board.page.get_by_test_id("board-events").locator("tr").first).to_contain_text(
        "fallback after sim-primary connection refused"
    )
    primary = board.lane("primary")
    expect(primary).to_have_attribute("data-available", "false", timeout=2000)
    expect(primary.get_by_test_id("lane-state")).to_contain_text("cooling down")
    # The failed attempts count on the lane that failed: 1 answered, 3 failed and went on.
    expect(primary.get_by_test_id("error-rate")).to_have_text("75%", timeout=3000)
    expect(board.lane("fallback").get_by_test_id("error-rate")).to_have_text("0%")
    board.tab.shot("board-failover")
    board.switch_primary(down=False)
    expect(primary).to_have_attribute(
        "data-available", "true", timeout=8000
    )  # the 5 s cooldown ends
    expect(primary.get_by_test_id("lane-state")).to_have_text("active")
    response = board.call()
    assert response.headers["x-balancer-route"] == "primary"
    expect(board.chip("primary", response.headers["x-request-id"], "ok")).to_be_visible(
        timeout=1000
    )


def test_without_redis_the_board_still_moves_live(embedded_board: Board) -> None:
    from playwright.sync_api import expect

    response = embedded_board.call()
    expect(embedded_board.chip("primary", response.headers["x-request-id"])).to_be_visible(
        timeout=1000
    )


def test_when_the_stream_is_refused_the_board_polls_and_keeps_an_opened_attempt_log(
    board: Board,
) -> None:
    from playwright.sync_api import expect

    page = board.page
    page.route("**/board/events/", lambda route: route.fulfill(status=503, body="no feed"))
    page.reload()
    expect(page.get_by_test_id("feed-status")).to_contain_text("Polling")
    board.switch_primary(down=True)
    response = board.call()
    row = page.locator(f'tr[data-request-id="{response.headers["x-request-id"]}"]')
    expect(row).to_be_visible(timeout=6000)
    row.locator("summary").click()
    time.sleep(3.5)  # at least one more poll
    expect(row.locator("details.attempt-log")).to_have_attribute("open", "")
    expect(board.lane("fallback").get_by_test_id("rpm")).not_to_have_text(
        "0.0"
    )  # the failover landed there
    # The refusal this test forced is logged by the browser: not a problem of the page.
    for seen in (board.tab.problems.console, board.tab.problems.server_errors):
        seen[:] = [line for line in seen if "/board/events/" not in line]


def test_an_opened_attempt_log_stays_open_while_pushed_requests_and_lanes_arrive(
    board: Board,
) -> None:
    """Issue 15's "snaps shut at every refresh", on the pushed board: rows are added, never
    redrawn."""
    from playwright.sync_api import expect

    page = board.page
    board.switch_primary(down=True)
    failover = board.call().headers["x-request-id"]
    row = page.locator(f'tr[data-request-id="{failover}"]')
    expect(row).to_be_visible(timeout=2000)
    row.locator("summary").click()
    expect(row.locator("details.attempt-log")).to_have_attribute("open", "")
    board.switch_primary(down=False)
    for _ in range(3):
        response = board.call()
        route, request_id = response.headers["x-balancer-route"], response.headers["x-request-id"]
        expect(board.chip(route, request_id)).to_be_visible(timeout=1000)
    expect(page.get_by_test_id("requests-total")).to_have_text("4", timeout=3000)  # lanes redrawn
    expect(page.get_by_test_id("board-events").locator("tr")).to_have_count(4)
    expect(row.locator("details.attempt-log")).to_have_attribute("open", "")
    expect(row.locator("details.attempt-log li")).to_have_count(2)
    # Drawn as the polled rows are (includes/attempt_log.html): outcome, route → instance, time.
    expect(row.locator("details.attempt-log li").first).to_contain_text("primary → sim-primary")
    expect(row.locator("details.attempt-log li").first).to_contain_text(" ms")
    expect(row.locator("details li .pill.ok")).to_have_count(1)
    # Its time keeps counting instead of saying "now" for ever.
    expect(row.get_by_test_id("when")).to_have_text(re.compile(r"^\d+ s ago$"), timeout=8000)


def test_an_operator_disables_a_route_from_the_board_the_next_request_avoids_it_and_it_is_audited(
    board: Board,
) -> None:
    from playwright.sync_api import expect

    page = board.page
    lane = board.lane("primary")
    lane.get_by_test_id("actions-primary").locator("summary").click()
    lane.get_by_role("button", name="Disable route").click()  # confirmed (the dialog is accepted)
    expect(page.get_by_test_id("board-notice")).to_contain_text(
        "Done: route disabled, route primary"
    )
    expect(lane).to_have_attribute("data-state", "disabled", timeout=2000)
    expect(lane.get_by_test_id("lane-state")).to_have_text("disabled")
    board.gateway.wait_for_config(timeout=1.0)  # every worker routes by the change within a second
    response = board.call()
    assert response.headers["x-balancer-route"] == "fallback"
    assert response.headers["x-balancer-attempts"] == "1"
    expect(board.chip("fallback", response.headers["x-request-id"], "ok")).to_be_visible(
        timeout=1000
    )
    board.tab.go("/balancers/board-test/")
    entry = page.get_by_test_id("audit-entry").first
    expect(entry).to_contain_text("operator")
    expect(entry).to_contain_text("route disabled")
    expect(entry).to_contain_text("route primary")


def test_a_board_refused_while_redis_is_down_goes_live_again_soon_after(
    browser: Any, transactional_db: Any, operator: Any, django_db_setup: Any
) -> None:
    """The stream is refused (503) while the gateway's Redis is down and the board polls; once
    Redis is back the board is live again within a few seconds. Its retries after a refusal
    come at 1, 2, 4 … s (they came every 10 s: back after about 8.5 s here)."""
    from playwright.sync_api import expect

    from tests.fault_servers import own_redis

    with own_redis() as redis:
        gateway = LiveGateway(
            extra_env={
                "GATEWAY_HTTPS": "0",
                "REDIS_URL": redis.url,
                "GATEWAY_BOARD_STATE_SECONDS": "0.3",
            }
        )
        try:
            board = next(_open_board(browser, gateway, operator))
        except BaseException:
            gateway.stop()
            raise
        try:
            redis.kill()
            expect(board.page.get_by_test_id("feed-status")).to_contain_text(
                "Live feed interrupted.", timeout=10_000
            )
            # The browser's own reconnect (2 s) is refused: from here on the board's retries run.
            time.sleep(3.5)
            redis.start()
            expect(board.page.get_by_test_id("feed-status")).to_have_text("Live.", timeout=6_000)
        finally:
            board.page.context.close()
            gateway.stop()


# -- two gateway workers, one board ------------------------------------------------------------


@pytest.fixture(scope="module")
def two_worker_gateway(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveGateway]:
    server = LiveGateway(workers=2, extra_env={**LIVE_FEED, "GATEWAY_BOARD_STATE_SECONDS": "0.3"})
    yield server
    server.stop()


@pytest.fixture
def two_worker_board(
    browser: Any, two_worker_gateway: LiveGateway, transactional_db: Any, operator: Any
) -> Iterator[Board]:
    yield from _open_board(browser, two_worker_gateway, operator)


def call_on_new_connection(board: Board, text: str) -> tuple[dict[str, str], int | None]:
    """One request on a connection of its own (so either worker may accept it): its headers and
    the pid of the worker that served it, read while the connection is still open."""
    connection = http.client.HTTPConnection("127.0.0.1", board.gateway.port, timeout=10)
    try:
        connection.request(
            "POST",
            "/v1/chat/completions",
            body=orjson.dumps(
                {"model": "board-test", "messages": [{"role": "user", "content": text}]}
            ),
            headers={"Authorization": f"Bearer {board.secret}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body
        worker = board.gateway.worker_serving(connection.sock.getsockname()[1])
        return {k.lower(): v for k, v in response.getheaders()}, worker
    finally:
        connection.close()


def test_with_two_workers_every_request_reaches_the_one_open_board_within_a_second(
    two_worker_board: Board,
) -> None:
    """The board's stream is served by one worker; the other worker's requests reach it through
    Redis. Each request on a new connection, until both workers have served three."""
    from playwright.sync_api import expect

    board = two_worker_board
    served: collections.Counter[int | None] = collections.Counter()
    for n in range(40):
        headers, worker = call_on_new_connection(board, f"Request {n} to two workers.")
        served[worker] += 1
        assert headers["x-balancer-route"] == "primary"
        expect(board.chip("primary", headers["x-request-id"], "ok")).to_be_visible(timeout=1000)
        if len(served) == 2 and min(served.values()) >= 3:
            break
    assert None not in served, served
    assert set(served) == board.gateway.worker_pids() and min(served.values()) >= 3, served
    expect(board.page.get_by_test_id("board-events").locator("tr")).to_have_count(
        sum(served.values())
    )


def test_with_two_workers_a_cooldown_ended_from_the_board_lets_either_worker_reach_the_primary(
    two_worker_board: Board,
) -> None:
    """The primary cooling down for two minutes, as an active probe leaves it (shared through
    Redis): both workers fail over to the fallback. Ended from the board: within a second the
    next request from either worker reaches the primary."""
    from playwright.sync_api import expect

    from gateway.hotpath import runtime

    board = two_worker_board
    runtime.mark_unavailable(board.primary.pk, seconds=120)
    primary = board.lane("primary")
    expect(primary).to_have_attribute("data-state", "cooling", timeout=2000)

    def serve_both(route: str) -> collections.Counter[int | None]:
        served: collections.Counter[int | None] = collections.Counter()
        for n in range(40):
            headers, worker = call_on_new_connection(board, f"Request {n} during the cooldown.")
            served[worker] += 1
            assert headers["x-balancer-route"] == route, (n, worker, headers)
            assert headers["x-balancer-attempts"] == "1"  # the cooling primary is not even tried
            if len(served) == 2 and min(served.values()) >= 2:
                break
        assert set(served) == board.gateway.worker_pids(), served
        return served

    time.sleep(0.5)  # every worker has merged the cooldown (its sync tick: 0.1 s here)
    serve_both("fallback")
    primary.get_by_test_id("actions-primary").locator("summary").click()
    primary.get_by_role("button", name="End cooldown").click()  # confirmed (the dialog is accepted)
    expect(board.page.get_by_test_id("board-notice")).to_contain_text(
        "Done: cooldown ended, sim-primary"
    )
    time.sleep(1.0)  # "each reaches every worker within a second"
    serve_both("primary")
    expect(primary).to_have_attribute("data-state", "active", timeout=2000)
    board.tab.go("/balancers/board-test/")
    expect(board.page.get_by_test_id("audit-entry").first).to_contain_text("cooldown ended")
