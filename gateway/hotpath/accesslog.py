"""One log line per /v1 request, made from its usage event.

The recorder hands every usage record to `observe()` (like the metrics), so each request
gets exactly one line, rejected ones included. The line carries the request id (the
client's X-Request-Id when it sent a sane one), the balancer, route, instance and model,
the status and error code, the decision, the attempts, the latency and time to first
byte, the tokens and the cost — never the prompt or the answer (the gateway has no prompt
logging), never a key: the whole formatted line also goes through the secret scrubber
(gateway/hotpath/scrub.py), so even an upstream key sent as a request id leaves as a mark.

Format: GATEWAY_LOG_FORMAT (`json`, the default outside embedded mode, or `text`), shared
with every other log record (config/settings.py LOGGING). The record is handed to a
logging thread through a queue (QueueHandler / QueueListener): formatting and the write to
stderr happen off the event loop. GATEWAY_REQUEST_LOG=0 turns the lines off.
"""

from __future__ import annotations

import logging
import queue
import sys
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from django.conf import settings
from pythonjsonlogger.json import JsonFormatter

from gateway.hotpath import scrub
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
    inner = (JsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMES) if settings.GATEWAY_LOG_FORMAT == "json"
             else logging.Formatter(TEXT_FORMAT))
    return ScrubbedFormatter(inner)


class _Handoff(QueueHandler):
    """QueueHandler that leaves the formatting to the listener's thread (its prepare() formats
    in the caller's). The records carry only numbers and strings, so handing them over as
    they are is safe."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


_listener: QueueListener | None = None


def _start() -> None:
    global _listener
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    channel: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = QueueListener(channel, handler)
    _listener.start()
    logger.addHandler(_Handoff(channel))
    logger.propagate = False
    logger.setLevel(logging.INFO)


def fields(record: UsageRecord) -> dict[str, Any]:
    from gateway.hotpath import tracing

    values: dict[str, Any] = {
        "request_id": record.request_id,
        "endpoint": record.endpoint,
        "balancer": record.serving_name if record.balancer_id is not None else "",
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
    trace_id = tracing.current_trace_id()
    if trace_id:
        values["trace_id"] = trace_id
    return values


def observe(record: UsageRecord) -> None:
    if _listener is None:
        _start()  # in the first process that records (the gateway's), not in every manage.py
    if settings.GATEWAY_LOG_FORMAT == "json":
        logger.info("request", extra=fields(record))
        return
    values = fields(record)
    logger.info("%s %s %s balancer=%s route=%s instance=%s attempts=%s latency_ms=%s ttfb_ms=%s tokens=%s/%s "
                "cost_usd=%s decision=%s error=%s request_id=%s", values["endpoint"], values["status"],
                "stream" if values["stream"] else "whole", values["balancer"] or "-", values["route"] or "-",
                values["instance"] or "-", values["attempts"], values["latency_ms"], values["ttfb_ms"],
                values["prompt_tokens"], values["completion_tokens"], values["cost_usd"],
                values["decision"] or "-", values["error"] or "-", values["request_id"])


def install() -> None:
    """Log every usage event (gateway.apps), when GATEWAY_REQUEST_LOG is on."""
    if settings.GATEWAY_REQUEST_LOG and observe not in recorder.observers:
        recorder.observers.append(observe)
