"""Usage events, recorded off the hot path.

The request handler appends a record to an in-memory buffer and returns; a writer
thread saves the buffer in batches every GATEWAY_USAGE_FLUSH_SECONDS. While the
database is unreachable the records stay buffered and the write is retried with
backoff; past GATEWAY_USAGE_BUFFER_MAX records the oldest are dropped and
counted. At a clean shutdown (atexit) the buffer is written out.
"""

from __future__ import annotations

import atexit
import collections
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, close_old_connections, connections, transaction

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


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

    def record(self, record: UsageRecord) -> None:
        """Hot path: O(1), no I/O."""
        with self._lock:
            self._buffer.append(record)
            if len(self._buffer) > self.max_buffer:
                self._buffer.popleft()
                self.dropped += 1
                if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                    logger.error("usage buffer full: %d events dropped so far", self.dropped)
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
                backoff = min(backoff * 2, 30.0)
            else:
                backoff = self.flush_seconds
        connections.close_all()

    def flush(self) -> int | None:
        """Write everything buffered; None when the database refused (records kept)."""
        total = 0
        while True:
            with self._lock:
                batch = [self._buffer.popleft() for _ in range(min(BATCH_SIZE, len(self._buffer)))]
            if not batch:
                return total
            try:
                close_old_connections()
                try:
                    _insert(batch)
                except IntegrityError:
                    self._write_one_by_one(batch)
            except Exception:
                self.failures += 1
                logger.warning("could not write %d usage events; will retry", len(batch), exc_info=self.failures == 1)
                with self._lock:
                    self._buffer.extendleft(reversed(batch))
                    while len(self._buffer) > self.max_buffer:
                        self._buffer.popleft()
                        self.dropped += 1
                try:
                    connections["default"].close()
                except Exception:
                    pass
                return None
            self.written += len(batch)
            total += len(batch)

    def _write_one_by_one(self, batch: list[UsageRecord]) -> None:
        """A batch refused for its references (a balancer or key deleted meanwhile): keep the events without them."""
        from gateway.models import UsageEvent

        for record in batch:
            try:
                UsageEvent.objects.create(**asdict(record))
            except IntegrityError:
                record.balancer_id = None
                record.api_key_id = None
                try:
                    UsageEvent.objects.create(**asdict(record))
                except IntegrityError:
                    self.dropped += 1
                    logger.error("usage event %s refused by the database; dropped", record.request_id)

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


_LOG, _COST, _CREATED = _COLUMNS.index("attempt_log"), _COLUMNS.index("cost_usd"), _COLUMNS.index("created_at")


recorder = UsageRecorder(
    max_buffer=settings.GATEWAY_USAGE_BUFFER_MAX, flush_seconds=settings.GATEWAY_USAGE_FLUSH_SECONDS
)
