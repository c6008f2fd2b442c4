"""The response cache: a repeated request answered without calling an upstream.

Off by default; a balancer turns it on (`cache_mode`), with a TTL, a semantic
threshold and whether API keys share answers. The rules:

- **What is the same request.** The request body in canonical JSON (keys sorted),
  without the fields that do not change the answer: `model` (the balancer is in the
  key already), `stream`, `stream_options`, `user`, `metadata`, `store`,
  `service_tier`, `prompt_cache_key`, `safety_identifier` (but `metadata`, `user`, the
  `x-balancer-tags` header and the key's name are in it when one of the balancer's
  content rules routes on them). Everything else (messages,
  temperature, seed, tools, response_format, max_tokens...) is part of the key, and so
  is the endpoint. Whether a sampled (temperature > 0) answer may be replayed is the
  operator's choice when turning the cache on.
- **Scope.** Entries live under `sb:cache:<balancer pk>:<scope>:<sha256>`, the scope
  being the API key (`k<pk>`) unless the balancer shares answers across keys
  (`shared`). One key never sees another's answers otherwise.
- **What is stored.** Only a 200 with a complete answer: a non-streamed body as it was
  sent, or a stream that ended normally with a finish reason on every choice,
  assembled into the same `chat.completion` body (so a streamed answer serves a plain
  request and the reverse). Never an error, a stream cut short, or an answer over
  GATEWAY_CACHE_MAX_ENTRY_BYTES. Stored in Redis with the balancer's TTL (SET EX),
  shared by every worker.
- **This process's copy.** In front of Redis each process keeps the answers it stored or
  read last in an LRU bounded by entries and bytes (GATEWAY_CACHE_LOCAL_ENTRIES,
  GATEWAY_CACHE_LOCAL_BYTES), under the same key (so the same balancer and scope), each
  until its Redis key expires: the stored answer's head line says when (wall clock,
  written with it), so a read from Redis is still one GET. A hot answer is served without a Redis
  call at
  all, so a saturated worker keeps hitting. Without Redis (embedded mode) it is the
  only store.
- **Semantic mode.** After an exact miss on a chat request, the prompt (every
  message's role and text, head and tail kept as the local router cuts them) is
  embedded with the local router's static embeddings and compared with the prompts
  whose answers this process stored for the same balancer, scope, parameters and
  message count; the most similar one at or above the threshold (cosine) is a hit if
  its answer is still in Redis. The index is in process (bounded per balancer and
  scope, GATEWAY_CACHE_SEMANTIC_ENTRIES): a look-up is a matrix product over vectors
  already in memory, with no transfer of the index per request; the answers stay in
  Redis, so the TTL, the scope and an outage apply to semantic hits exactly as to
  exact ones. The price: each worker learns its own index (an exact hit is shared by
  every worker at once, a semantic one only by the worker that stored it).
- **Doors.** `/v1/chat/completions` and `/v1/embeddings`; the translated doors (Messages,
  Responses, legacy completions) skip the cache: a hit would have to be translated back into
  their shape.
- **Bypass.** `Cache-Control: no-cache` on the request skips the look-up (the fresh
  answer is stored); `no-store` skips both. Marked `x-balancer-cache: bypass`.
- **Redis away** (down, hung, the cache's breaker open: gateway.hotpath.redis_client's
  `call_cache`, which allows for the event loop's lag and trips only the cache's
  breaker): an answer this process holds is still a hit; anything else is a miss,
  stored in this process only; never an error.
- **A hit** is answered with the cached body (as a stream of chunks when the request
  streams), `x-balancer-cache: hit`, and recorded as a usage event with `cache_hit`,
  zero cost, the answer's tokens, and the original cost as `savings_usd`.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse

from gateway.engine.types import BalancerSpec, CachePolicy
from gateway.hotpath.redis_client import RedisUnavailable, call_cache
from gateway.hotpath.usage import UsageRecord, recorder
from gateway.upstream.answers import event_data

if TYPE_CHECKING:
    from gateway.hotpath.proxy import ClientRequest

logger = logging.getLogger(__name__)

KEY_PREFIX = "sb:cache:"
HEADER = "x-balancer-cache"
IGNORED_FIELDS = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    }
)
# The prompt text embedded for the semantic look-up: its head and tail, as the local router cuts it.
SEMANTIC_HEAD_CHARS = 2000
SEMANTIC_TAIL_CHARS = 1000
REPLAY_CHUNK_CHARS = 64  # content per replayed stream chunk


@dataclass(frozen=True, slots=True)
class Entry:
    """A cached answer: the body as sent, and what the usage event of a hit needs."""

    body: bytes
    route: str
    instance: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal

    def dump(self, expires_at: float | None = None) -> bytes:
        """The stored form: a JSON head line (with the wall-clock time the Redis key expires, so a
        worker that reads it knows how long to keep its copy), then the body."""
        meta = {
            "route": self.route,
            "instance": self.instance,
            "model": self.model,
            "prompt": self.prompt_tokens,
            "completion": self.completion_tokens,
            "cost": str(self.cost_usd),
        }
        if expires_at is not None:
            meta["expires"] = round(expires_at, 3)
        return orjson.dumps(meta) + b"\n" + self.body

    @classmethod
    def load(cls, raw: bytes) -> Entry | None:
        head, sep, body = raw.partition(b"\n")
        if not sep:
            return None
        try:
            meta = orjson.loads(head)
            return cls(
                body=body,
                route=str(meta["route"]),
                instance=str(meta["instance"]),
                model=str(meta["model"]),
                prompt_tokens=int(meta["prompt"]),
                completion_tokens=int(meta["completion"]),
                cost_usd=Decimal(meta["cost"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, ArithmeticError):
            return None


@dataclass(frozen=True, slots=True)
class Probe:
    """A chat prompt's place in the semantic index."""

    scope: tuple[int, str]  # (balancer pk, key scope)
    shape: int  # the parameters and the message count, hashed: only equal shapes are compared
    vector: np.ndarray  # unit vector


@dataclass(slots=True)
class Lookup:
    status: str  # hit | miss | bypass
    policy: CachePolicy
    key: str  # the exact entry's key
    store: bool  # store the fresh answer (False for no-store)
    entry: Entry | None = None
    similarity: float | None = None  # a semantic hit's cosine
    probe: Probe | None = None  # semantic mode: indexed with the stored answer


# -- the request's key --------------------------------------------------------------------


def directives(cache_control: str) -> set[str]:
    return {
        part.strip().split("=", 1)[0].lower() for part in cache_control.split(",") if part.strip()
    }


def normalised(endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The fields of the request that change the answer."""
    return {name: value for name, value in payload.items() if name not in IGNORED_FIELDS}


def scope_of(policy: CachePolicy, key_pk: int) -> str:
    return "shared" if policy.shared_across_keys else f"k{key_pk}"


def entry_key(balancer_pk: int, scope: str, endpoint: str, request: dict[str, Any]) -> str:
    canonical = orjson.dumps(
        [endpoint, request], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    )
    return f"{KEY_PREFIX}{balancer_pk}:{scope}:{hashlib.sha256(canonical).hexdigest()}"


def prompt_text(messages: Any) -> str:
    parts = []
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(
                p.get("text", "")
                for p in content
                if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
        if isinstance(content, str) and content:
            parts.append(f"{message.get('role', '')}: {content}")
    text = "\n".join(parts)
    if len(text) > SEMANTIC_HEAD_CHARS + SEMANTIC_TAIL_CHARS:
        text = text[:SEMANTIC_HEAD_CHARS] + "\n" + text[-SEMANTIC_TAIL_CHARS:]
    return text


def probe_for(balancer_pk: int, scope: str, request: dict[str, Any]) -> Probe | None:
    """The prompt's vector, or None when it has no text or the embeddings are not installed."""
    from gateway.router_models.local import RouterModelUnavailable, default_embedder

    messages = request.get("messages")
    if not isinstance(messages, list):
        return None
    text = prompt_text(messages)
    if not text:
        return None
    try:
        vector, tokens = default_embedder().embed(text)
    except RouterModelUnavailable as exc:
        if not _warned:
            _warned.append(True)
            logger.warning("semantic cache unavailable (%s): exact matches only", exc)
        return None
    if not tokens:
        return None
    rest = {name: value for name, value in request.items() if name != "messages"}
    canonical = orjson.dumps(
        [rest, len(messages)], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    )
    shape = int.from_bytes(hashlib.sha256(canonical).digest()[:8], "little", signed=True)
    return Probe(scope=(balancer_pk, scope), shape=shape, vector=vector)


_warned: list[bool] = []


def warm_up() -> None:
    """Load the embeddings with the snapshot (in its thread), not on a semantic balancer's first
    request."""
    from gateway.router_models.local import RouterModelUnavailable, default_embedder

    try:
        default_embedder()
    except RouterModelUnavailable:
        pass  # probe_for() says so once, and the cache matches exactly


# -- the semantic index (per process) ----------------------------------------------------------


class _Scope:
    """One balancer and scope's prompts: a ring of `size` rows (vector, shape, expiry, key)."""

    __slots__ = ("count", "expires", "keys", "next", "shapes", "slots", "vectors")

    def __init__(self, size: int, dim: int) -> None:
        self.vectors = np.zeros((size, dim), dtype=np.float32)
        self.shapes = np.zeros(size, dtype=np.int64)
        self.expires = np.zeros(size, dtype=np.float64)
        self.keys: list[str] = [""] * size
        self.slots: dict[str, int] = {}  # key -> row
        self.next = 0
        self.count = 0


class SemanticIndex:
    """Per balancer and scope, the newest `size` prompts whose answers were stored, with their keys.

    A look-up is one matrix-vector product over the scope's rows, masked to the live rows of
    the same shape. Touched only from the event loop (one per process), so no lock.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._scopes: dict[tuple[int, str], _Scope] = {}

    def nearest(self, probe: Probe, threshold: float, now: float) -> tuple[str, float] | None:
        scope = self._scopes.get(probe.scope)
        if scope is None or not scope.count:
            return None
        n = scope.count
        live = (scope.shapes[:n] == probe.shape) & (scope.expires[:n] > now)
        if not live.any():
            return None
        similarities = np.where(live, scope.vectors[:n] @ probe.vector, -2.0)
        best = int(np.argmax(similarities))
        similarity = float(similarities[best])
        return (scope.keys[best], similarity) if similarity >= threshold else None

    def add(self, probe: Probe, key: str, expires: float) -> None:
        scope = self._scopes.get(probe.scope)
        if scope is None:
            scope = self._scopes[probe.scope] = _Scope(self.size, probe.vector.shape[0])
        row = scope.slots.get(key)
        if row is None:
            row = scope.next
            scope.slots.pop(scope.keys[row], None)  # the oldest row gives way
            scope.next = (row + 1) % self.size
            scope.count = min(scope.count + 1, self.size)
        scope.vectors[row] = probe.vector
        scope.shapes[row] = probe.shape
        scope.expires[row] = expires
        scope.keys[row] = key
        scope.slots[key] = row

    def rows(self, scope: tuple[int, str]) -> int:
        found = self._scopes.get(scope)
        return found.count if found is not None else 0

    def clear(self) -> None:
        self._scopes.clear()


semantic_index = SemanticIndex(settings.GATEWAY_CACHE_SEMANTIC_ENTRIES)


# -- storage: Redis, or this process without it ---------------------------------------------------


class _LocalStore:
    """This process's copy of the answers it stored or read last: an LRU bounded by entries and by
    bytes, each entry expiring when its Redis key does (or after the balancer's TTL)."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: collections.OrderedDict[str, tuple[bytes, float]] = collections.OrderedDict()

    def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item[0]

    def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0 or len(value) > self.max_bytes:
            return
        if key in self._items:
            self._drop(key)
        self._items[key] = (value, time.monotonic() + ttl)
        self.bytes += len(value)
        while len(self._items) > self.size or self.bytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        value, _ = self._items.pop(key)
        self.bytes -= len(value)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


local_store = _LocalStore(settings.GATEWAY_CACHE_LOCAL_ENTRIES, settings.GATEWAY_CACHE_LOCAL_BYTES)


def seconds_left(raw: bytes) -> float:
    """How long a stored answer has before its Redis key expires (0 if it does not say)."""
    try:
        expires = orjson.loads(raw.partition(b"\n")[0]).get("expires")
    except (orjson.JSONDecodeError, AttributeError):
        return 0.0
    return float(expires) - time.time() if isinstance(expires, int | float) else 0.0


async def _get(key: str) -> bytes | None:
    """This process's copy first; else Redis (one GET), and the answer kept here until its key
    expires (the time is in the answer's head line, written by whoever stored it)."""
    found = local_store.get(key)
    if found is not None or not settings.REDIS_URL:
        return found
    try:
        value: bytes | None = await call_cache(lambda client: client.get(key))
    except RedisUnavailable:  # a miss; the cache's breaker logs the outage
        return None
    if value is not None:
        local_store.set(key, value, seconds_left(value))
    return value


async def _set(key: str, value: bytes, ttl: int) -> bool:
    """Kept here, and in Redis for every worker; False when only here (Redis away)."""
    local_store.set(key, value, ttl)
    if not settings.REDIS_URL:
        return True
    try:
        await call_cache(lambda client: client.set(key, value, ex=ttl))
    except RedisUnavailable:
        return False
    return True


# -- look-up and store ------------------------------------------------------------------------


async def look_up(balancer: BalancerSpec, req: ClientRequest, cache_control: str) -> Lookup | None:
    """None when the balancer's cache is off; otherwise hit (with the entry), miss or bypass."""
    policy = balancer.cache
    if (
        policy is None or req.usage_endpoint
    ):  # the translated doors (messages, responses...) skip it
        return None
    told = directives(cache_control) if cache_control else set()
    scope = scope_of(policy, req.key.pk)
    request = normalised(req.endpoint, req.payload)
    routed_on(balancer, req, request)
    key = entry_key(balancer.pk, scope, req.endpoint, request)
    semantic = policy.mode == "semantic" and req.endpoint == "chat"
    if "no-store" in told:
        return Lookup("bypass", policy, key, store=False)
    if "no-cache" in told:
        return Lookup(
            "bypass",
            policy,
            key,
            store=True,
            probe=probe_for(balancer.pk, scope, request) if semantic else None,
        )
    lookup = Lookup("miss", policy, key, store=True)
    raw = await _get(key)
    entry = Entry.load(raw) if raw is not None else None
    if entry is not None:
        lookup.status, lookup.entry = "hit", entry
        return lookup
    if semantic:
        lookup.probe = probe_for(balancer.pk, scope, request)
        if lookup.probe is not None:
            found = semantic_index.nearest(
                lookup.probe, policy.similarity_threshold, time.monotonic()
            )
            if found is not None:
                raw = await _get(found[0])
                entry = Entry.load(raw) if raw is not None else None
                if entry is not None:
                    lookup.status, lookup.entry, lookup.similarity = "hit", entry, found[1]
    return lookup


def routed_on(balancer: BalancerSpec, req: ClientRequest, request: dict[str, Any]) -> None:
    """Content rules may route on fields the key otherwise ignores: requests that differ in one a
    rule of this balancer reads are kept apart (they may be answered by different routes)."""
    kinds = {rule.kind for rule in balancer.rules if rule.enabled}
    if not kinds & {"metadata", "user", "tag", "api_key"}:
        return
    if "metadata" in kinds:
        request["\x00metadata"] = req.payload.get("metadata")
    if "user" in kinds:
        request["\x00user"] = req.payload.get("user")
    if "tag" in kinds:
        request["\x00tags"] = req.tags
    if "api_key" in kinds:  # the scope is the key already, unless answers are shared
        request["\x00key"] = req.key.name


async def store(lookup: Lookup, entry: Entry) -> None:
    """Keep a fresh 200 answer (a no-store request's, or one over the size bound, is not kept)."""
    if not lookup.store or len(entry.body) > settings.GATEWAY_CACHE_MAX_ENTRY_BYTES:
        return
    ttl = lookup.policy.ttl_seconds
    await _set(lookup.key, entry.dump(expires_at=time.time() + ttl), ttl)
    if lookup.probe is not None:  # the answer is in this process at least
        semantic_index.add(lookup.probe, lookup.key, time.monotonic() + ttl)


_background: set[asyncio.Task[None]] = set()


def store_later(lookup: Lookup, entry: Entry) -> None:
    """store() from synchronous code on the event loop (a stream's end)."""
    task = asyncio.ensure_future(store(lookup, entry))
    _background.add(task)
    task.add_done_callback(_background.discard)


class StreamCapture:
    """A relayed stream's chunks assembled into one `chat.completion` body, while it fits the
    bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.broken = False
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}

    def feed(self, event: bytes) -> None:
        if self.broken:
            return
        self.size += len(event)
        data = event_data(event)
        if self.size > self.limit:
            self._give_up()
            return
        if data is None or data == b"[DONE]":
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._give_up()
            return
        if not isinstance(chunk, dict) or "error" in chunk:
            self._give_up()
            return
        for name in ("id", "created", "model", "system_fingerprint"):
            if name in chunk and name not in self.head:
                self.head[name] = chunk[name]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                self._take(choice)

    def _take(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        slot = self.choices.setdefault(
            index if isinstance(index, int) else 0,
            {
                "role": "assistant",
                "content": [],
                "refusal": [],
                "tool_calls": {},
                "finish_reason": None,
            },
        )
        delta = choice.get("delta") or {}
        if isinstance(delta.get("role"), str):
            slot["role"] = delta["role"]
        for name in ("content", "refusal"):
            if isinstance(delta.get(name), str):
                slot[name].append(delta[name])
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            tool = slot["tool_calls"].setdefault(
                call.get("index", 0),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if call.get("id"):
                tool["id"] = call["id"]
            if call.get("type"):
                tool["type"] = call["type"]
            function = call.get("function") or {}
            for name in ("name", "arguments"):
                if isinstance(function.get(name), str):
                    tool["function"][name] += function[name]
        if choice.get("finish_reason"):
            slot["finish_reason"] = choice["finish_reason"]

    def _give_up(self) -> None:
        self.broken = True
        self.choices.clear()

    def body(self, prompt_tokens: int, completion_tokens: int) -> bytes | None:
        """The assembled answer; None if the stream was not a complete, well-formed answer."""
        if (
            self.broken
            or not self.choices
            or any(c["finish_reason"] is None for c in self.choices.values())
        ):
            return None
        choices = []
        for index in sorted(self.choices):
            slot = self.choices[index]
            message: dict[str, Any] = {
                "role": slot["role"],
                "content": "".join(slot["content"]) or None,
            }
            if slot["refusal"]:
                message["refusal"] = "".join(slot["refusal"])
            if slot["tool_calls"]:
                message["tool_calls"] = [slot["tool_calls"][i] for i in sorted(slot["tool_calls"])]
            elif message["content"] is None:
                message["content"] = ""
            choices.append(
                {"index": index, "message": message, "finish_reason": slot["finish_reason"]}
            )
        answer = {
            "id": self.head.get("id", ""),
            "object": "chat.completion",
            "created": self.head.get("created", 0),
            "model": self.head.get("model", ""),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        if "system_fingerprint" in self.head:
            answer["system_fingerprint"] = self.head["system_fingerprint"]
        return orjson.dumps(answer)


def capture_for(lookup: Lookup | None, stream: bool) -> StreamCapture | None:
    if lookup is None or not lookup.store or not stream:
        return None
    return StreamCapture(settings.GATEWAY_CACHE_MAX_ENTRY_BYTES)


# -- a hit's answer ------------------------------------------------------------------------


def hit_response(
    lookup: Lookup, req: ClientRequest, balancer: BalancerSpec
) -> HttpResponse | StreamingHttpResponse:
    """The cached answer, recorded as a usage event at zero cost with the avoided cost as
    savings."""
    entry = lookup.entry
    assert entry is not None
    stream = req.endpoint == "chat" and req.payload.get("stream") is True
    latency_ms = round((time.monotonic() - req.started) * 1000, 3)
    req.recorded = True
    recorder.record(
        UsageRecord(
            created_at=req.created_at,
            request_id=req.request_id,
            endpoint=req.endpoint,
            status_code=200,
            latency_ms=latency_ms,
            api_key_id=req.key.pk,
            balancer_id=balancer.pk,
            serving_name=balancer.serving_name,
            team_id=req.key.team_pk,
            use_case=req.use_case,
            route=entry.route,
            instance=entry.instance,
            model=entry.model,
            decision_reason="cache_hit",
            attempts=0,
            stream=stream,
            ttfb_ms=latency_ms,
            prompt_tokens=entry.prompt_tokens,
            completion_tokens=entry.completion_tokens,
            cost_usd=Decimal(0),
            cache_hit=True,
            savings_usd=entry.cost_usd,
        )
    )
    headers = {
        "x-balancer": balancer.serving_name,
        "x-balancer-decision": "cache_hit",
        "x-balancer-attempts": "0",
        "x-balancer-route": entry.route,
        "x-balancer-instance": entry.instance,
        "x-request-id": req.request_id,
        HEADER: "hit",
    }
    if lookup.similarity is not None:
        headers["x-balancer-cache-similarity"] = f"{lookup.similarity:.4f}"
    response: HttpResponse | StreamingHttpResponse
    if stream:
        include_usage = bool((req.payload.get("stream_options") or {}).get("include_usage"))
        response = StreamingHttpResponse(
            replay(entry.body, include_usage=include_usage), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
    else:
        response = HttpResponse(entry.body, content_type="application/json")
    for name, value in headers.items():
        response[name] = value
    return response


def replay_events(body: bytes, *, include_usage: bool) -> list[bytes]:
    """A cached `chat.completion` as the SSE events of a stream: role, content in pieces, tool
    calls, finish reason per choice; the usage chunk if asked; `[DONE]`."""
    answer = orjson.loads(body)
    head = {
        "id": answer.get("id", ""),
        "object": "chat.completion.chunk",
        "created": answer.get("created", 0),
        "model": answer.get("model", ""),
    }
    if "system_fingerprint" in answer:
        head["system_fingerprint"] = answer["system_fingerprint"]

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n"

    events = []
    for choice in answer.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        events.append(
            event(
                [
                    {
                        "index": index,
                        "delta": {"role": message.get("role", "assistant"), "content": ""},
                        "finish_reason": None,
                    }
                ]
            )
        )
        content = message.get("content") or ""
        for start in range(0, len(content), REPLAY_CHUNK_CHARS):
            events.append(
                event(
                    [
                        {
                            "index": index,
                            "delta": {"content": content[start : start + REPLAY_CHUNK_CHARS]},
                            "finish_reason": None,
                        }
                    ]
                )
            )
        if message.get("refusal"):
            events.append(
                event(
                    [
                        {
                            "index": index,
                            "delta": {"refusal": message["refusal"]},
                            "finish_reason": None,
                        }
                    ]
                )
            )
        if message.get("tool_calls"):
            calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            events.append(
                event([{"index": index, "delta": {"tool_calls": calls}, "finish_reason": None}])
            )
        events.append(
            event(
                [
                    {
                        "index": index,
                        "delta": {},
                        "finish_reason": choice.get("finish_reason") or "stop",
                    }
                ]
            )
        )
    if include_usage and answer.get("usage") is not None:
        events.append(event([], usage=answer["usage"]))
    events.append(b"data: [DONE]\n\n")
    return events


async def replay(body: bytes, *, include_usage: bool) -> AsyncIterator[bytes]:
    for item in replay_events(body, include_usage=include_usage):
        yield item


def mark(response: HttpResponse | StreamingHttpResponse, lookup: Lookup | None) -> None:
    """x-balancer-cache on an upstream's answer: miss or bypass (nothing when the cache is off)."""
    if lookup is not None:
        response[HEADER] = lookup.status
