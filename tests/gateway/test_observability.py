"""Observability: /metrics summed over the workers, a JSON log line per request, OTel traces."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import make_api_key, make_balancer
from tests.live_server import LiveGateway
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-scrape-token-for-the-test"


@pytest.fixture
def two_workers(transactional_db: Any) -> Iterator[LiveGateway]:
    server = LiveGateway(
        workers=2, extra_env={"GATEWAY_METRICS_TOKEN": TOKEN, "GATEWAY_LOG_FORMAT": "json"}
    )
    yield server
    server.stop()


def scrape(server: LiveGateway) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = httpx.get(
        server.base_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def total(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(value for have, value in samples if all(have.get(k) == v for k, v in labels.items()))


def test_metrics_sum_both_workers_and_log_one_json_line_per_request(setup, two_workers):
    server = two_workers
    primary = setup.instance("obs-a", Behaviour(status=500))
    fallback = setup.instance("obs-b")
    setup.failover_balancer(primary, fallback, serving_name="observed")
    _, secret = make_api_key()
    server.wait_for_config()
    body = {"model": "observed", "messages": [{"role": "user", "content": "a prompt never logged"}]}
    sent = 40
    for n in range(sent):  # a new connection each: both workers answer some
        response = httpx.post(
            server.v1 + "/chat/completions",
            json=body,
            timeout=10,
            headers={"Authorization": f"Bearer {secret}", "X-Request-Id": f"obs-{n}"},
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-balancer-instance"] == fallback.instance_id
    rejected = 5
    for n in range(rejected):
        response = httpx.post(
            server.v1 + "/chat/completions",
            json=body,
            timeout=10,
            headers={"Authorization": "Bearer not-a-key", "X-Request-Id": f"bad-{n}"},
        )
        assert response.status_code == 401
    # A client sending an upstream key as its request id: the log must not carry it either.
    httpx.post(
        server.v1 + "/chat/completions",
        json=body,
        timeout=10,
        headers={"Authorization": f"Bearer {secret}", "X-Request-Id": "upstream-secret-obs-a"},
    )
    sent += 1

    deadline = time.monotonic() + 10
    while True:  # each worker writes its counts and gauges on its config poll tick (0.1 s here)
        metrics = scrape(server)
        pids = {labels["pid"] for labels, _ in metrics["gateway_worker_config_version"]}
        if (
            len(pids) == 2 and total(metrics["gateway_requests_total"], status="200") == sent
        ) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(pids) == 2, "both workers report their config version"
    requests = metrics["gateway_requests_total"]
    assert (
        total(
            requests,
            balancer="observed",
            status="200",
            route="fallback",
            instance=fallback.instance_id,
            endpoint="chat",
            decision="ordered",
        )
        == sent
    )
    assert total(requests, status="401", endpoint="chat") == rejected
    assert all("pid" not in labels for labels, _ in requests), "counters are the server's totals"
    assert (
        total(metrics["gateway_rejected_requests_total"], endpoint="chat", status="401") == rejected
    )
    attempts = metrics["gateway_upstream_attempts_total"]
    failed = total(
        attempts, instance=primary.instance_id
    )  # until its circuit opened, in each worker
    assert failed >= 1 and total(metrics["gateway_fallbacks_total"], balancer="observed") == failed
    assert total(attempts, instance=fallback.instance_id, outcome="ok") == sent
    assert total(metrics["gateway_request_duration_seconds_count"], balancer="observed") == sent
    assert total(metrics["gateway_time_to_first_token_seconds_count"], balancer="observed") == sent
    assert total(metrics["gateway_tokens_total"], balancer="observed", type="input") > 0
    assert total(metrics["gateway_tokens_total"], balancer="observed", type="output") > 0
    assert total(metrics["gateway_instance_healthy"], instance=fallback.instance_id) == 1
    assert {labels["pid"] for labels, _ in metrics["gateway_worker_usage_backlog"]} == pids
    assert {
        labels["pid"] for labels, _ in metrics["gateway_worker_config_refresh_age_seconds"]
    } == pids
    # No label carries a request id, a key or the prompt.
    text = httpx.get(
        server.base_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    ).text
    for leak in ('obs-1"', "bad-", secret, "upstream-secret", "a prompt never logged"):
        assert leak not in text

    time.sleep(0.5)  # the log thread writes the last lines
    log = server.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    by_id = defaultdict(list)
    for line in lines:
        if line.get("logger") == "gateway.requests":
            by_id[line["request_id"]].append(line)
    for n in range(sent - 1):
        assert len(by_id[f"obs-{n}"]) == 1, f"one line for obs-{n}"
    line = by_id["obs-0"][0]  # the first: the primary was tried before its circuit opened
    assert line["balancer"] == "observed" and line["route"] == "fallback"
    assert (
        line["instance"] == fallback.instance_id and line["status"] == 200 and line["attempts"] == 2
    )
    assert line["latency_ms"] > 0 and line["ttfb_ms"] > 0 and line["prompt_tokens"] > 0
    assert line["completion_tokens"] > 0 and "cost_usd" in line and line["level"] == "INFO"
    assert len(by_id["bad-3"]) == 1 and by_id["bad-3"][0]["status"] == 401
    assert "upstream-secret" not in log, "no upstream key in the log, even sent as a request id"
    assert secret not in log and "a prompt never logged" not in log


def test_metrics_are_refused_without_the_token(two_workers):
    url = two_workers.base_url + "/metrics"
    refused = httpx.get(url, timeout=5)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_metrics_token"
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    assert (
        httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).status_code == 200
    )


def test_metrics_without_a_token_are_served_to_loopback_only(settings, rf):
    from gateway.hotpath.metrics import allowed

    settings.GATEWAY_METRICS_TOKEN = ""
    settings.GATEWAY_METRICS_ALLOW_NETWORKS = []
    assert allowed(rf.get("/metrics", REMOTE_ADDR="127.0.0.1")) is None
    assert allowed(rf.get("/metrics", REMOTE_ADDR="10.1.2.3")).status == 403
    settings.GATEWAY_METRICS_ALLOW_NETWORKS = ["10.0.0.0/8"]
    assert allowed(rf.get("/metrics", REMOTE_ADDR="10.1.2.3")) is None
    assert allowed(rf.get("/metrics", REMOTE_ADDR="127.0.0.1")).status == 403


@pytest.fixture
def spans() -> Iterator[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gateway.hotpath import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)


def test_a_request_makes_a_span_tree_with_genai_attributes_and_passes_the_trace_on(
    upstream, spans, settings
):
    from gateway.hotpath.asgi import GatewayASGIHandler
    from tests.factories import make_instance

    settings.ALLOWED_HOSTS = ["*"]
    upstream.behaviours["trace-down"] = Behaviour(status=503)
    upstream.behaviours["trace-up"] = Behaviour()
    down = make_instance(
        provider="openai",
        base_url=upstream.base_url,
        model="trace-down",
        api_key="upstream-secret-t1",
    )
    up = make_instance(
        provider="openai",
        base_url=upstream.base_url,
        model="trace-up",
        api_key="upstream-secret-t2",
    )
    make_balancer(
        serving_name="traced",
        routes=[
            {"name": "first", "intent": "x", "instance": down, "priority": 1, "is_default": True},
            {"name": "second", "intent": "y", "instance": up, "priority": 2},
        ],
    )
    _, secret = make_api_key()
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{caller_trace}-00f067aa0ba902b7-01"

    async def call() -> httpx.Response:
        from gateway.hotpath.snapshot import holder

        # This test's rows are never committed (no version bump): rebuild the process's snapshot
        # from them, or a snapshot an earlier test built here would not know the key.
        await holder.refresh(force=True)
        transport = httpx.ASGITransport(app=GatewayASGIHandler())
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post(
                "/v1/chat/completions",
                headers={
                    "Authorization": f"Bearer {secret}",
                    "traceparent": traceparent,
                },
                json={"model": "traced", "messages": [{"role": "user", "content": "hi"}]},
            )

    response = asyncio.run(call())
    assert response.status_code == 200, response.text
    finished = spans.get_finished_spans()
    [root] = [s for s in finished if s.kind.name == "SERVER"]
    children = [
        s for s in finished if s.parent is not None and s.parent.span_id == root.context.span_id
    ]
    assert root.context.trace_id == int(caller_trace, 16), "the caller's trace goes on"
    assert root.parent.span_id == 0x00F067AA0BA902B7
    assert root.name == "chat traced"
    attrs = root.attributes
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "traced"
    assert attrs["gen_ai.response.model"] == "trace-up" and attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["smart_balancers.attempts"] == 2 and attrs["http.response.status_code"] == 200
    assert [
        c.attributes["gen_ai.request.model"] for c in sorted(children, key=lambda s: s.start_time)
    ] == ["trace-down", "trace-up"]
    assert [c.status.status_code.name for c in sorted(children, key=lambda s: s.start_time)] == [
        "ERROR",
        "UNSET",
    ]
    # The upstream saw each attempt's own span as its parent, in the caller's trace.
    received = [tp for tp in upstream.traceparents if tp]
    assert len(received) == 2
    assert {tp.split("-")[2] for tp in received} == {
        format(c.context.span_id, "016x") for c in children
    }
    assert all(tp.split("-")[1] == caller_trace for tp in received)


def test_tracing_is_off_unless_the_otel_variables_ask_for_it():
    from gateway.hotpath.tracing import configured

    assert configured({}) is None
    assert configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == "otlp"
    assert configured({"OTEL_TRACES_EXPORTER": "console"}) == "console"
    assert (
        configured({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
        is None
    )
    assert configured({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is None


def test_counts_wait_for_the_tick_and_land_in_the_right_buckets():
    from datetime import UTC, datetime

    from prometheus_client import REGISTRY

    from gateway.hotpath import metrics
    from gateway.hotpath.usage import UsageRecord

    def value(name: str, **labels: str) -> float:
        return (
            REGISTRY.get_sample_value(
                name,
                {
                    "endpoint": "chat",
                    "balancer": "buckets",
                    "route": "r",
                    "instance": "i",
                    **labels,
                },
            )
            or 0.0
        )

    before = value("gateway_request_duration_seconds_bucket", le="0.05")
    for latency_ms in (10, 50, 50.001, 3000):
        metrics.observe(
            UsageRecord(
                created_at=datetime.now(UTC),
                request_id="x",
                endpoint="chat",
                status_code=200,
                latency_ms=latency_ms,
                balancer_id=1,
                serving_name="buckets",
                route="r",
                instance="i",
                decision_reason="weighted",
            )
        )
    assert value("gateway_requests_total", status="200", decision="weighted") == 0, (
        "not before the tick"
    )
    metrics.flush()
    assert value("gateway_requests_total", status="200", decision="weighted") == 4
    assert (
        value("gateway_request_duration_seconds_bucket", le="0.05") - before == 2
    )  # 10 ms and exactly 50 ms
    assert value("gateway_request_duration_seconds_bucket", le="0.1") - before == 3
    assert value("gateway_request_duration_seconds_bucket", le="+Inf") - before == 4
    assert value("gateway_request_duration_seconds_sum") == pytest.approx(3.110001)


def test_goal_names_label_logs_and_metrics_but_an_unknown_model_does_not():
    from datetime import UTC, datetime

    from prometheus_client import REGISTRY

    from gateway.hotpath import accesslog, metrics
    from gateway.hotpath.usage import UsageRecord

    def record(
        serving_name: str,
    ) -> UsageRecord:  # no balancer row: a goal name, or a model nobody serves
        return UsageRecord(
            created_at=datetime.now(UTC),
            request_id="g",
            endpoint="chat",
            status_code=200,
            latency_ms=5,
            serving_name=serving_name,
            route="auto",
            instance="i-goal",
            decision_reason="auto:cost",
        )

    assert accesslog.fields(record("auto-cheap"))["balancer"] == "auto-cheap"
    assert accesslog.fields(record("made-up-model"))["balancer"] == ""
    metrics.observe(record("auto-cheap"))
    metrics.flush()
    assert (
        REGISTRY.get_sample_value(
            "gateway_requests_total",
            {
                "endpoint": "chat",
                "balancer": "auto-cheap",
                "route": "auto",
                "instance": "i-goal",
                "status": "200",
                "decision": "auto",
            },
        )
        == 1
    )


def test_the_json_request_log_carries_the_prompt_only_for_a_balancer_that_keeps_prompts(
    setup, gateway
):
    """The session's gateway runs on PostgreSQL, as under `make serve`: JSON lines by default."""
    kept, spare = setup.instance("lp-kept"), setup.instance("lp-spare")
    setup.failover_balancer(kept, spare, serving_name="keeps-prompts", log_prompts=True)
    setup.failover_balancer(kept, spare, serving_name="keeps-none")
    _, secret = make_api_key()
    gateway.wait_for_config()
    prompt = "remember this prompt; the key is upstream-secret-lp-kept, keep it out"
    for model in ("keeps-prompts", "keeps-none"):
        response = httpx.post(
            gateway.v1 + "/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": prompt}]},
            timeout=10,
            headers={"Authorization": f"Bearer {secret}", "X-Request-Id": f"lp-{model}"},
        )
        assert response.status_code == 200, response.text
    lines: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 5
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # the log thread writes the lines
        for line in gateway.log().splitlines():
            if line.startswith("{") and '"lp-keeps-' in line:
                record = json.loads(line)
                lines[record["request_id"]] = record
    logged = lines["lp-keeps-prompts"]["prompt"]
    assert logged.startswith("remember this prompt; the key is ") and "[redacted]" in logged
    assert "upstream-secret" not in logged, "the scrubber still runs over a logged prompt"
    assert "prompt" not in lines["lp-keeps-none"]
    assert "remember this prompt" not in json.dumps(lines["lp-keeps-none"])


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [("", "text"), ("postgres://postgres@127.0.0.1:5432/unused", "json")],
    ids=["make-run", "make-serve"],
)
def test_the_log_format_is_text_under_make_run_and_json_under_make_serve(
    database_url: str, expected: str, tmp_path: Any
) -> None:
    """`make run` sets no DATABASE_URL (SQLite, embedded); `make serve` and compose do."""
    import os
    import re
    import subprocess
    import sys

    from django.conf import settings

    from tests.live_server import ROOT

    makefile = (ROOT / "Makefile").read_text()
    recipes = dict(re.findall(r"^(run|serve): .*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE))
    for target in ("run", "serve"):  # neither recipe picks a format or a database itself
        assert "GATEWAY_LOG_FORMAT" not in recipes[target]
        assert "DATABASE_URL" not in recipes[target]
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "GATEWAY_LOG_FORMAT", "TEST_DATABASE_NAME")
        and not name.startswith("DJANGO_")
    }
    env |= {"VAR_DIR": str(tmp_path), "SECRET_KEY": settings.SECRET_KEY + "-log-format-test"}
    if database_url:
        env["DATABASE_URL"] = database_url
    script = (
        "import django, logging; django.setup()\n"
        "from django.conf import settings\n"
        "from gateway.hotpath import accesslog\n"
        "print(settings.GATEWAY_LOG_FORMAT, type(accesslog.formatter().inner).__name__)\n"
        "logging.getLogger('gateway.check').warning('a log line')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    fmt, request_formatter = done.stdout.split()
    assert fmt == expected
    line = done.stderr.strip().splitlines()[-1]
    if expected == "json":
        assert request_formatter == "OrjsonFormatter"
        assert json.loads(line)["message"] == "a log line"
    else:
        assert request_formatter == "Formatter"
        assert line.endswith("WARNING gateway.check a log line") and not line.startswith("{")


PROBE = "from gateway.tasks import probe_instances; probe_instances()"


def test_rate_limits_cooldowns_probes_cost_and_router_decisions_reach_metrics(setup, two_workers):
    """The metrics the first test leaves out, after traffic through both workers."""
    from tests.gateway.test_routing_decisions import classifier_balancer
    from tests.live_server import ROOT, database_url

    server = two_workers
    primary = setup.instance("met-a", Behaviour(status=500))
    fallback = setup.instance("met-b")
    setup.failover_balancer(primary, fallback, serving_name="metered")
    classifier_balancer(setup, Behaviour(content="reasoning"), serving_name="met-cls")
    _, secret = make_api_key()
    _, limited = make_api_key(rate_limit_per_minute=2)
    server.wait_for_config()

    def post(model: str, key: str, content: str = "hello") -> httpx.Response:
        return httpx.post(
            server.v1 + "/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": content}]},
            timeout=10,
            headers={"Authorization": f"Bearer {key}"},
        )

    for _ in range(10):  # until the primary's circuit opens in both workers
        assert post("metered", secret).status_code == 200
    classified = 4
    for n in range(classified):  # different prompts: each one a router decision of its own
        response = post("met-cls", secret, f"Prove that {n} is a number.")
        assert response.headers["x-balancer-decision"] == "classified", response.text
    statuses = [post("metered", limited).status_code for _ in range(5)]
    refused = statuses.count(429)
    assert refused >= 3 and set(statuses) == {200, 429}, statuses
    # The probe job, as a Celery worker runs it, in a process of its own: results in the database.
    probed = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", PROBE],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url(), "TEST_DATABASE_NAME": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probed.returncode == 0, probed.stderr

    deadline = time.monotonic() + 10
    while True:
        metrics = scrape(server)
        decisions = total(
            metrics["gateway_router_decision_seconds_count"],
            balancer="met-cls",
            decision="classified",
        )
        limited_count = total(metrics["gateway_rate_limited_requests_total"], balancer="metered")
        if (decisions == classified and limited_count == refused) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert limited_count == refused
    assert decisions == classified
    assert (
        total(metrics["gateway_router_decision_seconds_bucket"], balancer="met-cls", le="+Inf")
        == classified
    )
    assert total(metrics["gateway_router_decision_seconds_sum"], balancer="met-cls") > 0
    # Priced instances (tests/factories.py: $0.50 / $1.50 per million tokens): a cost per request.
    cost = total(
        metrics["gateway_cost_usd_total"], balancer="metered", instance=fallback.instance_id
    )
    assert cost > 0
    # The failing primary is cooling down: its circuit is not closed, seconds of cooldown are left.
    assert total(metrics["gateway_instance_healthy"], instance=primary.instance_id) == 0
    assert total(metrics["gateway_instance_cooldown_seconds"], instance=primary.instance_id) > 0
    states = {
        labels["state"]: value
        for labels, value in metrics["gateway_instance_circuit_state"]
        if labels["instance"] == primary.instance_id
    }
    assert states == {"cooling": 1.0}
    assert total(metrics["gateway_instance_cooldown_seconds"], instance=fallback.instance_id) == 0
    assert (
        total(
            metrics["gateway_instance_circuit_state"],
            instance=fallback.instance_id,
            state="healthy",
        )
        == 1
    )
    # The probe's results: both answered GET /models (the primary's failures are its chat answers).
    for instance in (primary, fallback):
        name = instance.instance_id
        assert total(metrics["gateway_instance_probe_up"], instance=name, status="healthy") == 1
        assert 0 < total(metrics["gateway_instance_probe_latency_seconds"], instance=name) < 10
        assert 0 <= total(metrics["gateway_instance_probe_age_seconds"], instance=name) < 60


DROP_SCRIPT = """
import json, time
from datetime import UTC, datetime
import django
django.setup()
from prometheus_client import REGISTRY
from gateway.hotpath import metrics
from gateway.hotpath.usage import UsageRecorder, UsageRecord

def record(n):
    return UsageRecord(created_at=datetime.now(UTC), request_id=f"drop-{n}", endpoint="chat",
                       status_code=200, latency_ms=5)

recorder = metrics.recorder = UsageRecorder(max_buffer=3, flush_seconds=0.05)
for n in range(3):
    recorder.record(record(n))
deadline = time.monotonic() + 10
while recorder.failures == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
for n in range(3, 8):
    recorder.record(record(n))
failed = recorder.failures
while recorder.failures == failed and time.monotonic() < deadline + 10:
    time.sleep(0.05)
recorder._stop.set()  # the writer stops after its next attempt, which fails too: all 8 unwritten
recorder._wake.set()
recorder._thread.join(10)
metrics.update_worker_gauges()
print(json.dumps({
    "failures": recorder.failures, "dropped": recorder.dropped, "pending": recorder.pending,
    "gauge_dropped": REGISTRY.get_sample_value("gateway_worker_usage_dropped"),
    "gauge_backlog": REGISTRY.get_sample_value("gateway_worker_usage_backlog"),
}))
"""


def test_usage_events_dropped_while_the_database_is_down_reach_the_worker_gauge(
    tmp_path: Any,
) -> None:
    """A worker process with a small buffer whose database (a PostgreSQL of the test's own) is
    stopped: the events past the buffer are dropped, and /metrics' gauge says how many."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    from tests.fault_servers import own_postgres
    from tests.live_server import ROOT

    with own_postgres() as postgres:
        postgres.stop()
        env = {
            name: value
            for name, value in os.environ.items()
            if name not in ("TEST_DATABASE_NAME", "PROMETHEUS_MULTIPROC_DIR")
        }
        env |= {
            "DATABASE_URL": postgres.url("gone"),
            "SECRET_KEY": settings.SECRET_KEY,
            "VAR_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "config.settings",
        }
        done = subprocess.run(
            [sys.executable, "-c", DROP_SCRIPT],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failures"] >= 1, "the writer met the stopped database"
    assert result["dropped"] == 5 and result["pending"] == 3
    assert result["gauge_dropped"] == 5 and result["gauge_backlog"] == 3
    assert "usage buffer full: 1 events dropped so far" in done.stderr
