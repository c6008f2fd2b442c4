"""Hostile upstreams against the pooled HTTP client: compression bombs, huge bodies, huge headers,
endless SSE events. Each answer past its bound is refused quickly, in bounded memory, without
holding the event loop, and its connection is dropped (never reused).

Same scripted raw loopback servers as test_http_client.py. The bounds are the settings'
defaults (GATEWAY_UPSTREAM_MAX_*: 64 KiB of headers, 32 MiB of body, 32 MiB decompressed,
8 MiB per SSE event) unless a test narrows one through the `settings` fixture.
Memory is measured two ways and printed (pytest -s): tracemalloc's peak of Python
allocations during the exchange, and the growth of the process's peak resident set
(VmHWM in /proc/self/status, after resetting it through /proc/self/clear_refs).
"""

from __future__ import annotations

import asyncio
import functools
import struct
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.upstream import http
from tests.gateway.test_http_client import Peer, Server, async_test, chunk, get, response

MiB = 1024 * 1024


@functools.cache
def gzip_bomb(mebibytes: int = 1024) -> bytes:
    """A valid gzip body of about 1 KB per MiB that inflates to `mebibytes` MiB of zeros.

    Deflate resets at each full flush, so every MiB after the first compresses to the same
    bytes: built from three compressed MiB, not a GiB of input."""
    zeros = bytes(MiB)
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    again = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    end = packer.flush(zlib.Z_FINISH)[:-8]  # the last block, without the trailer for 2 MiB
    crc = 0
    for _ in range(mebibytes):
        crc = zlib.crc32(zeros, crc)
    trailer = struct.pack("<II", crc, (mebibytes * MiB) & 0xFFFFFFFF)
    return first + again * (mebibytes - 1) + end + trailer


def test_the_bomb_is_a_real_gzip_body() -> None:
    small = gzip_bomb(3)
    assert zlib.decompress(small, 16 + zlib.MAX_WBITS) == bytes(3 * MiB)
    assert len(gzip_bomb()) < 1.1 * MiB


def vm_hwm() -> int:
    """The process's peak resident set, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def reset_vm_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set


@dataclass
class Cost:
    seconds: float = 0.0
    python_peak: int = 0  # tracemalloc's peak during the exchange, bytes
    rss_growth: int = 0  # VmHWM after - VmRSS at the start, bytes
    loop_stall: float = 0.0  # the longest the event loop went without running a 5 ms ticker

    def __str__(self) -> str:
        return (
            f"{self.seconds:.3f} s, Python peak {self.python_peak / MiB:.1f} MiB, "
            f"peak RSS growth {self.rss_growth / MiB:.1f} MiB, longest loop stall "
            f"{self.loop_stall * 1000:.0f} ms"
        )


@asynccontextmanager
async def measured(label: str) -> AsyncIterator[Cost]:
    """Time, memory and event-loop stalls of the block (printed for docs/reliability.md)."""
    cost = Cost()
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            cost.loop_stall = max(cost.loop_stall, now - last - 0.005)
            last = now

    reset_vm_hwm()
    rss_before = vm_hwm()
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.monotonic()
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        yield cost
    finally:
        cost.seconds = time.monotonic() - started
        stop.set()
        await task
        cost.python_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        cost.rss_growth = vm_hwm() - rss_before
        print(f"\n{label}: {cost}")


def serve_once(answer: Callable[[Peer], Awaitable[None]]) -> Callable[[Peer], Awaitable[None]]:
    """The first connection gets `answer`; later ones a small healthy answer per request."""

    async def handler(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            try:
                await answer(peer)
            except ConnectionError:  # the client dropped the connection while the answer went out
                peer.eof.set()
                return
            await peer.wait_eof()
        else:
            await peer.answer_requests(b"healthy")

    return handler


async def assert_dropped_and_not_reused(server: Server) -> None:
    """The hostile connection was closed by the client, and the next request opened a new one."""
    await asyncio.wait_for(server.peers[0].eof.wait(), 2)
    reply = await get(server.url())
    assert await reply.read(within=2) == b"healthy"
    assert server.accepted == 2 and server.requests[-1].connection == 1


# -- compression bombs ------------------------------------------------------------------


@async_test
async def test_a_gzip_bomb_is_refused_quickly_in_bounded_memory_without_stalling_the_loop() -> None:
    bomb = gzip_bomb()  # ~1 MB on the wire, 1 GiB inflated

    async def answer(peer: Peer) -> None:
        peer.send(response(200, bomb, Content_Type="application/json", Content_Encoding="gzip"))
        await peer.flush()

    async with Server(serve_once(answer)) as server:
        async with measured("1 GiB gzip bomb (1 MB on the wire), whole read") as cost:
            reply = await get(server.url())
            with pytest.raises(http.TooLarge, match="decompresses to more than 33554432 bytes"):
                await reply.read(within=5)
        assert cost.seconds < 3.0  # today: ~11 s to inflate the whole GiB
        assert cost.python_peak < 80 * MiB  # today: over 1 GiB
        assert cost.loop_stall < 0.5  # one 256 KiB inflate step at a time (today: ~11 s in one go)
        await assert_dropped_and_not_reused(server)


@async_test
async def test_a_streamed_gzip_bomb_stops_at_the_event_bound() -> None:
    bomb = gzip_bomb(256)  # 256 MiB of zeros: one endless "event" with no blank line

    async def answer(peer: Peer) -> None:
        peer.send(response(200, bomb, Content_Type="text/event-stream", Content_Encoding="gzip"))
        await peer.flush()

    from gateway.upstream.openai_compat import _sse_events

    async with Server(serve_once(answer)) as server:
        async with measured("256 MiB gzip bomb as an SSE stream") as cost:
            reply = await get(server.url())
            with pytest.raises(
                http.TooLarge, match="event of the upstream's stream exceeds 8388608 bytes"
            ):
                async for _ in _sse_events(reply):
                    pass
        assert cost.seconds < 3.0
        assert cost.python_peak < 80 * MiB
        assert cost.loop_stall < 0.5
        await assert_dropped_and_not_reused(server)


# -- bodies -----------------------------------------------------------------------------


@async_test
async def test_a_declared_body_over_the_bound_is_refused_before_it_is_read() -> None:
    async def answer(peer: Peer) -> None:
        peer.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            b"314572800\r\n\r\n"
        )
        peer.send(b"{" * 65536)  # and it would go on for 300 MB
        await peer.flush()

    async with Server(serve_once(answer)) as server:
        reply = await get(server.url())
        started = time.monotonic()
        with pytest.raises(http.TooLarge, match="314572800 bytes"):
            await reply.read(within=5)
        assert time.monotonic() - started < 0.5
        await assert_dropped_and_not_reused(server)


@async_test
async def test_a_chunked_body_over_the_bound_is_refused_as_it_arrives() -> None:
    piece = b"x" * MiB

    async def answer(peer: Peer) -> None:
        peer.send(response(200, length=False, Transfer_Encoding="chunked"))
        for _ in range(300):  # 300 MB, no length announced
            peer.send(chunk(piece))
            await peer.flush()

    async with Server(serve_once(answer)) as server:
        async with measured("300 MB chunked body") as cost:
            reply = await get(server.url())
            with pytest.raises(http.TooLarge, match="body exceeds 33554432 bytes"):
                await reply.read(within=8)
        assert cost.python_peak < 80 * MiB  # today: ~600 MiB (the body, then the join)
        await assert_dropped_and_not_reused(server)


def test_the_body_bound_is_the_setting(settings) -> None:
    settings.GATEWAY_UPSTREAM_MAX_BODY_BYTES = 4096

    @async_test
    async def scenario() -> None:
        async def answer(peer: Peer) -> None:
            peer.send(response(200, b"y" * 5000))
            await peer.flush()

        async with Server(serve_once(answer)) as server:
            reply = await get(server.url())
            with pytest.raises(http.TooLarge, match="4096"):
                await reply.read(within=2)
            await assert_dropped_and_not_reused(server)

    scenario()


# -- headers ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["many-headers", "one-endless-header"])
@async_test
async def test_headers_over_the_bound_are_refused_in_bounded_memory(shape: str) -> None:
    async def answer(peer: Peer) -> None:
        peer.send(b"HTTP/1.1 200 OK\r\n")
        if shape == "many-headers":
            line = b"X-Filler-%d: " + b"f" * 1000 + b"\r\n"
            for n in range(8000):  # 8 MB of headers
                peer.send(line % n)
                if n % 100 == 0:
                    await peer.flush()
        else:
            peer.send(b"X-Endless: ")
            for _ in range(8):
                peer.send(b"e" * MiB)
                await peer.flush()
        peer.send(b"Content-Length: 2\r\n\r\nok")
        await peer.flush()

    async with Server(serve_once(answer)) as server:
        async with measured(f"8 MB of response headers ({shape})") as cost:
            with pytest.raises(http.TooLarge, match="headers exceed 65536 bytes"):
                await get(server.url(), first_byte_timeout=5)
        assert cost.python_peak < 16 * MiB
        await assert_dropped_and_not_reused(server)


@async_test
async def test_interim_answers_count_against_the_header_bound() -> None:
    async def answer(peer: Peer) -> None:
        for _ in range(2000):  # endless 103 Early Hints, ~100 KB in all
            peer.send(
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
            )
        await peer.flush()

    async with Server(serve_once(answer)) as server:
        with pytest.raises(http.TooLarge, match="headers exceed"):
            await get(server.url())
        await assert_dropped_and_not_reused(server)


@async_test
async def test_answers_inside_the_bounds_still_pass() -> None:
    plain = b'{"data": "' + b"z" * (8 * MiB) + b'"}'
    packed = zlib.compress(plain)

    async def handler(peer: Peer) -> None:
        await peer.read_request()
        filler = "".join(
            f"X-Fill-{n}: {'v' * 500}\r\n" for n in range(100)
        ).encode()  # ~50 KB of headers
        peer.send(
            b"HTTP/1.1 200 OK\r\n"
            + filler
            + b"Content-Encoding: deflate\r\n"
            + f"Content-Length: {len(packed)}\r\n\r\n".encode()
            + packed
        )
        await peer.wait_eof()

    async with Server(handler) as server:
        reply = await get(server.url())
        assert len(reply.headers) > 100
        assert await reply.read(within=5) == plain
