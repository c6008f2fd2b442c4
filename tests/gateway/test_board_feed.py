"""The live board's feed (gateway/board_feed.py): operator words for decisions, batches per
balancer published off the request path, fan-out to open boards with and without Redis."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from gateway import board_feed
from gateway.board_feed import MAX_EVENTS_PER_BATCH, BoardHub, BoardPublisher, decision_words
from gateway.hotpath.usage import UsageRecord

FAILOVER = [
    {"route": "primary", "instance": "sim-a", "outcome": "connect", "status": None},
    {"route": "backup", "instance": "sim-b", "outcome": "ok", "status": 200},
]


def record(balancer_id: int | None = 1, n: int = 0, **fields: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "request_id": f"req-{n}",
        "endpoint": "chat",
        "status_code": 200,
        "latency_ms": 12.4,
        "balancer_id": balancer_id,
        "route": "primary",
        "instance": "sim-a",
        "decision_reason": "ordered",
        "attempt_log": [{"route": "primary", "instance": "sim-a", "outcome": "ok", "status": 200}],
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "cost_usd": Decimal("0.000007"),
    }
    values.update(fields)
    return UsageRecord(**values)


@pytest.mark.parametrize(
    ("reason", "confidence", "log", "words"),
    [
        ("classified", 0.82, FAILOVER[1:], "backup matched (82%)"),
        ("default:no_match", None, FAILOVER[1:], "default: no match"),
        ("default:low_confidence", 0.31, FAILOVER[1:], "default: low confidence (31%)"),
        ("override", None, FAILOVER[1:], "override: backup"),
        ("rule:big-prompts", None, FAILOVER[1:], "rule big-prompts matched"),
        (
            "ordered",
            None,
            FAILOVER,
            "ordered: primary first · fallback after sim-a connection refused",
        ),
        (
            "classified",
            0.9,
            [{**FAILOVER[0], "outcome": "http", "status": 503}, FAILOVER[1]],
            "primary matched (90%) · fallback after sim-a HTTP error 503",
        ),
        (
            "ordered",
            None,
            [
                {
                    "route": "primary",
                    "instance": "sim-a",
                    "outcome": "skipped",
                    "status": None,
                    "ms": 0.0,
                    "detail": "no vision (the request has images)",
                },
                FAILOVER[1],
            ],
            "ordered: backup first · skipped sim-a (no vision (the request has images))",
        ),
    ],
)
def test_the_decision_is_said_in_operator_words(reason, confidence, log, words) -> None:
    assert decision_words(reason, confidence, log, log[-1]["route"]) == words


def test_noting_a_record_does_no_io_and_a_batch_goes_out_per_balancer(monkeypatch) -> None:
    sent: list[tuple[int, dict[str, Any]]] = []
    monkeypatch.setattr(
        board_feed, "deliver", lambda pk, message: sent.append((pk, orjson.loads(message)))
    )
    publisher = BoardPublisher(interval=60)
    publisher._thread = object()  # no thread: this test publishes by hand
    publisher.note(record(1, 1))
    publisher.note(record(2, 2))
    publisher.note(record(1, 3, route="backup", attempt_log=FAILOVER))
    publisher.note(record(None, 4))  # refused before any balancer was found: not on a board
    assert sent == []
    assert publisher.publish_pending() == 3
    assert [(pk, [e["id"] for e in m["events"]]) for pk, m in sent] == [
        (1, ["req-1", "req-3"]),
        (2, ["req-2"]),
    ]
    failover = sent[0][1]["events"][1]
    assert (
        failover["decision"] == "ordered: primary first · fallback after sim-a connection refused"
    )
    assert [a["route"] for a in failover["attempts"]] == ["primary", "backup"]
    assert failover["tokens"] == 7 and failover["cost"] == "0.000007"
    assert "prompt" not in failover  # this balancer keeps no prompts: the record carries none


def test_a_kept_prompt_goes_out_as_its_first_80_characters_of_plain_text() -> None:
    from gateway.board_feed import PROMPT_START_CHARS, board_event

    prompt = "<script>alert('x')</script>\n\n  " + "word " * 40
    event = board_event(record(1, 1, prompt_text=prompt))
    folded = " ".join(prompt.split())
    assert event["prompt"] == folded[:PROMPT_START_CHARS].rstrip() + "…"
    assert event["prompt"].startswith("<script>alert('x')</script> word")  # the page escapes it
    assert board_event(record(1, 2, prompt_text="Short one."))["prompt"] == "Short one."
    assert "prompt" not in board_event(record(1, 3, prompt_text=""))


def test_a_goal_names_requests_go_out_on_the_goal_names_board(monkeypatch) -> None:
    """auto, auto-cheap... called with no balancer: their board is keyed by the goal name."""
    sent: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(
        board_feed, "deliver", lambda key, message: sent.append((key, orjson.loads(message)))
    )
    publisher = BoardPublisher(interval=60)
    publisher._thread = object()
    publisher.note(record(None, 1, serving_name="auto-cheap", route="auto", instance="sim-a"))
    publisher.note(record(None, 2, serving_name="auto", route="auto", attempt_log=FAILOVER))
    publisher.note(record(None, 3, serving_name="gpt-4o"))  # a direct call: no board
    publisher.note(record(4, 4, serving_name="auto"))  # an operator's balancer named auto
    assert publisher.publish_pending() == 3
    assert [(key, [e["id"] for e in m["events"]]) for key, m in sent] == [
        ("auto-cheap", ["req-1"]),
        ("auto", ["req-2"]),
        (4, ["req-4"]),
    ]
    assert [a["instance"] for a in sent[1][1]["events"][0]["attempts"]] == ["sim-a", "sim-b"]


@pytest.mark.django_db(transaction=True)
def test_through_redis_a_goal_names_batch_reaches_its_boards_only(settings) -> None:
    settings.GATEWAY_BOARD_STATE_SECONDS = 60
    hub = BoardHub()

    # This process's own feed may publish a goal name's requests of an earlier test meanwhile
    # (the playground's): the batch sent here is told apart by a marker.
    mine = orjson.dumps({"events": [], "marker": uuid.uuid4().hex})

    async def until(board: asyncio.Queue[Any], wanted: Any) -> Any:
        while True:
            item = await board.get()
            if item is not None and wanted(item):
                return item

    async def scenario() -> Any:
        async with (
            hub.listen("auto-cheap", lambda: b"{}") as cheap,
            hub.listen("auto", lambda: b"{}") as balanced,
        ):
            for board in (cheap, balanced):  # the first lanes render: subscribed by then
                await asyncio.wait_for(until(board, lambda item: item[0] == "lanes"), 5)
            await asyncio.to_thread(board_feed.deliver, "auto-cheap", mine)
            got = await asyncio.wait_for(until(cheap, lambda item: item[1] == mine), 5)
            await asyncio.sleep(0.2)
            while not balanced.empty():
                assert balanced.get_nowait()[1] != mine
            return got

    assert asyncio.run(scenario()) == ("requests", mine)


def test_a_burst_is_capped_per_batch_and_the_rest_counted(monkeypatch) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(
        board_feed, "deliver", lambda pk, message: sent.append(orjson.loads(message))
    )
    publisher = BoardPublisher(interval=60)
    publisher._thread = object()
    for n in range(MAX_EVENTS_PER_BATCH + 30):
        publisher.note(record(1, n))
    publisher.publish_pending()
    assert len(sent[0]["events"]) == MAX_EVENTS_PER_BATCH and sent[0]["skipped"] == 30
    assert sent[0]["events"][-1]["id"] == f"req-{MAX_EVENTS_PER_BATCH + 29}"  # the newest are shown


def test_without_redis_a_batch_reaches_the_open_boards_of_its_balancer_only(settings) -> None:
    settings.REDIS_URL = ""
    settings.GATEWAY_BOARD_STATE_SECONDS = 60
    hub = BoardHub()

    async def scenario() -> list[Any]:
        async with (
            hub.listen(1, lambda: b'{"lanes": 1}') as one,
            hub.listen(2, lambda: b'{"lanes": 2}') as two,
        ):
            assert await asyncio.wait_for(one.get(), 5) == ("lanes", b'{"lanes": 1}')
            assert await asyncio.wait_for(two.get(), 5) == ("lanes", b'{"lanes": 2}')
            await asyncio.to_thread(hub.deliver_threadsafe, 1, ("requests", b"batch"))
            got = await asyncio.wait_for(one.get(), 5)
            assert two.empty()
            assert hub.open_boards() == 2
        assert hub.open_boards() == 0
        return [got]

    assert asyncio.run(scenario()) == [("requests", b"batch")]


@pytest.mark.django_db(transaction=True)
def test_through_redis_a_batch_published_by_any_process_reaches_the_boards(settings) -> None:
    settings.GATEWAY_BOARD_STATE_SECONDS = 60
    hub = BoardHub()

    async def scenario() -> Any:
        async with hub.listen(7, lambda: b"{}") as board:
            await asyncio.wait_for(board.get(), 5)  # the first lanes render
            await asyncio.to_thread(board_feed.deliver, 7, b'{"events": []}')
            return await asyncio.wait_for(board.get(), 5)

    assert asyncio.run(scenario()) == ("requests", b'{"events": []}')


@pytest.mark.django_db(transaction=True)
def test_a_deployment_on_another_database_of_the_same_redis_is_not_drawn(settings) -> None:
    """Redis pub/sub ignores the database number: the channels carry it, so a board does not
    draw the requests of another deployment that shares the Redis server."""
    import redis

    settings.GATEWAY_BOARD_STATE_SECONDS = 60
    ours = settings.REDIS_URL
    neighbour = ours.rsplit("/", 1)[0] + "/" + str((int(ours.rsplit("/", 1)[1] or 0) + 1) % 16)
    assert board_feed.channel_prefix(ours) != board_feed.channel_prefix(neighbour)
    hub = BoardHub()

    async def scenario() -> Any:
        async with hub.listen(7, lambda: b"{}") as board:
            await asyncio.wait_for(board.get(), 5)  # the first lanes render
            other = redis.Redis.from_url(neighbour)
            other.publish(f"{board_feed.channel_prefix(neighbour)}7", b'{"theirs": 1}')
            other.close()
            await asyncio.to_thread(board_feed.deliver, 7, b'{"ours": 1}')
            return await asyncio.wait_for(board.get(), 5)

    assert asyncio.run(scenario()) == ("requests", b'{"ours": 1}')


def test_a_board_that_cannot_keep_up_loses_the_oldest_messages_not_memory() -> None:
    async def scenario() -> tuple[int, Any]:
        board = board_feed._Board(1, asyncio.get_running_loop())
        for n in range(board_feed.QUEUE_SIZE + 5):
            board.put(("requests", str(n).encode()))
        return board.queue.qsize(), board.queue.get_nowait()

    assert asyncio.run(scenario()) == (board_feed.QUEUE_SIZE, ("requests", b"5"))
