"""One log line per /v1 request, made from its usage event.

The recorder hands every usage record to `observe()` (like the metrics), so each request
gets exactly one line, rejected ones included. The line carries the request id (the
client's X-Request-Id when it sent a sane one), the balancer, route, instance and model,
the status and error code, the decision, the attempts, the latency and time to first
byte, the tokens and the cost — never the answer, and the prompt only when the balancer
keeps prompts (`Balancer.log_prompts`: then `prompt`, the same text its usage event keeps),
never a key: the whole formatted line also goes through the secret scrubber
(gateway/hotpath/scrub.py), so even an upstream key sent as a request id leaves as a mark.

Format: GATEWAY_LOG_FORMAT (`json`, the default outside embedded mode, or `text`), shared
with every other log record (config/settings.py LOGGING). The usage record is handed to a
logging thread through a queue: building the line, formatting it and writing it to stderr
happen off the event loop (on the loop: one queue put). GATEWAY_REQUEST_LOG=0 turns the lines off.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
from typing import Any

from django.conf import settings
from pythonjsonlogger.orjson import OrjsonFormatter

from gateway.hotpath import scrub, tracing
from gateway.hotpath.usage import UsageRecord, recorder

logger = logging.getLogger("gateway.requests")
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


class ScrubbedFormatter(logging.Formatter):
    """Any formatter's line with the upstream keys of the current snapshot scrubbed out."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        scrubber = scrub.current()
        return scrubber.text(line) if scrubber else line


def formatter() -> logging.Formatter:
    inner = (
        OrjsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMES)
        if settings.GATEWAY_LOG_FORMAT == "json"
        else logging.Formatter(TEXT_FORMAT)
    )
    return ScrubbedFormatter(inner)


_queue: queue.SimpleQueue[tuple[UsageRecord, str] | None] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_lock = threading.Lock()


def _start() -> None:
    global _thread
    with _lock:
        if _thread is not None:
            return
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter())
        logger.propagate = False  # the line is written here, once, not again by the root's handler
        logger.setLevel(logging.INFO)
        _thread = threading.Thread(target=_write, args=(handler,), name="request-log", daemon=True)
        _thread.start()
        atexit.register(stop)


def _write(handler: logging.Handler) -> None:
    """The log thread: builds and formats each line (python-json-logger) and writes it."""
    while (item := _queue.get()) is not None:
        record, trace_id = item
        try:
            handler.handle(_log_record(record, trace_id))
        except Exception:  # never let one odd record stop the log
            handler.handleError(logging.makeLogRecord({"msg": "request log line failed"}))


def stop() -> None:
    """At shutdown (lifespan, atexit): the lines still queued are written."""
    global _thread
    with _lock:
        thread, _thread = _thread, None
    if thread is not None:
        _queue.put(None)
        thread.join(5)


def fields(record: UsageRecord) -> dict[str, Any]:
    values: dict[str, Any] = {
        "request_id": record.request_id,
        "endpoint": record.endpoint,
        "balancer": record.balancer_label,
        "route": record.route,
        "instance": record.instance,
        "model": record.model,
        "status": record.status_code,
        "error": record.error_type,
        "decision": record.decision_reason,
        "attempts": record.attempts,
        "latency_ms": record.latency_ms,
        "ttfb_ms": record.ttfb_ms,
        "stream": record.stream,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cost_usd": float(record.cost_usd),
    }
    if record.prompt_text:  # set only when the balancer keeps prompts (gateway/hotpath/proxy.py)
        values["prompt"] = record.prompt_text
    return values


def observe(record: UsageRecord) -> None:
    """On the request's path: hand the record to the log thread (a queue put)."""
    if _thread is None:
        _start()  # in the first process that records (the gateway's), not in every manage.py
    _queue.put((record, tracing.current_trace_id() if tracing.enabled else ""))


def _log_record(record: UsageRecord, trace_id: str) -> logging.LogRecord:
    values = fields(record)
    if trace_id:
        values["trace_id"] = trace_id
    if settings.GATEWAY_LOG_FORMAT == "json":
        # The fields as the message (python-json-logger merges a dict message into the object):
        # a third of the cost of passing them as `extra`, which it picks out of the record's
        # attributes.
        return logger.makeRecord(
            logger.name, logging.INFO, __file__, 0, {"message": "request", **values}, (), None
        )
    text = (
        "%(endpoint)s %(status)s balancer=%(balancer)s route=%(route)s instance=%(instance)s "
        "attempts=%(attempts)s latency_ms=%(latency_ms)s ttfb_ms=%(ttfb_ms)s "
        "tokens=%(prompt_tokens)s/%(completion_tokens)s cost_usd=%(cost_usd)s "
        "decision=%(decision)s error=%(error)s request_id=%(request_id)s"
    ) % {k: ("-" if v == "" else v) for k, v in values.items()}
    if "prompt" in values:
        text += f" prompt={values['prompt']!r}"
    return logger.makeRecord(logger.name, logging.INFO, __file__, 0, text, (), None)


def install() -> None:
    """Log every usage event (gateway.apps), when GATEWAY_REQUEST_LOG is on."""
    if settings.GATEWAY_REQUEST_LOG and observe not in recorder.observers:
        recorder.observers.append(observe)
