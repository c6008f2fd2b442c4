"""What the response cache costs a miss and what a hit takes, in the gateway's own code.

    REDIS_URL=redis://127.0.0.1:6379/3 python -m bench.cache_cost [--n 2000] [--json]

`make bench` runs it (pinned to the gateway's core, before the load) and puts its figures
in the report beside the cache's end-to-end cost (bench/run.py, "Costs").

Runs gateway.hotpath.cache's look-up, store and hit answer on one event loop against the Redis in
REDIS_URL (the keys it writes expire within a minute), for an exact and a semantic balancer. A miss
pays the look-up (one GET; semantic: the prompt's embedding and the index search too) and the store
(one SET) on top of the upstream call; a hit pays the look-up and the answer, and no upstream call
at all. A hit is measured twice: from this process's copy (the answer this worker stored or read
last: no Redis call) and from Redis (an answer another worker stored: the copy emptied first, one
pipelined GET + PTTL). The usage recorder is replaced by a list (its append is what the hot path
pays; the write is off the path). Median and 99th percentile per request, in microseconds.

Then the saturated loop (`--concurrency`, 32 by default): that many concurrent
"requests" on one loop, each looking up answers held in Redis only and spending
`--burn-ms` (2) of CPU after each look-up, as a busy worker does. It reports how many
were hits, each look-up's time, and the loop's lag (gateway.hotpath.redis_client
.LoopLag) beside it: the share of a look-up that is the loop, not Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from datetime import UTC, datetime
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

import orjson  # noqa: E402
from django.conf import settings  # noqa: E402

from bench.run import CACHE_STEP_LABELS  # noqa: E402
from gateway.engine.types import BalancerSpec, CachePolicy  # noqa: E402
from gateway.hotpath import cache, redis_client  # noqa: E402
from gateway.hotpath.proxy import ClientRequest  # noqa: E402
from gateway.hotpath.redis_client import call_async  # noqa: E402
from gateway.hotpath.snapshot import KeySpec  # noqa: E402

KEY = KeySpec(pk=1, name="bench", allowed=None, rate_limit_per_minute=None)
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A fairly normal answer. " * 40},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 60, "completion_tokens": 200, "total_tokens": 260},
    }
)
TOPICS = ["refund", "invoice", "password", "shipping", "warranty", "upgrade", "contract", "login"]


def balancer(pk: int, mode: str) -> BalancerSpec:
    return BalancerSpec(
        pk=pk,
        name=f"bench-{mode}",
        serving_name=f"bench-{mode}",
        workload_kind="chat",
        routing_mode="ordered",
        auto_preference="balanced",
        router_model=None,
        classifier_timeout=1,
        confidence_threshold=0,
        attempt_budget=1,
        request_timeout=60,
        enabled=True,
        routes=(),
        cache=CachePolicy(
            mode=mode, ttl_seconds=60, similarity_threshold=0.95, shared_across_keys=False
        ),
    )


def request(i: int, *, stream: bool = False) -> ClientRequest:
    prompt = (
        f"Customer {i} asks about their {TOPICS[i % len(TOPICS)]} number {i * 7919}: what should "
        "they do "
        f"next, and how long will it take? They wrote in on day {i % 31}."
    )
    payload: dict[str, Any] = {
        "model": "bench",
        "messages": [
            {"role": "system", "content": "You are a support agent."},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0,
        "stream": stream,
    }
    return ClientRequest(
        endpoint="chat",
        payload=payload,
        key=KEY,
        request_id=f"r{i}",
        route_override=None,
        started=time.monotonic(),
        created_at=datetime.now(UTC),
    )


def stats(samples: list[float]) -> dict[str, Any]:
    """Median and 99th percentile (nearest rank) in microseconds."""
    ordered = sorted(samples) or [0.0]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"n": len(samples), "p50_us": statistics.median(ordered) * 1e6, "p99_us": p99 * 1e6}


async def measure(n: int) -> dict[str, Any]:
    """Every figure of one run: the PING reference, then per mode (exact, semantic) each step."""
    cache.recorder = type("Recorder", (), {"record": staticmethod(lambda record: None)})()
    base = int(time.time()) * 1000  # fresh keys on every run
    rtt = []
    for _ in range(n):
        started = time.perf_counter()
        await call_async(lambda client: client.ping())
        rtt.append(time.perf_counter() - started)
    out: dict[str, Any] = {"n": n, "answer_bytes": len(ANSWER), "rtt": stats(rtt)}
    for mode in ("exact", "semantic"):
        spec = balancer(base + (mode == "semantic"), mode)
        cache.semantic_index.clear()
        miss_lookup, miss_store, hit, hit_stream, hit_redis = [], [], [], [], []
        missed = 0
        for i in range(n):
            req = request(i)
            started = time.perf_counter()
            lookup = await cache.look_up(spec, req, "")
            looked = time.perf_counter()
            assert lookup is not None
            await cache.store(
                lookup,
                cache.Entry(
                    body=ANSWER,
                    route="main",
                    instance="i",
                    model="m",
                    prompt_tokens=60,
                    completion_tokens=200,
                    cost_usd=cache.Decimal(0),
                ),
            )
            miss_lookup.append(looked - started)
            miss_store.append(time.perf_counter() - looked)
        for copy in ("local", "redis"):
            if copy == "redis":
                cache.local_store.clear()  # answers another worker stored: in Redis only
            for i in range(n):
                req = request(i, stream=i % 2 == 1)
                started = time.perf_counter()
                lookup = await cache.look_up(spec, req, "")
                assert lookup is not None
                if lookup.status != "hit":  # Redis late (past its bound) or its breaker open
                    missed += 1
                    continue
                response = cache.hit_response(lookup, req, spec)
                if req.payload["stream"]:
                    body = [chunk async for chunk in response.streaming_content]
                    assert body[-1] == b"data: [DONE]\n\n"
                    if copy == "local":
                        hit_stream.append(time.perf_counter() - started)
                elif copy == "local":
                    hit.append(time.perf_counter() - started)
                else:
                    hit_redis.append(time.perf_counter() - started)
        out[mode] = {
            "miss_lookup": stats(miss_lookup),
            "miss_store": stats(miss_store),
            "miss_total": stats([a + b for a, b in zip(miss_lookup, miss_store, strict=True)]),
            "hit": stats(hit),
            "hit_stream": stats(hit_stream),
            "hit_redis": stats(hit_redis),
            "missed_repeats": missed,
        }
    out["semantic_entries"] = settings.GATEWAY_CACHE_SEMANTIC_ENTRIES
    return out


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def saturated(n: int, concurrency: int, burn_ms: float) -> dict[str, Any]:
    """`concurrency` look-ups at a time of answers held in Redis only, `burn_ms` of CPU after
    each."""
    spec = balancer(int(time.time()) * 1000 + 7, "exact")
    each = max(1, n // concurrency)
    entry = cache.Entry(
        body=ANSWER,
        route="main",
        instance="i",
        model="m",
        prompt_tokens=60,
        completion_tokens=200,
        cost_usd=cache.Decimal(0),
    )
    for i in range(concurrency * each):  # stored, then forgotten by this process
        lookup = await cache.look_up(spec, request(i), "")
        assert lookup is not None
        await cache.store(lookup, entry)
    # One connection per concurrent look-up open already, as on a worker that has been serving.
    await asyncio.gather(*(cache.look_up(spec, request(10**9 + j), "") for j in range(concurrency)))
    cache.local_store.clear()
    lag = redis_client.loop_lag()
    times: list[float] = []
    lags: list[float] = []
    hits = 0

    async def one(t: int) -> None:
        nonlocal hits
        for j in range(each):
            started = time.perf_counter()
            lookup = await cache.look_up(spec, request(t * each + j), "")
            times.append(time.perf_counter() - started)
            lags.append(lag.lag)
            hits += lookup is not None and lookup.status == "hit"
            burn(burn_ms / 1000)
            await asyncio.sleep(0)

    cpu = time.thread_time()
    await asyncio.gather(*(one(t) for t in range(concurrency)))
    return {
        "concurrency": concurrency,
        "burn_ms": burn_ms,
        "look_ups": len(times),
        "hits": hits,
        "look_up": stats(times),
        "loop_lag": stats(lags),
        "cpu_s": time.thread_time() - cpu,
        "breaker_opened": redis_client.cache_breaker().is_open,
    }


def print_text(result: dict[str, Any]) -> None:
    def line(key: str, figures: dict[str, Any]) -> str:
        return (
            f"{CACHE_STEP_LABELS[key]:<46} median {figures['p50_us']:8.1f} us   p99 "
            f"{figures['p99_us']:8.1f} us"
        )

    n = result["n"]
    print(line("rtt", result["rtt"]))
    for mode in ("exact", "semantic"):
        index = (
            f", semantic index up to {result['semantic_entries']} prompts"
            if mode == "semantic"
            else ""
        )
        print(f"\n{mode} ({n} requests, answer of {result['answer_bytes']} bytes{index})")
        for key in ("miss_lookup", "miss_store", "miss_total", "hit", "hit_stream", "hit_redis"):
            print(line(key, result[mode][key]))
        if result[mode]["missed_repeats"]:
            print(
                f"  {result[mode]['missed_repeats']} of the {n} repeated requests missed: "
                "Redis answered late or the breaker was open"
            )
    busy = result.get("saturated")
    if busy:
        print(
            f"\nsaturated loop: {busy['concurrency']} concurrent look-ups of answers in Redis "
            "only, "
            f"{busy['burn_ms']:g} ms of CPU after each: {busy['hits']} of {busy['look_ups']} hits; "
            f"look-up median {busy['look_up']['p50_us'] / 1000:.1f} ms, p99 "
            f"{busy['look_up']['p99_us'] / 1000:.1f} ms; loop lag median "
            f"{busy['loop_lag']['p50_us'] / 1000:.1f} ms, p99 "
            f"{busy['loop_lag']['p99_us'] / 1000:.1f} ms"
            + ("; the cache's breaker opened" if busy["breaker_opened"] else "")
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="one JSON object (bench/run.py)")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="the saturated loop's look-ups (0: skip it)"
    )
    parser.add_argument("--burn-ms", type=float, default=2.0, help="CPU after each of them")
    args = parser.parse_args()
    if not settings.REDIS_URL:
        raise SystemExit("set REDIS_URL: the cache's cost is measured against Redis")

    async def main() -> dict[str, Any]:
        result = await measure(args.n)
        if args.concurrency:
            result["saturated"] = await saturated(args.n, args.concurrency, args.burn_ms)
        return result

    result = asyncio.run(main())
    if args.json:
        print(json.dumps(result))
    else:
        print_text(result)
