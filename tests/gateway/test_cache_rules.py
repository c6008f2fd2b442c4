"""The response cache's rules, without a server: the key, the stream assembly, the replay, the
index."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import orjson

from gateway.engine.types import CachePolicy
from gateway.hotpath import cache

POLICY = CachePolicy(
    mode="exact", ttl_seconds=60, similarity_threshold=0.9, shared_across_keys=False
)


def key(payload: dict, *, key_pk: int = 1, policy: CachePolicy = POLICY) -> str:
    return cache.entry_key(
        7, cache.scope_of(policy, key_pk), "chat", cache.normalised("chat", payload)
    )


def test_the_key_ignores_fields_that_do_not_change_the_answer_and_the_order_of_keys():
    base = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    same = {
        "temperature": 0,
        "messages": [{"content": "hi", "role": "user"}],
        "model": "b",
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u",
        "metadata": {"k": "v"},
        "store": True,
    }
    assert key(base) == key(same)
    assert key(base) != key({**base, "temperature": 0.5})
    assert key(base) != key({**base, "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert key(base) != key(base, key_pk=2)
    shared = CachePolicy(
        mode="exact", ttl_seconds=60, similarity_threshold=0.9, shared_across_keys=True
    )
    assert key(base, policy=shared) == key(base, key_pk=2, policy=shared)
    assert key(base).startswith("sb:cache:7:k1:")


def test_cache_control_directives_are_read_case_insensitively_with_values():
    assert cache.directives("No-Cache, max-age=0") == {"no-cache", "max-age"}
    assert cache.directives("") == set()


def chunk(delta: dict, finish: str | None = None, index: int = 0) -> bytes:
    return (
        b"data: "
        + orjson.dumps(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 5,
                "model": "m",
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
            }
        )
        + b"\n\n"
    )


def test_a_complete_stream_with_tool_calls_is_assembled_and_replays_to_the_same_answer():
    capture = cache.StreamCapture(limit=10_000)
    for event in (
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"ci'},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
        chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ):
        capture.feed(event)
    body = capture.body(11, 7)
    assert body is not None
    answer = orjson.loads(body)
    message = answer["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}

    again = cache.StreamCapture(limit=10_000)
    for event in cache.replay_events(body, include_usage=True):
        again.feed(event)
    assert orjson.loads(again.body(11, 7) or b"")["choices"] == answer["choices"]
    assert (
        orjson.loads(cache.replay_events(body, include_usage=True)[-2][6:])["usage"]["total_tokens"]
        == 18
    )
    assert cache.replay_events(body, include_usage=False)[-1] == b"data: [DONE]\n\n"


def test_a_stream_without_a_finish_reason_an_error_or_over_the_bound_is_not_an_answer():
    unfinished = cache.StreamCapture(limit=10_000)
    unfinished.feed(chunk({"content": "half"}))
    assert unfinished.body(1, 1) is None
    errored = cache.StreamCapture(limit=10_000)
    errored.feed(chunk({"content": "half"}))
    errored.feed(b'data: {"error": {"message": "cut"}}\n\n')
    errored.feed(chunk({}, "stop"))
    assert errored.body(1, 1) is None
    large = cache.StreamCapture(limit=100)
    large.feed(chunk({"content": "x" * 200}))
    large.feed(chunk({}, "stop"))
    assert large.body(1, 1) is None


def test_an_entry_round_trips_and_a_damaged_one_reads_as_none():
    entry = cache.Entry(
        body=b'{"a":1}\n',
        route="r",
        instance="i",
        model="m",
        prompt_tokens=3,
        completion_tokens=4,
        cost_usd=Decimal("0.0000125"),
    )
    assert cache.Entry.load(entry.dump()) == entry
    assert cache.Entry.load(b"garbage") is None
    assert cache.Entry.load(b'{"route": 1}\n{}') is None


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_the_semantic_index_finds_the_nearest_live_prompt_of_the_same_shape_within_its_bound():
    index = cache.SemanticIndex(size=2)
    probe = cache.Probe(scope=(1, "k1"), shape=1, vector=unit(1, 0))
    index.add(cache.Probe(scope=(1, "k1"), shape=1, vector=unit(1, 0.1)), "near", expires=100)
    index.add(cache.Probe(scope=(1, "k1"), shape=2, vector=unit(1, 0)), "other-shape", expires=100)
    found = index.nearest(probe, 0.9, now=0)
    assert found is not None and found[0] == "near" and 0.99 < found[1] < 1
    assert index.nearest(probe, 0.999, now=0) is None
    assert (
        index.nearest(cache.Probe(scope=(1, "k2"), shape=1, vector=unit(1, 0)), 0.5, now=0) is None
    )
    assert index.nearest(probe, 0.9, now=100) is None  # expired
    index.add(
        cache.Probe(scope=(1, "k1"), shape=1, vector=unit(0, 1)), "near", expires=100
    )  # the same key again
    assert index.rows((1, "k1")) == 2
    assert index.nearest(probe, 0.9, now=0) is None
    for n in range(3):  # the oldest rows give way
        index.add(
            cache.Probe(scope=(1, "k1"), shape=1, vector=unit(1, n / 10)), f"k{n}", expires=1000
        )
    assert index.rows((1, "k1")) == 2
    found = index.nearest(probe, 0.9, now=0)
    assert found is not None and found[0] == "k1"


def test_inputs_a_content_rule_routes_on_join_the_key():
    from datetime import UTC, datetime

    from gateway.engine.types import BalancerSpec, RuleSpec
    from gateway.hotpath.proxy import ClientRequest
    from gateway.hotpath.snapshot import KeySpec

    def spec(*rules: RuleSpec) -> BalancerSpec:
        return BalancerSpec(
            pk=7,
            name="b",
            serving_name="b",
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
            rules=rules,
            cache=POLICY,
        )

    def keyed(balancer: BalancerSpec, metadata: dict, tags: str = "") -> str:
        payload = {
            "model": "b",
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": metadata,
        }
        req = ClientRequest(
            endpoint="chat",
            payload=payload,
            key=KeySpec(pk=1, name="k", allowed=None, rate_limit_per_minute=None),
            request_id="r",
            route_override=None,
            started=0.0,
            created_at=datetime.now(UTC),
            tags=tags,
        )
        request = cache.normalised("chat", payload)
        cache.routed_on(balancer, req, request)
        return cache.entry_key(balancer.pk, "k1", "chat", request)

    plain = spec()
    assert keyed(plain, {"team": "a"}) == keyed(plain, {"team": "b"})
    by_metadata = spec(
        RuleSpec(name="r", kind="metadata", route="x", metadata_key="team", value="a")
    )
    assert keyed(by_metadata, {"team": "a"}) != keyed(by_metadata, {"team": "b"})
    by_tag = spec(RuleSpec(name="t", kind="tag", route="x", value="vip"))
    assert keyed(by_tag, {}, tags="vip") != keyed(by_tag, {}, tags="")
    off = spec(RuleSpec(name="r", kind="metadata", route="x", enabled=False))
    assert keyed(off, {"team": "a"}) == keyed(off, {"team": "b"})
