"""Usage events, recorded off the hot path.

The request handler appends a record to an in-memory buffer and returns; a writer
thread saves the buffer in batches every GATEWAY_USAGE_FLUSH_SECONDS. While the
database is unreachable the records stay buffered and the write is retried with
backoff (at most RETRY_MAX_SECONDS apart, so the writer catches up within seconds
of the database answering again); past GATEWAY_USAGE_BUFFER_MAX records the
oldest are dropped and counted. At a clean shutdown (atexit) the buffer is
written out.

A record the database refuses for its values (a negative token count against the
column's check, a number out of the column's range, a string too long, a value
that cannot be encoded) must not hold up the others: a batch refused that way is
halved until the bad record is alone, the rest is written, and that record is
kept in UsageDeadLetter with the database's reason for an operator to see.
"""

from __future__ import annotations

import atexit
import collections
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from django.conf import settings
from django.db import DataError, IntegrityError, close_old_connections, connections, transaction

from gateway.board_feed import feed
from gateway.db import connection_lost, drop_connections
from gateway.engine.auto import GOALS
from gateway.outages import SUMMARY_SECONDS, OutageLog, describe

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
RETRY_MAX_SECONDS = 2.0  # the longest wait between two writes while the database refuses them


@dataclass(slots=True)
class UsageRecord:
    created_at: datetime
    request_id: str
    endpoint: str
    status_code: int
    latency_ms: float
    api_key_id: int | None = None
    balancer_id: int | None = None
    serving_name: str = ""
    team_id: int | None = None  # the key's team (budgets and the usage page's breakdown)
    use_case: str = ""  # the request's use-case tag (docs/cost.md)
    route: str = ""
    instance: str = ""
    model: str = ""
    decision_reason: str = ""
    confidence: float | None = None
    classifier_ms: float | None = None
    attempts: int = 0
    attempt_log: list[dict[str, Any]] = field(default_factory=list)
    error_type: str = ""
    stream: bool = False
    ttfb_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    usage_note: str = ""  # why a reported token count was replaced by the estimate
    cache_hit: bool = False  # answered from the response cache (gateway.hotpath.cache)
    savings_usd: Decimal = Decimal(0)  # the upstream cost a cache hit avoided
    prompt_text: str = ""  # the last user message, when the balancer keeps prompts
    decided_route: str = ""  # the route the decision named, before any failover
    spilled: bool = False  # capacity_first: spilled over from saturated reserved capacity

    @property
    def balancer_label(self) -> str:
        """The serving name for logs, metrics and traces: a balancer's, or a goal name's (auto,
        auto-cheap..., a bounded set with no balancer row); "" for a request that named nothing
        known (unbounded)."""
        if self.balancer_id is not None or self.serving_name in GOALS:
            return self.serving_name
        return ""


class UsageRecorder:
    def __init__(self, *, max_buffer: int, flush_seconds: float) -> None:
        self.max_buffer = max_buffer
        self.flush_seconds = flush_seconds
        self._buffer: collections.deque[UsageRecord] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.written = 0
        self.failures = 0
        self.set_aside = 0  # records the database refused for their values (UsageDeadLetter)
        self._set_aside_logged_at = -SUMMARY_SECONDS
        self.outage = OutageLog("usage writes", logger)
        # Told of every record as it is made (metrics, the request log, the trace): no I/O.
        self.observers: list[Callable[[UsageRecord], None]] = []

    def record(self, record: UsageRecord) -> None:
        """Hot path: O(1), no I/O."""
        for observer in self.observers:
            try:
                observer(record)
            except Exception:  # a metrics or log failure never costs the client its answer
                logger.exception(
                    "usage observer %s failed", getattr(observer, "__name__", observer)
                )
        with self._lock:
            self._buffer.append(record)
            if len(self._buffer) > self.max_buffer:
                self._buffer.popleft()
                self.dropped += 1
                if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                    logger.error("usage buffer full: %d events dropped so far", self.dropped)
        feed.note(record)  # the live boards: a deque append; published from feed's own thread
        if self._thread is None:
            self._start()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            # The writer holds the GIL while it builds a batch; a 1 ms switch interval (the
            # default is 5 ms) bounds how long the event loop can wait behind it.
            sys.setswitchinterval(0.001)
            self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
            self._thread.start()
        atexit.register(self.stop)

    def _run(self) -> None:
        backoff = self.flush_seconds
        while not self._stop.is_set():
            self._wake.wait(backoff)
            self._wake.clear()
            if self.flush() is None:
                backoff = min(backoff * 2, max(RETRY_MAX_SECONDS, self.flush_seconds))
            else:
                backoff = self.flush_seconds
        connections.close_all()

    def flush(self) -> int | None:
        """Write everything buffered; None when the database failed (what is unwritten stays
        buffered)."""
        total = 0
        while True:
            with self._lock:
                batch = [self._buffer.popleft() for _ in range(min(BATCH_SIZE, len(self._buffer)))]
            if not batch:
                return total
            close_old_connections()  # a unit of work in a long-lived thread (gateway.db)
            try:
                written = self._write(batch)
            except _Unwritten as failure:
                self.failures += 1
                self.outage.failed(failure.__cause__ or failure)
                with self._lock:
                    self._buffer.extendleft(reversed(failure.records))
                    while len(self._buffer) > self.max_buffer:
                        self._buffer.popleft()
                        self.dropped += 1
                drop_connections()
                return None
            self.outage.succeeded()
            self.written += written
            total += written

    def _write(self, batch: list[UsageRecord]) -> int:
        """Write a batch; return how many records were written (the others were set aside).

        A part refused for its values is halved until the bad record is alone (about
        2·log2(BATCH_SIZE) statements for one bad record in a full batch). Raises _Unwritten,
        with the records not written yet, when the database itself fails.
        """
        written = 0
        parts = [batch]
        while parts:
            part = parts.pop()
            try:
                _insert(part)
            except Exception as exc:
                if not refused_for_values(exc):
                    raise _Unwritten(
                        [*part, *(r for rest in reversed(parts) for r in rest)]
                    ) from exc
                if len(part) > 1:
                    middle = len(part) // 2
                    parts += [part[middle:], part[:middle]]
                    continue
                try:
                    self._set_aside(part[0], exc)
                except Exception as failure:
                    raise _Unwritten(
                        [*part, *(r for rest in reversed(parts) for r in rest)]
                    ) from failure
            else:
                written += len(part)
        return written

    def _set_aside(self, record: UsageRecord, refusal: BaseException) -> None:
        """Keep a record the database refused, with the reason, in UsageDeadLetter."""
        from gateway.models import UsageDeadLetter

        reason = describe(refusal, limit=500)
        try:
            UsageDeadLetter.objects.create(
                request_id=_text(record.request_id)[:64],
                reason=_text(reason)[:500],
                record=_dump(record),
            )
        except Exception as exc:
            if not refused_for_values(exc):
                raise
            self.dropped += 1  # cannot happen with the text above; never let it block the writer
            logger.error("usage event refused and not kept aside: %s (%s)", reason, describe(exc))
            return
        self.set_aside += 1
        now = time.monotonic()
        if now - self._set_aside_logged_at >= SUMMARY_SECONDS:  # one line a minute at most
            self._set_aside_logged_at = now
            logger.warning(
                "usage event %s refused by the database, kept in the usage dead letters: %s (%d so "
                "far in this process)",
                _text(record.request_id)[:64],
                reason,
                self.set_aside,
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Write out what is buffered (clean shutdown), retrying for up to `timeout` seconds."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self._buffer and time.monotonic() < deadline:
            if self.flush() is None:
                time.sleep(0.5)
        if self._buffer:
            logger.error("shutdown with %d usage events unwritten", len(self._buffer))


class _Unwritten(Exception):
    def __init__(self, records: list[UsageRecord]) -> None:
        super().__init__(f"{len(records)} usage events not written")
        self.records = records


def refused_for_values(exc: BaseException) -> bool:
    """The statement failed for the values in it, not for the database: the same rows would fail
    again."""
    if connection_lost(exc):
        return False
    if isinstance(exc, DataError | IntegrityError | psycopg.DataError | psycopg.IntegrityError):
        # out of range, a check constraint, too long, bad text (SQLSTATE classes 22 and 23)
        return True
    if isinstance(exc, psycopg.Error):
        return exc.sqlstate is None  # raised by psycopg itself while adapting a value
    return isinstance(
        exc, TypeError | ValueError | ArithmeticError
    )  # building the row (JSON, numbers)


def _text(value: object) -> str:
    """Any value as text PostgreSQL accepts (no NUL, no lone surrogate)."""
    return str(value).replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _dump(record: UsageRecord) -> str:
    values = {name: getattr(record, name, None) for name in _COLUMNS}
    try:
        text = orjson.dumps(values, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except Exception:  # e.g. an integer past 64 bits, a lone surrogate
        text = repr(values)
    return _text(text)


_COLUMNS = [f.name for f in fields(UsageRecord)]


def _insert(batch: list[UsageRecord]) -> None:
    """Insert a batch in one statement: COPY on PostgreSQL, executemany elsewhere.

    The ORM's bulk_create built a model instance and compiled SQL per field per
    row, which cost more CPU than the request it recorded; this writes tuples.
    """
    from gateway.models import UsageEvent

    connection = connections["default"]
    table = connection.ops.quote_name(UsageEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in _COLUMNS)
    postgres = connection.vendor == "postgresql"
    rows = []
    for record in batch:
        row = [getattr(record, c) for c in _COLUMNS]
        row[_LOG] = orjson.dumps(record.attempt_log).decode()
        row[_COST] = str(record.cost_usd)
        row[_SAVINGS] = str(record.savings_usd)
        if not postgres:
            row[_CREATED] = connection.ops.adapt_datetimefield_value(record.created_at)
        rows.append(row)
    with transaction.atomic(using="default"), connection.cursor() as cursor:
        if postgres:
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s"] * len(_COLUMNS))
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


_LOG, _COST, _CREATED = (
    _COLUMNS.index("attempt_log"),
    _COLUMNS.index("cost_usd"),
    _COLUMNS.index("created_at"),
)
_SAVINGS = _COLUMNS.index("savings_usd")


recorder = UsageRecorder(
    max_buffer=settings.GATEWAY_USAGE_BUFFER_MAX, flush_seconds=settings.GATEWAY_USAGE_FLUSH_SECONDS
)
