"""OpenTelemetry traces: a span per /v1 request, a child span per attempt on an instance.

Off unless configured by the standard variables: OTEL_TRACES_EXPORTER (`otlp`, `console`;
`none` turns it off) or an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTLP over HTTP/protobuf); OTEL_SDK_DISABLED=true wins.
The SDK reads the rest itself (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, the exporter's
headers and timeouts, OTEL_TRACES_SAMPLER, the batch processor's sizes). Off, the request
path pays one boolean test per request and per attempt.

The caller's W3C `traceparent` (and `tracestate`) makes the request span a child of the
caller's; each attempt span's context goes to the instance in the `traceparent` header
(gateway/upstream/openai_compat.py and anthropic.py add `upstream_headers()`).

Attributes follow the GenAI semantic conventions: gen_ai.operation.name (chat,
embeddings), gen_ai.system (the instance's provider), gen_ai.request.model (the serving
name the client asked for), gen_ai.response.model (the model the instance ran),
gen_ai.usage.input_tokens / output_tokens; plus the balancer's own (smart_balancers.*:
balancer, route, instance, decision, attempts, request id) and http.response.status_code.
The request span ends when the usage event is made (a stream's at its end); an attempt
span ends when the instance's answer (a stream's first event) or its failure arrives.
"""

from __future__ import annotations

import contextvars
import logging
import os
from typing import Any

from gateway.hotpath.usage import UsageRecord, recorder

logger = logging.getLogger(__name__)

_request_span: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "gateway_request_span", default=None
)
_attempt_span: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "gateway_attempt_span", default=None
)
_tracer: Any = None
enabled = False  # read on the request path: a span is made only when a tracer is set up


def configured(environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The exporter the OTEL_* variables ask for (`otlp`, `console`), or None: tracing off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [
        n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()
    ]
    if names:
        return None if names[0] == "none" else names[0]
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        return "otlp"
    return None


def setup() -> None:
    """Make the tracer when the environment asks for one (gateway.apps, once per process)."""
    exporter_name = configured()
    if exporter_name is None:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    elif exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        logger.error(
            "OTEL_TRACES_EXPORTER=%s is not supported (otlp, console, none): tracing stays off",
            exporter_name,
        )
        return
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or "smart-balancers"}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    use(provider)


def use(provider: Any) -> None:
    """Trace with this TracerProvider (setup(), and tests with the SDK's in-memory exporter)."""
    global _tracer, enabled
    _tracer = provider.get_tracer("smart_balancers.gateway") if provider is not None else None
    enabled = _tracer is not None
    if enabled and observe not in recorder.observers:
        recorder.observers.append(observe)
    elif not enabled and observe in recorder.observers:
        recorder.observers.remove(observe)


def start_request(headers: dict[str, str]) -> Any:
    """The request's span, child of the caller's traceparent (when it sent one); current from
    now."""
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract(headers) if "traceparent" in headers else None
    span = _tracer.start_span("gateway.request", context=parent, kind=SpanKind.SERVER)
    _request_span.set(span)
    return span


def finish(span: Any) -> None:
    """End the request's span if its usage event did not (an answer that made none)."""
    if span.is_recording():
        span.end()
    if _request_span.get() is span:
        _request_span.set(None)


def current_trace_id() -> str:
    span = _request_span.get()
    if span is None:
        return ""
    return format(span.get_span_context().trace_id, "032x")


def start_attempt(instance: Any, endpoint: str, model: str) -> Any:
    """A child span of the request's for one call to an instance (None when not tracing)."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    parent = _request_span.get()
    if parent is None:
        return None
    span = _tracer.start_span(
        f"{endpoint} {model}",
        context=trace.set_span_in_context(parent),
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": endpoint,
            "gen_ai.system": instance.provider,
            "gen_ai.request.model": model,
            "smart_balancers.instance": instance.instance_id,
            "server.address": _host(instance.base_url),
        },
    )
    _attempt_span.set(span)
    return span


def end_attempt(span: Any, *, failure: Any = None) -> None:
    from opentelemetry.trace import StatusCode

    if failure is not None:
        span.set_attribute("error.type", failure.kind)
        if failure.status:
            span.set_attribute("http.response.status_code", failure.status)
        span.set_status(StatusCode.ERROR, failure.kind)
    span.end()
    if _attempt_span.get() is span:
        _attempt_span.set(None)


def upstream_headers() -> dict[str, str]:
    """`traceparent` (and `tracestate`) of the current attempt, for the instance's request."""
    span = _attempt_span.get() if enabled else None
    if span is None:
        return {}
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def observe(record: UsageRecord) -> None:
    """The usage event is made: the request's span gets its attributes and ends."""
    span = _request_span.get()
    if span is None or not span.is_recording():
        return
    from opentelemetry.trace import StatusCode

    operation = (
        record.endpoint
    )  # chat, embeddings: the GenAI names; models, explain, unknown otherwise
    if record.serving_name:
        span.update_name(f"{operation} {record.serving_name}")
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": record.serving_name,
        "gen_ai.usage.input_tokens": record.prompt_tokens,
        "gen_ai.usage.output_tokens": record.completion_tokens,
        "http.response.status_code": record.status_code,
        "smart_balancers.request_id": record.request_id,
        "smart_balancers.attempts": record.attempts,
    }
    if record.model:
        attributes["gen_ai.response.model"] = record.model
    provider = _provider_of(record.instance)
    if provider:
        attributes["gen_ai.system"] = provider
    for name, value in (
        ("balancer", record.balancer_label),
        ("route", record.route),
        ("instance", record.instance),
        ("decision", record.decision_reason),
    ):
        if value:
            attributes[f"smart_balancers.{name}"] = value
    if record.error_type:
        attributes["error.type"] = record.error_type
    span.set_attributes(attributes)
    if record.status_code >= 500:
        span.set_status(StatusCode.ERROR, record.error_type or str(record.status_code))
    span.end()


def _provider_of(instance_id: str) -> str:
    if not instance_id:
        return ""
    from gateway.hotpath.snapshot import holder

    config = holder.peek()
    if config is None:
        return ""
    for spec in config.instances.values():
        if spec.instance_id == instance_id:
            return spec.provider
    return ""


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""
