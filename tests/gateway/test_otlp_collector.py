"""Traces over OTLP/HTTP to a real receiver: the gateway process exports what a collector gets.

The gateway runs as `make serve` runs it (uvicorn, its own process) with only the standard
OTEL_EXPORTER_OTLP_ENDPOINT set; the receiver below is an HTTP server on loopback that speaks
the collector's side of OTLP/HTTP (POST /v1/traces, protobuf in, protobuf out) and decodes each
export with opentelemetry-proto, so the test reads the span tree as a collector would store it.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.factories import make_api_key, make_balancer, make_instance
from tests.live_server import LiveGateway
from tests.upstream_server import Behaviour, FakeUpstream

pytestmark = pytest.mark.django_db(transaction=True)


class OtlpReceiver:
    """POST /v1/traces as an OpenTelemetry Collector's otlphttp receiver answers it."""

    def __init__(self) -> None:
        self.exports: list[ExportTraceServiceRequest] = []
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers) of every POST
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with receiver._lock:
                    receiver.requests.append((self.path, dict(self.headers.items())))
                if (
                    self.path != "/v1/traces"
                    or self.headers.get("Content-Type") != "application/x-protobuf"
                ):
                    self.send_response(404)
                    self.end_headers()
                    return
                export = ExportTraceServiceRequest()
                export.ParseFromString(body)
                with receiver._lock:
                    receiver.exports.append(export)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def spans(self, trace_id: bytes) -> list[tuple[dict[str, Any], Span]]:
        """Every span of this trace received so far, with its resource's attributes."""
        found = []
        with self._lock:
            for export in self.exports:
                for resource_spans in export.resource_spans:
                    resource = attributes(resource_spans.resource.attributes)
                    for scope_spans in resource_spans.scope_spans:
                        found += [
                            (resource, s) for s in scope_spans.spans if s.trace_id == trace_id
                        ]
        return found

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attributes(items: Any) -> dict[str, Any]:
    return {item.key: value(item.value) for item in items}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    yield server
    server.stop()


@pytest.fixture
def traced_gateway(receiver: OtlpReceiver, transactional_db: Any) -> Iterator[LiveGateway]:
    server = LiveGateway(
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,  # the SDK adds /v1/traces
            "OTEL_SERVICE_NAME": "gateway-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms between the batch processor's exports
        }
    )
    yield server
    server.stop()


def test_the_gateway_process_exports_its_span_tree_over_otlp_to_a_collector(
    upstream: FakeUpstream, receiver: OtlpReceiver, traced_gateway: LiveGateway
) -> None:
    upstream.behaviours["otlp-down"] = Behaviour(status=503)
    upstream.behaviours["otlp-up"] = Behaviour()
    down = make_instance(
        provider="openai",
        base_url=upstream.base_url,
        model="otlp-down",
        api_key="upstream-secret-otlp-1",
    )
    up = make_instance(
        provider="openai",
        base_url=upstream.base_url,
        model="otlp-up",
        api_key="upstream-secret-otlp-2",
    )
    make_balancer(
        serving_name="exported",
        routes=[
            {"name": "first", "intent": "x", "instance": down, "priority": 1, "is_default": True},
            {"name": "second", "intent": "y", "instance": up, "priority": 2},
        ],
    )
    _, secret = make_api_key()
    traced_gateway.wait_for_config()
    caller_trace, caller_span = "5af7183fb1d4cf5f0a1b2c3d4e5f6a7b", "b7ad6b7169203331"
    response = httpx.post(
        traced_gateway.v1 + "/chat/completions",
        headers={
            "Authorization": f"Bearer {secret}",
            "traceparent": f"00-{caller_trace}-{caller_span}-01",
            "X-Request-Id": "otlp-request-1",
        },
        json={
            "model": "exported",
            "messages": [{"role": "user", "content": "a prompt for no collector"}],
        },
        timeout=20,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-balancer-instance"] == up.instance_id

    trace_id = bytes.fromhex(caller_trace)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the batch processor exports every 100 ms
        received = receiver.spans(trace_id)
        if len(received) >= 3:
            break
        time.sleep(0.1)
    assert receiver.requests, "the gateway never called the receiver"
    assert {path for path, _ in receiver.requests} == {"/v1/traces"}
    assert len(received) == 3, [s.name for _, s in received]

    [(resource, root)] = [(r, s) for r, s in received if s.kind == Span.SPAN_KIND_SERVER]
    attempts = sorted(
        (s for _, s in received if s.kind == Span.SPAN_KIND_CLIENT),
        key=lambda s: s.start_time_unix_nano,
    )
    assert resource["service.name"] == "gateway-under-test"
    # The caller's trace goes on: the request span is the child of the caller's span.
    assert root.parent_span_id == bytes.fromhex(caller_span)
    assert root.name == "chat exported"
    attrs = attributes(root.attributes)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "exported"
    assert attrs["gen_ai.response.model"] == "otlp-up"
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["http.response.status_code"] == 200
    assert attrs["smart_balancers.attempts"] == 2
    assert attrs["smart_balancers.balancer"] == "exported"
    assert attrs["smart_balancers.route"] == "second"
    assert attrs["smart_balancers.instance"] == up.instance_id
    assert attrs["smart_balancers.request_id"] == "otlp-request-1"
    # One child span per attempt, in order: the failed one marked as an error.
    assert len(attempts) == 2
    assert all(a.parent_span_id == root.span_id for a in attempts)
    assert [attributes(a.attributes)["gen_ai.request.model"] for a in attempts] == [
        "otlp-down",
        "otlp-up",
    ]
    assert [a.status.code for a in attempts] == [Status.STATUS_CODE_ERROR, Status.STATUS_CODE_UNSET]
    assert attributes(attempts[0].attributes)["http.response.status_code"] == 503
    assert all(root.start_time_unix_nano <= a.start_time_unix_nano for a in attempts)
    assert all(a.end_time_unix_nano <= root.end_time_unix_nano for a in attempts)
    # Each upstream call carried its own attempt span as parent, in the caller's trace.
    sent = [tp for tp in upstream.traceparents if tp]
    assert [tp.split("-")[1] for tp in sent] == [caller_trace, caller_trace]
    assert [tp.split("-")[2] for tp in sent] == [a.span_id.hex() for a in attempts]
    # Nothing secret travels to the collector.
    exported = b"".join(e.SerializeToString() for e in receiver.exports)
    for secret_text in (secret, "upstream-secret-otlp", "a prompt for no collector"):
        assert secret_text.encode() not in exported
