"""The pooled HTTP/1.1 upstream client (gateway.upstream.http) against raw loopback servers.

Each test starts its own asyncio TCP server on 127.0.0.1 (port 0) and scripts, per
accepted connection, the exact bytes it answers: no mock of the client's internals.
Tests run their async body with asyncio.run (the project's convention, see
test_probes.py), so every test has its own event loop and therefore its own pools;
http.close_pools() runs at the end of each one.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gzip
import shutil
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.upstream import http

SHORT = 0.3  # seconds: the timeouts these tests expect to expire
GUARD = 10.0  # seconds: a test still running after this is hung, not slow


def async_test(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop; close that loop's pools at the end."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            try:
                await asyncio.wait_for(test(*args, **kwargs), GUARD)
            finally:
                http.close_pools()

        asyncio.run(main())

    return wrapper


# -- a scripted raw HTTP server --------------------------------------------------------


@dataclass
class Received:
    """One request as the server read it off the wire."""

    connection: int
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


class Peer:
    """One accepted connection, as the test's handler sees it."""

    def __init__(
        self, server: Server, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server, self.index, self.reader, self.writer = server, index, reader, writer
        self.eof = asyncio.Event()  # the client closed its side

    async def read_request(self) -> Received | None:
        """The next request, or None when the client closed the connection instead."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            assert not exc.partial, f"the connection ended inside a request head: {exc.partial!r}"
            self.eof.set()
            return None
        except ConnectionError:
            self.eof.set()
            return None
        request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ")
        headers = [(name, value.strip()) for name, value in (line.split(":", 1) for line in lines)]
        lengths = [value for name, value in headers if name.lower() == "content-length"]
        body = await self.reader.readexactly(int(lengths[0])) if lengths else b""
        received = Received(self.index, method, target, version, headers, body, head + body)
        self.server.requests.append(received)
        return received

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def flush(self) -> None:
        await self.writer.drain()

    async def wait_eof(self) -> None:
        """Read (and drop) whatever comes until the client closes the connection."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.eof.set()

    async def answer_requests(self, body: bytes = b"ok", **headers: str) -> None:
        """Keep-alive: answer each request with `body` until the client closes."""
        while await self.read_request() is not None:
            self.send(response(200, body, **headers))


Handler = Callable[[Peer], Awaitable[None]]


class Server:
    """asyncio.start_server on 127.0.0.1:0 whose handler the test writes.

    Counts connections: accepted in all, open now, and the most open at once (a
    connection counts as open from its accept until the handler is done with it
    and the server closed it)."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.accepted = 0
        self.open = 0
        self.max_open = 0
        self.peers: list[Peer] = []
        self.requests: list[Received] = []
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if exc_info[0] is None and self.errors:
            raise AssertionError(f"the test server's handler failed: {self.errors!r}")

    def url(self, path: str = "/") -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(self, self.accepted, reader, writer)
        self.peers.append(peer)
        self.accepted += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)


def response(
    status: int = 200, body: bytes = b"", *, reason: str = "OK", length: bool = True, **headers: str
) -> bytes:
    """A status line, headers (underscores in names become dashes) and a body."""
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    lines += [f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items()]
    if length:
        lines.append(f"Content-Length: {len(body)}\r\n")
    return "".join(lines).encode("latin-1") + b"\r\n" + body


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (b"" is the last chunk)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def get(url: str, **options: Any) -> http.Response:
    options.setdefault("headers", {})
    options.setdefault("connect_timeout", 2.0)
    options.setdefault("first_byte_timeout", 2.0)
    return await http.request("GET", url, **options)


def unused_port() -> int:
    """A port with nothing listening on 127.0.0.1 (bound, noted, closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the exchange ----------------------------------------------------------------------


@async_test
async def test_a_post_sends_host_length_headers_and_body_and_reads_a_content_length_answer() -> (
    None
):
    answer = b'{"id": "chatcmpl-1"}'

    async def handler(peer: Peer) -> None:
        await peer.read_request()
        peer.send(
            response(
                201,
                answer,
                reason="Created",
                Content_Type="application/json",
                X_Request_ID="Abc-123",
            )
        )
        await peer.wait_eof()

    body = b'{"model": "m", "messages": []}'
    async with Server(handler) as server:
        reply = await http.request(
            "POST",
            server.url("/v1/chat/completions?trace=1"),
            headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"},
            body=body,
            connect_timeout=2,
            first_byte_timeout=2,
        )
        assert reply.status == 201
        assert reply.headers["content-type"] == "application/json"
        assert reply.headers["x-request-id"] == "Abc-123"  # names lowercased, values as sent
        assert reply.headers["content-length"] == str(len(answer))
        assert all(name == name.lower() for name in reply.headers)
        assert await reply.read(within=2) == answer

        [sent] = server.requests
        assert (sent.method, sent.target, sent.version) == (
            "POST",
            "/v1/chat/completions?trace=1",
            "HTTP/1.1",
        )
        assert sent.header("Host") == f"127.0.0.1:{server.port}"
        assert sent.header("Content-Length") == str(len(body))
        assert sent.header("Authorization") == "Bearer sk-test"
        assert sent.header("Content-Type") == "application/json"
        assert sent.body == body
        assert sent.raw.endswith(b"\r\n\r\n" + body)


@async_test
async def test_a_get_without_a_body_sends_no_content_length() -> None:
    async def handler(peer: Peer) -> None:
        await peer.answer_requests(b"[]")

    async with Server(handler) as server:
        reply = await get(server.url("/v1/models"), headers={"User-Agent": "smart-balancers"})
        assert (reply.status, await reply.read(within=2)) == (200, b"[]")
        [sent] = server.requests
        assert (sent.method, sent.target) == ("GET", "/v1/models")
        assert sent.header("Content-Length") is None and sent.body == b""
        assert sent.header("User-Agent") == "smart-balancers"


@async_test
async def test_sequential_requests_reuse_one_keep_alive_connection() -> None:
    async def handler(peer: Peer) -> None:
        while (received := await peer.read_request()) is not None:
            peer.send(response(200, b"answer to " + received.body))

    async with Server(handler) as server:
        for n in range(3):
            reply = await http.request(
                "POST",
                server.url(),
                headers={},
                body=b"%d" % n,
                connect_timeout=2,
                first_byte_timeout=2,
            )
            assert await reply.read(within=2) == b"answer to %d" % n
        assert server.accepted == 1
        assert [r.connection for r in server.requests] == [0, 0, 0]


@async_test
async def test_a_chunked_answer_is_read_whole_and_streamed_in_order() -> None:
    parts = [b"alpha,", b"beta,", b"gamma-" * 1000]

    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            peer.send(response(200, length=False, Transfer_Encoding="chunked"))
            for part in parts:
                peer.send(chunk(part))
                await peer.flush()
            peer.send(chunk(b""))

    async with Server(handler) as server:
        whole = await get(server.url())
        assert "content-length" not in whole.headers
        assert await whole.read(within=2) == b"".join(parts)

        streamed = await get(server.url())
        pieces = [piece async for piece in streamed.iter_chunks()]
        assert pieces and all(pieces)
        assert b"".join(pieces) == b"".join(parts)  # in order, nothing lost or repeated
        assert (
            server.accepted == 1
        )  # the chunked framing ended both answers: the connection was kept


@async_test
async def test_a_close_delimited_answer_is_read_whole_and_the_connection_not_kept() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        peer.send(response(200, length=False, Content_Type="text/plain"))
        peer.send(b"no length, ")
        await peer.flush()
        peer.send(b"no chunks: the end is the close")
        # the handler returns: the server closes the connection

    async with Server(handler) as server:
        reply = await get(server.url())
        assert await reply.read(within=2) == b"no length, no chunks: the end is the close"
        reply = await get(server.url())
        assert await reply.read(within=2) == b"no length, no chunks: the end is the close"
        assert server.accepted == 2


@async_test
async def test_connection_close_in_an_answer_makes_the_next_request_open_a_new_connection() -> None:
    async def handler(peer: Peer) -> None:
        # Says Connection: close but keeps the connection open: the client must act on the header.
        while await peer.read_request() is not None:
            peer.send(response(200, b"bye", Connection="close"))

    async with Server(handler) as server:
        first = await get(server.url())
        assert first.headers["connection"] == "close"
        assert await first.read(within=2) == b"bye"
        second = await get(server.url())
        assert await second.read(within=2) == b"bye"
        assert server.accepted == 2
        assert [r.connection for r in server.requests] == [0, 1]
        await asyncio.wait_for(server.peers[0].eof.wait(), 2)  # and the client closed the first one


# -- keep-alive races ------------------------------------------------------------------


@pytest.mark.parametrize("pause", [0.0, 0.05], ids=["no-pause", "short-pause"])
@async_test
async def test_an_idle_connection_the_server_closed_is_replaced(pause: float) -> None:
    async def handler(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            peer.send(response(200, b"first"))
            return  # closes right after the first answer
        await peer.answer_requests(b"second")

    async with Server(handler) as server:
        first = await get(server.url())
        assert await first.read(within=2) == b"first"
        await asyncio.sleep(pause)  # the client may or may not have seen the close yet
        second = await get(server.url())
        assert await second.read(within=2) == b"second"
        assert server.accepted == 2
        assert server.requests[-1].connection == 1


@async_test
async def test_a_reused_connection_closed_after_reading_the_request_is_retried_on_a_new_one() -> (
    None
):
    async def handler(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            peer.send(response(200, b"first"))
            await peer.read_request()  # the second request arrives on the old connection...
            return  # ...and the server closes it without a byte of answer
        await peer.answer_requests(b"from the new connection")

    async with Server(handler) as server:
        first = await http.request(
            "POST", server.url(), headers={}, body=b"one", connect_timeout=2, first_byte_timeout=2
        )
        assert await first.read(within=2) == b"first"
        second = await http.request(
            "POST", server.url(), headers={}, body=b"two", connect_timeout=2, first_byte_timeout=2
        )
        assert second.status == 200
        assert await second.read(within=2) == b"from the new connection"
        assert [(r.connection, r.body) for r in server.requests] == [
            (0, b"one"),
            (0, b"two"),
            (1, b"two"),
        ]
        assert server.accepted == 2


@async_test
async def test_a_new_connection_closed_before_answering_is_not_retried() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()  # read the request, close without answering

    async with Server(handler) as server:
        with pytest.raises(http.ConnectError):
            await get(server.url())
        assert server.accepted == 1 and len(server.requests) == 1


# -- content encodings -----------------------------------------------------------------


@async_test
async def test_a_gzip_answer_is_decompressed_whole_and_streamed() -> None:
    plain = b'{"choices": [{"message": {"content": "' + b"compressible " * 500 + b'"}}]}'
    packed = gzip.compress(plain)

    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            peer.send(
                response(200, length=False, Content_Encoding="gzip", Transfer_Encoding="chunked")
            )
            for start in range(0, len(packed), 100):
                peer.send(chunk(packed[start : start + 100]))
                await peer.flush()
            peer.send(chunk(b""))

    async with Server(handler) as server:
        reply = await get(server.url(), headers={"Accept-Encoding": "gzip"})
        assert reply.headers["content-encoding"] == "gzip"
        assert await reply.read(within=2) == plain
        streamed = await get(server.url())
        assert b"".join([piece async for piece in streamed.iter_chunks()]) == plain
        assert server.accepted == 1


@async_test
async def test_an_unknown_content_encoding_is_a_protocol_error() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        peer.send(response(200, b"\x1b\x03\x00brotli-ish", Content_Encoding="br"))
        await peer.wait_eof()

    async with Server(handler) as server:
        with pytest.raises(http.ProtocolError, match="br"):
            await get(server.url())
        await asyncio.wait_for(server.peers[0].eof.wait(), 2)  # the connection was closed, not kept


# -- failures --------------------------------------------------------------------------


@async_test
async def test_a_refused_connection_is_a_connect_error() -> None:
    with pytest.raises(http.ConnectError):
        await get(f"http://127.0.0.1:{unused_port()}/v1/models")


@async_test
async def test_headers_that_never_come_time_out_and_the_connection_is_dropped() -> None:
    async def handler(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            await peer.wait_eof()  # never answers
            return
        await peer.answer_requests(b"on time")

    async with Server(handler) as server:
        with pytest.raises(TimeoutError):
            await get(server.url(), first_byte_timeout=SHORT)
        await asyncio.wait_for(server.peers[0].eof.wait(), 2)
        reply = await get(server.url())
        assert await reply.read(within=2) == b"on time"
        assert server.accepted == 2 and server.requests[-1].connection == 1


@async_test
async def test_a_body_that_stalls_after_the_headers_times_out_and_the_connection_is_dropped() -> (
    None
):
    async def handler(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            peer.send(response(200, length=False, Content_Length="10") + b"abc")  # 7 bytes short
            await peer.wait_eof()
            return
        await peer.answer_requests(b"on time")

    async with Server(handler) as server:
        reply = await get(server.url())
        assert reply.status == 200
        with pytest.raises(TimeoutError):
            await reply.read(within=SHORT)
        await asyncio.wait_for(server.peers[0].eof.wait(), 2)
        reply = await get(server.url())
        assert await reply.read(within=2) == b"on time"
        assert server.accepted == 2 and server.requests[-1].connection == 1


@async_test
async def test_the_server_closing_mid_body_is_a_connect_error_from_read() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        peer.send(response(200, length=False, Content_Length="100") + b"only ten b")

    async with Server(handler) as server:
        reply = await get(server.url())
        assert reply.status == 200
        with pytest.raises(http.ConnectError):
            await reply.read(within=2)


@async_test
async def test_the_server_closing_mid_stream_is_a_connect_error_after_the_data_it_sent() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        peer.send(
            response(200, length=False, Transfer_Encoding="chunked") + chunk(b"data: partial\n\n")
        )

    async with Server(handler) as server:
        reply = await get(server.url())
        received = []
        with pytest.raises(http.ConnectError):
            async for piece in reply.iter_chunks():
                received.append(piece)
        assert b"".join(received) == b"data: partial\n\n"


@async_test
async def test_garbage_instead_of_http_is_a_protocol_error() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        peer.send(b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n\r\n")
        await peer.wait_eof()

    async with Server(handler) as server:
        with pytest.raises(http.ProtocolError):
            await get(server.url())
        await asyncio.wait_for(server.peers[0].eof.wait(), 2)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Note": "a\r\nInjected: yes"},
        {"X-Note": "line\nbreak"},
        {"X-Note": "carriage\rreturn"},
        {"X-Bad\r\nName": "v"},
        {"X-Bad:Name": "v"},
    ],
    ids=["crlf-value", "lf-value", "cr-value", "crlf-name", "colon-name"],
)
@async_test
async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(
    headers: dict[str, str],
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.answer_requests(b"clean")

    async with Server(handler) as server:
        with pytest.raises(http.ProtocolError):
            await http.request(
                "POST",
                server.url(),
                headers=headers,
                body=b"{}",
                connect_timeout=2,
                first_byte_timeout=2,
            )
        reply = await get(server.url(), headers={"X-Note": "clean"})
        assert await reply.read(within=2) == b"clean"
        # The first bytes the server ever received are the clean request's.
        [sent] = server.requests
        assert sent.method == "GET" and sent.header("X-Note") == "clean"
        assert b"Injected" not in sent.raw and server.accepted == 1


# -- the pool limit, cancellation, streaming ------------------------------------------


@pytest.mark.parametrize("closing", [False, True], ids=["keep-alive", "connection-close"])
@async_test
async def test_max_connections_one_serves_concurrent_requests_one_connection_at_a_time(
    closing: bool,
) -> None:
    async def handler(peer: Peer) -> None:
        while (received := await peer.read_request()) is not None:
            await asyncio.sleep(0.05)  # long enough for a second connection to show up if it would
            if closing:
                peer.send(response(200, received.body, Connection="close"))
                return  # the server closes first: counted closed before the client can reconnect
            peer.send(response(200, received.body))

    async def call(n: int) -> bytes:
        reply = await http.request(
            "POST",
            server.url(),
            headers={},
            body=b"%d" % n,
            connect_timeout=2,
            first_byte_timeout=2,
            max_connections=1,
        )
        return await reply.read(within=2)

    async with Server(handler) as server:
        assert await asyncio.gather(call(1), call(2), call(3)) == [b"1", b"2", b"3"]
        assert server.max_open == 1
        assert server.accepted == (3 if closing else 1)


@async_test
async def test_cancelling_a_request_waiting_for_headers_closes_its_connection() -> None:
    got_request = asyncio.Event()

    async def handler(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            got_request.set()
            await peer.wait_eof()  # never answers
            return
        await peer.answer_requests(b"after the cancel")

    async with Server(handler) as server:
        task = asyncio.create_task(get(server.url(), first_byte_timeout=GUARD))
        await got_request.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.peers[0].eof.wait(), 2)
        reply = await get(server.url())
        assert await reply.read(within=2) == b"after the cancel"
        assert server.accepted == 2


@async_test
async def test_a_stream_yields_its_first_event_before_the_server_sends_the_last() -> None:
    events = [
        b'data: {"n": 1}\n\n',
        b'data: {"n": 2}\n\n',
        b'data: {"n": 3}\n\n',
        b"data: [DONE]\n\n",
    ]
    headers_received = asyncio.Event()
    first_received = asyncio.Event()
    sent_last = asyncio.Event()

    async def handler(peer: Peer) -> None:
        await peer.read_request()
        peer.send(
            response(
                200, length=False, Content_Type="text/event-stream", Transfer_Encoding="chunked"
            )
        )
        await peer.flush()
        await (
            headers_received.wait()
        )  # the first event comes alone, after the headers were handed over
        peer.send(chunk(events[0]))
        await peer.flush()
        await first_received.wait()  # the client has the first event while the answer is still open
        for event in events[1:]:
            await asyncio.sleep(0.02)
            peer.send(chunk(event))
            await peer.flush()
        sent_last.set()
        peer.send(chunk(b""))
        await peer.wait_eof()

    async with Server(handler) as server:
        reply = await http.request(
            "POST",
            server.url("/v1/chat/completions"),
            headers={"Accept": "text/event-stream"},
            body=b'{"stream": true}',
            connect_timeout=2,
            first_byte_timeout=2,
        )
        assert reply.headers["content-type"] == "text/event-stream"
        headers_received.set()
        received: list[bytes] = []
        async for piece in reply.iter_chunks():
            if not received:
                assert piece == events[0]
                assert not sent_last.is_set()
                first_received.set()
            received.append(piece)
        assert sent_last.is_set()
        assert b"".join(received) == b"".join(events)
        assert server.accepted == 1


@async_test
async def test_bytes_arriving_on_an_idle_connection_make_the_client_drop_it() -> None:
    released = asyncio.Event()

    async def handler(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            peer.send(response(200, b"first"))
            await released.wait()
            peer.send(response(200, b"nobody asked for this"))  # out of step: answers no request
            await peer.wait_eof()
            return
        await peer.answer_requests(b"second")

    async with Server(handler) as server:
        first = await get(server.url())
        assert await first.read(within=2) == b"first"  # the connection is idle in the pool now
        released.set()
        await asyncio.wait_for(server.peers[0].eof.wait(), 2)  # the client closed it
        second = await get(server.url())
        assert await second.read(within=2) == b"second"
        assert server.accepted == 2


@async_test
async def test_a_no_content_answer_without_length_ends_at_headers_and_keeps_the_connection() -> (
    None
):
    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            peer.send(response(204, reason="No Content", length=False))

    async with Server(handler) as server:
        for _ in range(2):
            reply = await get(server.url())
            assert (reply.status, await reply.read(within=2)) == (204, b"")
        assert server.accepted == 1


# -- limits, interim answers, broken encodings, closing, out-of-step upstreams -----------
# Each of these failed against the client's first version (found while writing this file).

HANG = 1.0  # a request whose own timeout is SHORT and has not ended after this is hung


async def finished_within(task: asyncio.Task[Any], seconds: float) -> bool:
    """Whether `task` ended within `seconds`; one still running is cancelled. Either way
    its outcome is collected, so no exception is left unretrieved."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return bool(done)


@async_test
async def test_waiting_for_a_free_connection_respects_first_byte_timeout() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        peer.send(response(200, length=False, Content_Length="10") + b"abc")  # the body stalls
        await peer.wait_eof()

    async with Server(handler) as server:
        held = await get(server.url(), max_connections=1)  # holds the only connection
        waiting = asyncio.create_task(
            get(server.url(), first_byte_timeout=SHORT, max_connections=1)
        )
        ended = await finished_within(waiting, HANG)
        held.close()
        assert ended, f"no TimeoutError {HANG}s after a first_byte_timeout of {SHORT}s"
        assert isinstance(waiting.exception(), TimeoutError)


@async_test
async def test_a_cancelled_waiter_does_not_strand_the_next_one() -> None:
    async def handler(peer: Peer) -> None:
        await peer.answer_requests(b"ok")

    async with Server(handler) as server:
        holder = await get(server.url(), max_connections=1)
        second = asyncio.create_task(get(server.url(), max_connections=1))
        third = asyncio.create_task(get(server.url(), first_byte_timeout=SHORT, max_connections=1))
        for _ in range(5):
            await asyncio.sleep(0)  # both reach the pool and wait for its only connection
        assert not second.done() and not third.done()
        assert await holder.read(within=2) == b"ok"  # complete already: releases, wakes `second`...
        second.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(second, return_exceptions=True)
        assert await finished_within(third, HANG), "the third request never got the idle connection"
        assert await third.result().read(within=2) == b"ok"


@async_test
async def test_an_interim_1xx_answer_is_skipped() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        peer.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        await peer.flush()
        await asyncio.sleep(0.05)  # ordering only: the final answer comes in a later segment
        peer.send(response(200, b"final"))
        await peer.wait_eof()

    async with Server(handler) as server:
        reply = await get(server.url())
        assert reply.status == 200
        assert await reply.read(within=2) == b"final"


@async_test
async def test_a_truncated_gzip_body_is_a_protocol_error() -> None:
    packed = gzip.compress(b"hello world " * 100)

    async def handler(peer: Peer) -> None:
        await peer.read_request()
        peer.send(
            response(200, packed[: len(packed) // 2], Content_Encoding="gzip")
        )  # a whole HTTP body, half a gzip
        await peer.wait_eof()

    async with Server(handler) as server:
        reply = await get(server.url())
        with pytest.raises(http.ProtocolError):
            await reply.read(within=2)  # returns b"hello worl" instead


@async_test
async def test_a_corrupt_gzip_body_does_not_leak_the_connection() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        peer.send(response(200, b"this is not gzip", Content_Encoding="gzip"))
        await peer.wait_eof()

    async with Server(handler) as server:
        reply = await get(server.url())
        with pytest.raises(http.ProtocolError, match="corrupt"):
            await reply.read(within=2)
        # like every other failed read(), the connection should be closed
        await asyncio.wait_for(server.peers[0].eof.wait(), HANG)


@async_test
async def test_max_connections_applies_to_every_request() -> None:
    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await asyncio.sleep(0.05)
            peer.send(response(200, b"ok"))

    async def call() -> bytes:
        reply = await get(server.url(), max_connections=1)
        return await reply.read(within=2)

    async with Server(handler) as server:
        probe = await get(
            server.url()
        )  # e.g. a health probe with the default limit, first in this loop
        await probe.read(within=2)
        assert await asyncio.gather(call(), call(), call()) == [b"ok"] * 3
        assert server.max_open == 1


@async_test
async def test_close_pools_closes_in_flight_connections_when_their_answer_ends() -> None:
    async def handler(peer: Peer) -> None:
        await peer.answer_requests(b"ok")

    async with Server(handler) as server:
        reply = await get(server.url())
        http.close_pools()
        assert await reply.read(within=2) == b"ok"
        await asyncio.wait_for(server.peers[0].eof.wait(), HANG)


@async_test
async def test_bytes_after_the_end_of_an_answer_are_not_part_of_it() -> None:
    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            peer.send(response(200, b"hi") + response(200, b"bye"))  # one write: one segment

    async with Server(handler) as server:
        reply = await get(server.url())
        assert await reply.read(within=2) == b"hi"


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Any) -> Iterator[tuple[str, str]]:
    """A self-signed certificate for 127.0.0.1 (openssl, as on any Debian machine)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:secure.test",
            "-keyout",
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
    )
    http._tls_context.cache_clear()
    yield cert, key
    http._tls_context.cache_clear()


def _server_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def _answer_ok(peer: Peer) -> None:
    await peer.answer_requests(b"secure")


def test_an_https_upstream_signed_by_a_trusted_ca_is_read(
    certificate: tuple[str, str], monkeypatch: Any
) -> None:
    # SSL_CERT_FILE is how an operator trusts a private CA: the client uses the system's
    # default verify paths, which OpenSSL reads from it.
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", cert)

    @async_test
    async def run() -> None:
        async with Server(_answer_ok, tls=_server_context(cert, key)) as server:
            for _ in range(2):
                reply = await get(server.url("/v1/models"))
                assert (reply.status, await reply.read(within=2)) == (200, b"secure")
            assert server.accepted == 1  # kept alive over TLS too

    run()


def test_an_https_upstream_with_an_untrusted_certificate_is_a_connect_error(
    certificate: tuple[str, str],
) -> None:
    cert, key = certificate

    @async_test
    async def run() -> None:
        async with Server(_answer_ok, tls=_server_context(cert, key)) as server:
            with pytest.raises(http.ConnectError, match="SSL"):
                await get(server.url())

    run()


# -- outbound proxies (HTTPS_PROXY / HTTP_PROXY / NO_PROXY) ---------------------------------


@pytest.fixture
def proxy_environment(monkeypatch: Any) -> Iterator[Any]:
    """Clean proxy variables; the client's cached view of them is reset around the test."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    http._proxy_environment.cache_clear()
    http.proxy_for.cache_clear()
    yield monkeypatch
    http._proxy_environment.cache_clear()
    http.proxy_for.cache_clear()


def test_an_http_upstream_is_asked_through_the_proxy_in_absolute_form(
    proxy_environment: Any,
) -> None:
    @async_test
    async def run() -> None:
        async def proxy(peer: Peer) -> None:
            while (received := await peer.read_request()) is not None:
                peer.send(response(200, f"{received.method} {received.target}".encode()))

        async with Server(proxy) as server:
            proxy_environment.setenv("HTTP_PROXY", f"http://ops:s%40cret@127.0.0.1:{server.port}")
            reply = await get("http://upstream.test:8080/v1/models?x=1")
            assert await reply.read(within=2) == b"GET http://upstream.test:8080/v1/models?x=1"
            [received] = server.requests
            assert received.header("Host") == "upstream.test:8080"
            assert (
                received.header("Proxy-Authorization")
                == "Basic " + base64.b64encode(b"ops:s@cret").decode()
            )

    run()


def test_an_https_upstream_is_reached_through_a_connect_tunnel_with_tls_end_to_end(
    certificate: tuple[str, str], proxy_environment: Any
) -> None:
    cert, key = certificate
    proxy_environment.setenv("SSL_CERT_FILE", cert)

    @async_test
    async def run() -> None:
        async with Server(_answer_ok, tls=_server_context(cert, key)) as upstream:
            connects: list[str] = []

            async def proxy(peer: Peer) -> None:
                received = await peer.read_request()
                assert received is not None and received.method == "CONNECT"
                connects.append(received.target)
                reader, writer = await asyncio.open_connection("127.0.0.1", upstream.port)
                peer.send(b"HTTP/1.1 200 Connection established\r\n\r\n")

                async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                    while data := await source.read(65536):
                        sink.write(data)
                    sink.close()

                await asyncio.gather(
                    pipe(peer.reader, writer), pipe(reader, peer.writer), return_exceptions=True
                )

            async with Server(proxy) as server:
                proxy_environment.setenv("HTTPS_PROXY", f"http://127.0.0.1:{server.port}")
                for _ in range(2):
                    reply = await get("https://secure.test/v1/models")
                    assert (reply.status, await reply.read(within=2)) == (200, b"secure")
                assert connects == ["secure.test:443"]  # one tunnel, kept alive
                assert upstream.requests[0].header("Host") == "secure.test"

    run()


def test_a_proxy_that_refuses_the_tunnel_is_a_connect_error(proxy_environment: Any) -> None:
    @async_test
    async def run() -> None:
        async def proxy(peer: Peer) -> None:
            await peer.read_request()
            peer.send(response(407, b"", reason="Proxy Authentication Required"))

        async with Server(proxy) as server:
            proxy_environment.setenv("HTTPS_PROXY", f"http://127.0.0.1:{server.port}")
            with pytest.raises(http.ConnectError, match="HTTP 407"):
                await get("https://secure.test/")

    run()


def test_no_proxy_and_loopback_upstreams_bypass_the_proxy(proxy_environment: Any) -> None:
    dead = unused_port()
    proxy_environment.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead}")
    proxy_environment.setenv("NO_PROXY", "internal.example")

    @async_test
    async def run() -> None:
        async with Server(_answer_ok) as server:
            reply = await get(server.url())  # 127.0.0.1: never through a proxy
            assert await reply.read(within=2) == b"secure"
        assert http.proxy_for(http.Origin("http", "internal.example", 80)) is None
        assert http.proxy_for(http.Origin("http", "api.example", 80)) == http.Proxy(
            http.Origin("http", "127.0.0.1", dead), None
        )

    run()
