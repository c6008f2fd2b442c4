"""The live board's feed: each request a gateway process served, pushed to the open boards.

Publisher, in every gateway process:

- `UsageRecorder.record` hands each usage record to `feed.note`: a bounded deque
  append and nothing else, on the request's own path.
- A daemon thread wakes every GATEWAY_BOARD_PUBLISH_SECONDS, turns the records
  gathered since into small board events (at most MAX_EVENTS_PER_BATCH per
  balancer per batch: a board cannot draw more; the rest are counted as
  `skipped`) and publishes one message per balancer on the Redis channel
  `sb:board:<Redis db>:<balancer pk>`. A goal name's requests (auto, auto-cheap...: no
  balancer row) have a board too, keyed by the goal name: `sb:board:<Redis db>:auto-cheap`
  (`board_key`). Without Redis (`make run`, one process) it hands the message to this
  process's boards directly. The thread sleeps while nothing is noted.

Subscribers, in every process that serves pages (`hub`):

- one Redis connection per event loop subscribes to `sb:board:*` while at least
  one board is open in that process, and fans each message out to the boards of
  that balancer (an asyncio queue each, bounded: a board that cannot keep up
  loses events, never memory);
- one state task per balancer with open boards re-renders the lanes (state,
  members, figures) every GATEWAY_BOARD_STATE_SECONDS, in a thread, and sends
  them only when they changed: the cost is per watched balancer, not per board.

When Redis is configured but unreachable the hub refuses (`FeedUnavailable`) and
the board falls back to polling; a subscription that breaks ends every stream it
fed, and the boards reconnect or poll.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.conf import settings

from gateway.engine.auto import GOALS

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "sb:board:"  # then the Redis database number, ":" and the board's key

# A board's key: a balancer's pk, or a goal name (auto, auto-cheap...) for the requests sent to it
# with no balancer of that name. The two never collide: a goal name is not a number.
BoardKey = int | str


def board_key(record: Any) -> BoardKey | None:
    """The board a usage record is drawn on: its balancer's, or its goal name's; None for
    neither."""
    if record.balancer_id is not None:
        return int(record.balancer_id)
    if record.serving_name in GOALS:
        return str(record.serving_name)
    return None


def parse_key(text: str) -> BoardKey:
    return int(text) if text.isdigit() else text


@functools.lru_cache(maxsize=8)
def channel_prefix(redis_url: str) -> str:
    """The board channels of the deployment on `redis_url`. Redis pub/sub ignores the database
    number, so two deployments sharing one Redis server on different databases would otherwise
    draw each other's requests on their boards: the channel names carry the database."""
    from redis.connection import parse_url

    return f"{CHANNEL_PREFIX}{parse_url(redis_url).get('db', 0) or 0}:"


MAX_EVENTS_PER_BATCH = 50
# A kept prompt's start, shown in the board's request node (balancers keeping prompts only).
PROMPT_START_CHARS = 80
QUEUE_SIZE = 200  # messages waiting for one board; past it that board loses the oldest
NOTE_BUFFER = 5_000  # records waiting for the publisher; past it the oldest are dropped

# Attempt outcomes (gateway.hotpath.proxy log_attempt) in an operator's words.
OUTCOME_WORDS = {
    "connect": "connection refused",
    "timeout": "timed out",
    "http": "HTTP error",
    "status": "HTTP error",
    "rate_limited": "rate limited",
    "client_error": "refused the request",
    "cancelled": "cancelled",
    "latency_threshold": "past its latency threshold",
    "hedge_lost": "lost the hedged race",
    "context_length_exceeded": "refused the prompt as too long",
}


def decision_words(
    reason: str, confidence: float | None, attempt_log: Iterable[dict[str, Any]], served_route: str
) -> str:
    """Why the request went where it did, as an operator would say it.

    `classified` names the route that matched and the confidence; the router's fall-backs say
    `default: no match` (or low confidence, timeout, error); a header pick says `override`;
    ordered, weighted and auto modes say so. A failover adds `fallback after <instance> <reason>`
    for the attempt that failed last; targets left out for a capability add `skipped <instance>
    (<reason>)`.
    """
    entries = list(attempt_log)
    attempts = [a for a in entries if a.get("outcome") != "skipped"]
    skipped = [a for a in entries if a.get("outcome") == "skipped"]
    first = attempts[0]["route"] if attempts else served_route
    if reason == "classified":
        words = f"{first} matched" + (f" ({confidence:.0%})" if confidence is not None else "")
    elif reason.startswith("default:"):
        why = reason.split(":", 1)[1].replace("_", " ")
        words = f"default: {why}" + (
            f" ({confidence:.0%})" if confidence is not None and why == "low confidence" else ""
        )
    elif reason == "override":
        words = f"override: {first}"
    elif reason.startswith("rule:"):
        words = f"rule {reason.split(':', 1)[1]} matched"
    elif reason == "ordered":
        words = f"ordered: {first} first"
    elif reason.startswith("auto"):
        words = reason.replace(":", ": ", 1)
    else:
        words = reason or "—"
    failed = [a for a in attempts if a.get("outcome") != "ok"]
    if failed and len(attempts) > 1:
        last = (
            failed[-1]
            if attempts[-1].get("outcome") == "ok"
            else (failed[-2] if len(failed) > 1 else failed[-1])
        )
        if last.get("outcome") == "hedge_lost":  # a race: the winner is the served attempt
            return words + f" · hedged: beat {last.get('instance')}"
        what = OUTCOME_WORDS.get(str(last.get("outcome")), str(last.get("outcome")))
        status = f" {last['status']}" if last.get("status") and what == "HTTP error" else ""
        words += f" · fallback after {last.get('instance')} {what}{status}"
    if skipped:
        first_skip = skipped[0]
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        words += f" · skipped {first_skip.get('instance')} ({first_skip.get('detail', '')}){more}"
    return words


def prompt_start(text: str) -> str:
    """The first PROMPT_START_CHARS characters of a kept prompt, its whitespace folded to single
    spaces and "…" when cut. Plain text: the page escapes it (Django's autoescape in the template,
    textContent in static/js/board.js), so markup in a prompt is shown, never run."""
    folded = " ".join(text[: PROMPT_START_CHARS * 4].split())
    if len(folded) <= PROMPT_START_CHARS:
        return folded
    return folded[:PROMPT_START_CHARS].rstrip() + "…"


def board_event(record: Any) -> dict[str, Any]:
    """One usage record as the board draws it. `prompt` (its start) only when the balancer keeps
    prompts: the record carries the prompt then and only then (gateway.hotpath.proxy record)."""
    event = {
        "id": record.request_id,
        "at": record.created_at.timestamp(),
        "route": record.route,
        "instance": record.instance,
        "model": record.model,
        "status": record.status_code,
        "ms": round(record.latency_ms),
        "ttfb": round(record.ttfb_ms) if record.ttfb_ms is not None else None,
        "tokens": record.prompt_tokens + record.completion_tokens,
        "cost": str(record.cost_usd),
        "stream": record.stream,
        "endpoint": record.endpoint,  # chat, responses, messages, completions, embeddings
        "reason": record.decision_reason,
        "decision": decision_words(
            record.decision_reason, record.confidence, record.attempt_log, record.route
        ),
        "attempts": [
            {
                "route": a.get("route"),
                "instance": a.get("instance"),
                "outcome": a.get("outcome"),
                "status": a.get("status"),
                "ms": a.get("ms"),
            }
            for a in record.attempt_log
            if a.get("outcome") != "skipped"
        ],
        # Targets left out for a capability (never attempted): named, not drawn through a lane.
        "skipped": [
            {"route": a.get("route"), "instance": a.get("instance"), "reason": a.get("detail", "")}
            for a in record.attempt_log
            if a.get("outcome") == "skipped"
        ],
    }
    if record.prompt_text:
        event["prompt"] = prompt_start(record.prompt_text)
    return event


class FeedUnavailable(Exception):
    """Redis is configured but not answering: the board polls instead."""


# -- publisher -----------------------------------------------------------------------------------


class BoardPublisher:
    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        self._notes: collections.deque[Any] = collections.deque(maxlen=NOTE_BUFFER)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.published = 0
        self.skipped = 0

    def note(self, record: Any) -> None:
        """Hot path: O(1), no I/O."""
        if record.balancer_id is None and record.serving_name not in GOALS:
            return
        self._notes.append(record)
        if self._thread is None:
            self._start()
        self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="board-publisher", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.interval)  # gather a batch
            self._wake.clear()
            try:
                self.publish_pending()
            except Exception:
                logger.warning("board feed publish failed", exc_info=True)

    def publish_pending(self) -> int:
        """Publish what was noted since the last batch; return how many events went out."""
        by_balancer: dict[BoardKey, list[Any]] = collections.defaultdict(list)
        while True:
            try:
                record = self._notes.popleft()
            except IndexError:
                break
            key = board_key(record)
            if key is not None:
                by_balancer[key].append(record)
        sent = 0
        for balancer_id, records in by_balancer.items():
            shown = records[-MAX_EVENTS_PER_BATCH:]
            message = orjson.dumps(
                {"events": [board_event(r) for r in shown], "skipped": len(records) - len(shown)}
            )
            self.skipped += len(records) - len(shown)
            deliver(balancer_id, message)
            sent += len(shown)
        self.published += sent
        return sent


def deliver(balancer_id: BoardKey, message: bytes) -> None:
    """Through Redis to every process's boards, or straight to this process's without Redis."""
    if settings.REDIS_URL:
        from gateway.hotpath.redis_client import RedisUnavailable, call_sync

        with contextlib.suppress(RedisUnavailable):  # the boards poll meanwhile; the breaker logs
            call_sync(
                lambda client: client.publish(
                    f"{channel_prefix(settings.REDIS_URL)}{balancer_id}", message
                )
            )
        return
    hub.deliver_threadsafe(balancer_id, ("requests", message))


# -- subscribers ---------------------------------------------------------------------------------


@dataclass(eq=False)
class _Board:
    balancer_id: BoardKey
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[str, bytes] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE)
    )

    def put(self, item: tuple[str, bytes] | None) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(item)


@dataclass
class _LoopState:
    boards: dict[BoardKey, set[_Board]] = field(
        default_factory=lambda: collections.defaultdict(set)
    )
    reader: asyncio.Task[None] | None = None
    watchers: dict[BoardKey, asyncio.Task[None]] = field(default_factory=dict)
    last_state: dict[BoardKey, bytes] = field(default_factory=dict)


class BoardHub:
    def __init__(self) -> None:
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._lock = threading.Lock()

    def open_boards(self) -> int:
        return sum(
            len(boards) for state in self._loops.values() for boards in state.boards.values()
        )

    @contextlib.asynccontextmanager
    async def listen(
        self, balancer_id: BoardKey, render: Callable[[], bytes]
    ) -> AsyncIterator[asyncio.Queue[Any]]:
        """Open one board: its queue receives ("requests" | "lanes", JSON bytes), or None when the
        feed broke."""
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._loops.setdefault(loop, _LoopState())
        if settings.REDIS_URL and (state.reader is None or state.reader.done()):
            client = await self._subscribe()
            # Both tasks outlive the board that starts them: a fresh context each, not the
            # board request's (whose thread-sensitive context ends with that board).
            state.reader = loop.create_task(
                self._read(state, client), name="board-feed-reader", context=contextvars.Context()
            )
        board = _Board(balancer_id, loop)
        state.boards[balancer_id].add(board)
        if balancer_id in state.last_state:
            board.put(("lanes", state.last_state[balancer_id]))
        if balancer_id not in state.watchers or state.watchers[balancer_id].done():
            state.watchers[balancer_id] = loop.create_task(
                self._watch(state, balancer_id, render),
                name=f"board-state-{balancer_id}",
                context=contextvars.Context(),
            )
        try:
            yield board.queue
        finally:
            state.boards[balancer_id].discard(board)
            if not state.boards[balancer_id]:
                del state.boards[balancer_id]
                state.last_state.pop(balancer_id, None)
                watcher = state.watchers.pop(balancer_id, None)
                if watcher is not None:
                    watcher.cancel()
            if not state.boards and state.reader is not None:
                state.reader.cancel()
                state.reader = None

    async def _subscribe(self) -> Any:
        import redis.asyncio as aredis

        from gateway.hotpath.redis_client import breaker

        # The board's own subscription may be the breaker's trial: a board opened while nothing
        # else touches Redis still finds out that Redis is back.
        shared = breaker()
        if not shared.allow():
            raise FeedUnavailable(shared.reason)
        client = aredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1.0)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(2.0):
                await pubsub.psubscribe(channel_prefix(settings.REDIS_URL) + "*")
        except asyncio.CancelledError:
            shared.abandoned()
            await pubsub.aclose()
            await client.aclose()
            raise
        except Exception as exc:
            shared.failed(exc)
            await pubsub.aclose()
            await client.aclose()
            raise FeedUnavailable(str(exc)) from exc
        shared.succeeded()
        return pubsub

    async def _read(self, state: _LoopState, pubsub: Any) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None or message.get("type") != "pmessage":
                    continue
                channel = (
                    message["channel"].decode()
                    if isinstance(message["channel"], bytes)
                    else message["channel"]
                )
                with contextlib.suppress(ValueError):
                    balancer_id = parse_key(
                        channel.removeprefix(channel_prefix(settings.REDIS_URL))
                    )
                    for board in list(state.boards.get(balancer_id, ())):
                        board.put(("requests", message["data"]))
        except asyncio.CancelledError:
            raise
        except (
            Exception
        ) as exc:  # the subscription broke: end the streams, the boards reconnect or poll
            logger.warning("board feed subscription lost: %s", exc)
            for boards in list(state.boards.values()):
                for board in list(boards):
                    board.put(None)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _watch(
        self, state: _LoopState, balancer_id: BoardKey, render: Callable[[], bytes]
    ) -> None:
        from asgiref.sync import sync_to_async

        while True:
            try:
                rendered = await sync_to_async(render)()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("board state render failed", exc_info=True)
            else:
                if rendered != state.last_state.get(balancer_id):
                    state.last_state[balancer_id] = rendered
                    for board in list(state.boards.get(balancer_id, ())):
                        board.put(("lanes", rendered))
            await asyncio.sleep(settings.GATEWAY_BOARD_STATE_SECONDS)

    def deliver_threadsafe(self, balancer_id: BoardKey, item: tuple[str, bytes]) -> None:
        """From the publisher thread (no Redis): hand the message to each open board on its own
        loop."""
        for state in list(self._loops.values()):
            for board in list(state.boards.get(balancer_id, ())):
                with contextlib.suppress(RuntimeError):  # that loop has closed
                    board.loop.call_soon_threadsafe(board.put, item)


hub = BoardHub()
feed = BoardPublisher(interval=settings.GATEWAY_BOARD_PUBLISH_SECONDS)
