"""The benchmark harness's own parts (bench/): the mock upstream speaks OpenAI's protocol, the
TTFB client reads its streams, the profile summary adds up. No timings here: `make bench-smoke`
runs the whole pipeline, and `make bench` measures."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from bench import ttfb
from bench.profile_summary import summarise

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mock_url() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "mock_upstream.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{base}/_mock/config", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            pytest.fail(
                "the mock upstream did not start: "
                f"{proc.stderr.read().decode() if proc.stderr else ''}"
            )
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def knobs(mock_url: str) -> Iterator[object]:
    def set_knobs(**values: object) -> dict:
        return httpx.post(f"{mock_url}/_mock/config", json=values, timeout=5).json()

    yield set_knobs
    set_knobs(latency_ms=0, chunks=8, chunk_delay_ms=0)


def test_the_mock_answers_the_openai_sdk(mock_url: str) -> None:
    client = OpenAI(base_url=f"{mock_url}/v1", api_key="sk-mock", max_retries=0)
    reply = client.chat.completions.create(
        model="m-1", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.model == "m-1"
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.total_tokens > 0


def test_the_mock_streams_every_chunk_in_order_with_usage_when_asked(mock_url: str, knobs) -> None:
    knobs(chunks=5, chunk_delay_ms=1)
    client = OpenAI(base_url=f"{mock_url}/v1", api_key="sk-mock", max_retries=0)
    for _ in range(5):  # timers set all at once used to deliver chunks out of order
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "This is a mock completion"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_the_mock_latency_knob_delays_the_answer(mock_url: str, knobs) -> None:
    assert knobs(latency_ms=120)["latency_ms"] == 120
    started = time.monotonic()
    response = httpx.post(
        f"{mock_url}/v1/chat/completions", json={"model": "m", "messages": []}, timeout=5
    )
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.1


def test_the_mock_refuses_a_body_without_messages(mock_url: str) -> None:
    response = httpx.post(f"{mock_url}/v1/chat/completions", content=b"not json", timeout=5)
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_the_ttfb_client_reads_whole_streams_on_one_connection(mock_url: str, knobs) -> None:
    knobs(chunks=4, chunk_delay_ms=2)
    result = asyncio.run(
        ttfb.run(
            f"{mock_url}/v1/chat/completions", "m", "k", requests=10, warmup=1, request_timeout=10
        )
    )
    assert result["requests"] == 10
    assert result["non_2xx"] == 0 and result["socket_errors"] == 0
    assert result["stream_ok"]
    assert 0 < result["ttfb_p50_ms"] < result["total_p50_ms"]


def test_the_ttfb_client_counts_error_answers(mock_url: str) -> None:
    result = asyncio.run(
        ttfb.run(f"{mock_url}/v1/nowhere", "m", "k", requests=3, warmup=0, request_timeout=10)
    )
    assert result["requests"] == 0
    assert result["non_2xx"] == 3


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed (apt-get install -y wrk)")
def test_wrk_with_post_lua_reports_requests_and_errors(mock_url: str) -> None:
    from bench.run import Target, wrk_point

    ok = wrk_point(Target("direct", f"{mock_url}/v1/chat/completions", "m", "k"), 2, 1)
    assert ok["requests"] > 0 and ok["non_2xx"] == 0 and ok["socket_errors"] == 0
    bad = wrk_point(Target("direct", f"{mock_url}/v1/nowhere", "m", "k"), 1, 1)
    assert bad["non_2xx"] == bad["requests"] > 0


def test_the_profile_summary_charges_self_and_inclusive_time() -> None:
    start = (
        "_run_module_as_main (<frozen runpy>:198);main (uvicorn/main.py:448);Runner.run "
        "(asyncio/runners.py:118)"
    )
    raw = "\n".join(
        [
            f"{start};handle (gateway/hotpath/v1_api.py:10);resolve "
            "(django/urls/resolvers.py:689) 3",
            f"{start};handle (gateway/hotpath/v1_api.py:12);call "
            "(gateway/upstream/openai_compat.py:70);"
            "ClientSession._request (aiohttp/client.py:500) 5",
            f"{start};handle (gateway/hotpath/v1_api.py:10) 2",
            f"{start} 4",
            "garbage line",
        ]
    )
    summary = summarise(raw)
    assert summary["samples"] == 14
    self_fn = dict(summary["self_functions"])
    assert self_fn["resolve (django/urls/resolvers.py)"] == 3
    assert self_fn["handle (gateway/hotpath/v1_api.py)"] == 2
    assert self_fn["(event loop: uvloop's C code, I/O and callbacks) (uvloop)"] == 4
    inclusive = dict(summary["inclusive_functions"])
    assert (
        inclusive["handle (gateway/hotpath/v1_api.py)"] == 10
    )  # once per stack, whatever the line
    assert "main (uvicorn/main.py)" not in inclusive  # start-up frames are trimmed
    assert dict(summary["self_packages"]) == {"django": 3, "aiohttp": 5, "gateway": 2, "uvloop": 4}


def _point(
    rps: float,
    p50: float,
    p99: float,
    non_2xx: int = 0,
    socket_errors: int = 0,
    requests: int = 100,
) -> dict:
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": non_2xx,
        "socket_errors": socket_errors,
        "requests": requests,
    }


def _results(gateway_slow: dict) -> object:
    from bench.run import Results

    res = Results()
    for c, (d, g, ll) in {
        1: (20000, 900, 60),
        32: (25000, 1200, 80),
        64: (25000, 1100, 120),
    }.items():
        res.add(f"c{c}", "direct", _point(d, 0.05, 0.1))
        res.add(f"c{c}", "gateway", _point(g, 1.0 if c == 1 else 30, 4.0 if c == 1 else 60))
        res.add(f"c{c}", "litellm", _point(ll, 15, 30))
    res.add("slow", "direct", _point(1250, 201, 210))
    res.add("slow", "gateway", gateway_slow)
    res.add("ttfb", "direct", _point(0, 0.3, 0.5))
    res.add("ttfb", "gateway", _point(0, 2.5, 4.0))
    return res


def test_the_targets_table_marks_each_target_met_or_not() -> None:
    from bench.run import targets_table

    info = {"targets": ["direct", "gateway", "litellm"], "memory": {"gateway": {"VmHWM": 140.0}}}
    _, rows = targets_table(info, _results(_point(1100, 230, 300, socket_errors=2)))
    verdicts = {r["target"].split(",")[0][:40]: r["ok"] for r in rows}
    assert [r["ok"] for r in rows] == [
        True,  # 1200 / 80 = 15x at 32 connections
        False,  # 1100 / 120 = 9.2x at 64
        True,  # +0.95 ms p50 at 1 connection
        True,  # +3.9 ms p99
        True,  # 1100 / 1250 = 88% of direct
        False,  # 2 socket errors at 256 connections
        False,  # +2.2 ms time to first byte
        True,  # 140 MiB
    ], verdicts


def test_a_smoke_run_fails_on_gateway_errors_or_a_point_with_no_answer() -> None:
    from bench.run import harness_problems

    ok = _results(_point(1100, 230, 300))
    assert harness_problems(ok, {"usage_events": 10}) == []
    broken = _results(_point(0, 0, 0, non_2xx=5, requests=0))
    problems = harness_problems(broken, {"usage_events": 0})
    assert any("gateway at slow: 5 non-2xx" in p for p in problems)
    assert any("no request completed" in p for p in problems)
    assert any("no usage events" in p for p in problems)


def test_a_smoke_run_fails_on_a_cost_point_error_or_a_board_that_did_not_open() -> None:
    from bench.run import harness_problems

    ok = _results(_point(1100, 230, 300))
    board_client = {"boards": 50, "opened": 50, "request_events": 120, "ended_early": 0}
    costs = {
        "baseline": {"gateway": [_point(1000, 30, 60)]},
        "boards": {"gateway": [{**_point(990, 30, 60), "client": board_client}]},
    }
    assert harness_problems(ok, {"usage_events": 10, "costs": costs}) == []
    costs["cache_hit"] = {"gateway": [_point(0, 0, 0, non_2xx=3, requests=0)]}
    costs["boards"]["gateway"][0]["client"] = {
        **board_client,
        "opened": 49,
        "request_events": 0,
        "ended_early": 2,
    }
    problems = harness_problems(ok, {"usage_events": 10, "costs": costs})
    assert "cost point cache_hit: 3 non-2xx, 0 socket errors" in problems
    assert "cost point cache_hit: no request completed" in problems
    assert any(p.startswith("boards: 49 of 50 streams opened") for p in problems)
    assert "boards: no request event reached a board under the load" in problems
    assert "boards: 2 streams ended early" in problems


def test_the_costs_section_compares_each_point_with_its_baseline_of_the_same_rounds() -> None:
    import argparse

    from bench.run import TIMES, make_plan, render_costs

    plan = make_plan(
        argparse.Namespace(
            smoke=True,
            serve=False,
            repeats=0,
            seconds=0,
            slow_seconds=0,
            ttfb_requests=0,
            cost_seconds=0,
            cost_points="",
            boards=50,
            profile_seconds=0,
            no_profile=True,
            no_litellm=True,
            database="",
            redis_url="",
            out="/tmp",
        )
    )
    costs = {
        "baseline": {"gateway": [{**_point(1000, 30, 60), "cpu_us": 900.0, "upstream_share": 1.0}]},
        "observability_off": {
            "gateway": [{**_point(1100, 28, 55), "cpu_us": 820.0, "upstream_share": 1.0}]
        },
        "cache_hit": {
            "gateway": [{**_point(2000, 15, 30), "cpu_us": 450.0, "upstream_share": 0.0}]
        },
    }
    text = "\n".join(render_costs({"costs": costs}, plan))
    off = next(line for line in text.splitlines() if line.startswith("| /metrics"))
    assert f"| 1,100 | 1.100{TIMES} |" in off and "| 820 | -80 |" in off
    hit = next(line for line in text.splitlines() if "every request but the first a hit" in line)
    assert f"| 2,000 | 2.000{TIMES} |" in hit and "| 0.00 |" in hit
    assert "1 connection" not in text, "points not run are left out"


@pytest.fixture
def sse_server() -> Iterator[str]:
    """A board-like SSE endpoint on loopback: 403 without the session cookie, else events."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    port = _free_port()

    async def events(request: web.Request) -> web.StreamResponse:
        if request.cookies.get("sessionid") != "s3cret":
            return web.Response(status=403)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        await response.write(b'event: lanes\ndata: {"lanes": []}\n\n')
        while True:
            await response.write(
                b'event: requests\ndata: {"events": [{"id": 1}, {"id": 2}], "skipped": 3}\n\n'
            )
            await asyncio.sleep(0.05)

    def run() -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_get("/board/events/", events)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()

    import threading

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/board/events/"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _boards(url: str, cookie: str, boards: int) -> tuple[str, dict]:
    import json
    import signal

    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "boards.py"),
            url,
            "--cookie",
            cookie,
            "--boards",
            str(boards),
            "--connect-timeout",
            "5",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline().strip()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    return ready, json.loads(out.strip().splitlines()[-1])


def test_the_board_client_holds_every_stream_open_and_counts_what_the_boards_were_sent(
    sse_server: str,
) -> None:
    ready, result = _boards(sse_server, "sessionid=s3cret", 5)
    assert ready == "READY 5"
    assert result["opened"] == 5 and result["statuses"] == {"200": 5}
    assert result["events"]["lanes"] == 5
    batches = result["events"]["requests"]
    assert batches >= 5
    assert result["request_events"] == 2 * batches and result["request_skipped"] == 3 * batches
    assert result["ended_early"] == 0


def test_the_board_client_reports_streams_it_could_not_open(sse_server: str) -> None:
    ready, result = _boards(sse_server, "sessionid=wrong", 3)
    assert ready == "READY 0"
    assert result["opened"] == 0 and result["statuses"] == {"403": 3}


def test_the_bench_runs_the_gateway_with_two_malloc_arenas_as_make_serve_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from bench.run import gateway_env

    plan = SimpleNamespace(redis_url="redis://127.0.0.1:6379/6", out=tmp_path)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert gateway_env(plan, "postgres://x/y")["MALLOC_ARENA_MAX"] == "2"  # type: ignore[arg-type]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert gateway_env(plan, "postgres://x/y")["MALLOC_ARENA_MAX"] == "4"  # type: ignore[arg-type]
