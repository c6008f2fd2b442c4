"""A small pooled HTTP/1.1 client for upstream calls: asyncio protocols + httptools.

The gateway needs a narrow slice of HTTP from its client: a JSON POST (or a GET
for a probe) to a handful of origins, keep-alive connections, the answer whole
or as a stream, a connect timeout and a deadline for the first byte. aiohttp did
that at about a fifth of the gateway worker's CPU (py-spy at 256 connections:
ClientSession._request, its request/response objects, the connector, the stream
reader and two asyncio timeouts per call); this client parses with httptools
(llhttp, Node.js's parser, already installed as uvicorn's), writes each request
in one call, and arms one timer per wait. See docs/benchmarks.md for the figures.

    response = await request("POST", url, headers={...}, body=b"...",
                             connect_timeout=5, first_byte_timeout=30)
    body = await response.read(within=60)        # or: async for chunk in response.iter_chunks()

Connections are pooled per event loop and origin (most recently used first,
dropped after KEEPALIVE_SECONDS idle), at most `max_connections` open per origin.
A request on a reused connection that the upstream closed before answering a
single byte is sent once more on a new connection: that is a keep-alive race,
not an upstream failure.

Hostile upstreams (docs/reliability.md): every request carries `Limits` (by
default the GATEWAY_UPSTREAM_MAX_* settings). Header bytes, body bytes and
decompressed bytes past them raise TooLarge (a ProtocolError: an upstream
failure, so the gateway fails over) and the connection is dropped, never
reused. gzip/deflate are inflated in steps of INFLATE_STEP bytes of output,
stopping at the bound, so a compression bomb costs at most the bound in
memory and never holds the event loop for more than one step. Streamed
answers are bounded per SSE event (openai_compat) and by the request's
deadline, not in total.

Egress policy (targetgroups/egress.py): before connecting, the upstream's name
is resolved here and only addresses the policy allows are connected to
(link-local and metadata addresses never; loopback and private networks when
`Limits.allow_private`); a refused one raises EgressRefused, a ConnectError.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import socket
import ssl
import time
import urllib.request
import weakref
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httptools

from targetgroups import egress

KEEPALIVE_SECONDS = 30.0
STREAM_HIGH_WATER = 256 * 1024  # pause reading a stream that the client is slower to take than this
INFLATE_STEP = 256 * 1024  # bytes of decompressed output per step; the loop runs between steps


class ClientError(Exception):
    """The exchange failed below HTTP: connection, framing or encoding."""


class ConnectError(ClientError):
    """No connection, or it broke before the answer was whole."""


class ConnectTimeout(ConnectError):
    """No connection within the connect timeout."""


class ProtocolError(ClientError):
    """The upstream's bytes are not the HTTP this client can read."""


class StallTimeout(TimeoutError):
    """The body started, then no byte arrived for the idle bound (`Response.read(idle=...)`)."""


class TooLarge(ProtocolError):
    """The answer's headers, body or decompressed body went past its bound (Limits)."""


class EgressRefused(ConnectError):
    """The egress policy refuses the address the upstream's name leads to."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may cost (the defaults are the settings'; see default_limits)."""

    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = (
        32 * 1024 * 1024
    )  # a whole body as sent (after chunked framing, before decoding)
    max_decompressed_bytes: int = 32 * 1024 * 1024
    max_event_bytes: int = 8 * 1024 * 1024  # one SSE event of a streamed answer (openai_compat)
    allow_private: bool = False  # egress: loopback and private networks may be called


_default_limits: tuple[tuple[Any, ...], Limits] | None = None


def default_limits() -> Limits:
    """Limits from the GATEWAY_UPSTREAM_MAX_* and GATEWAY_EGRESS_ALLOW_PRIVATE settings: built
    once, again when a setting differs (a test's override). Compared each call rather than
    forgotten on Django's setting_changed signal: that signal lives in django.test, whose
    import (the test client, unittest, jinja2) made every worker bigger (docs/benchmarks.md,
    "Worker memory")."""
    global _default_limits
    from django.conf import settings

    values = (
        settings.GATEWAY_UPSTREAM_MAX_HEADER_BYTES,
        settings.GATEWAY_UPSTREAM_MAX_BODY_BYTES,
        settings.GATEWAY_UPSTREAM_MAX_DECOMPRESSED_BYTES,
        settings.GATEWAY_UPSTREAM_MAX_EVENT_BYTES,
        settings.GATEWAY_EGRESS_ALLOW_PRIVATE,
    )
    if _default_limits is None or _default_limits[0] != values:
        _default_limits = (values, Limits(*values))
    return _default_limits[1]


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


@functools.lru_cache(maxsize=1024)
def split_url(url: str) -> tuple[Origin, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"not an http(s) URL: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ClientError(f"bad port in {url!r}") from None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Origin(parts.scheme, parts.hostname, port), target


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


# -- outbound proxies -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy from HTTPS_PROXY / HTTP_PROXY: https upstreams go through a CONNECT
    tunnel (TLS end to end), http ones as absolute-form requests."""

    origin: Origin
    authorization: str | None  # "Basic ..." from user:password in the proxy's URL


@functools.cache
def _proxy_environment() -> dict[str, str]:
    # Read once per process, like the rest of the settings.
    return urllib.request.getproxies_environment()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The standard library's NO_PROXY matcher; public but undeclared in typeshed.
_bypass_proxy: Callable[[str, dict[str, str]], bool] = vars(urllib.request)[
    "proxy_bypass_environment"
]


@functools.lru_cache(maxsize=1024)
def proxy_for(origin: Origin) -> Proxy | None:
    """The proxy for this origin: the scheme's *_PROXY variable unless NO_PROXY (or loopback) says
    not."""
    environment = _proxy_environment()
    url = environment.get(origin.scheme)
    if not url or _is_loopback(origin.host) or _bypass_proxy(origin.host, environment):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ClientError(
            f"{origin.scheme.upper()}_PROXY must be an http:// proxy URL, not {url!r}"
        )
    authorization = None
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(secret).decode("ascii")
    return Proxy(Origin("http", parts.hostname, parts.port or 80), authorization)


class _Tunnel(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT; the connection's own protocol takes over after it."""

    def __init__(self) -> None:
        self.buffer = b""
        self.answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and not self.answer.done():
            status = self.buffer.split(b"\r\n", 1)[0].split(b" ")
            self.answer.set_result(int(status[1]) if len(status) > 1 and status[1].isdigit() else 0)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(
                ConnectError("the proxy closed the connection before answering CONNECT")
            )


class _Connection(asyncio.Protocol):
    """One keep-alive connection; its parser calls back into it as bytes arrive."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.limits = Limits()
        self.closed = False
        self.idle_since = 0.0
        self.counted = True  # still counted in pool.open
        self.allow_private = False  # the egress policy it was opened under
        self._start()

    def _start(self) -> None:
        self.active = False  # a request is in flight
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.head_bytes = (
            0  # bytes received before the answer's headers were whole (interim answers too)
        )
        self.header_bytes = 0  # the header lines parsed so far
        self.body_bytes = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = True
        self.until_close = False  # the body ends when the connection does
        self.streaming = False
        self.interim = False  # parsing a 1xx answer, which precedes the real one
        self.paused = False
        self.got_bytes = False
        self.last_byte_at = 0.0  # loop time of the last bytes received
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timeout_error: BaseException | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.active:  # nothing was asked: the connection is out of step
            self._abort(ProtocolError("the upstream sent bytes that answer no request"))
            return
        self.got_bytes = True
        self.last_byte_at = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._abort(ProtocolError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:  # a callback's _refuse() has set the error already
            self._abort(ProtocolError(f"the upstream's answer is not valid HTTP/1.1 ({exc})"))
            return
        if not self.headers_done and self.error is None:
            # The parser holds an unfinished header line itself: bound what it may hold.
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                self._abort(
                    TooLarge(f"the upstream's headers exceed {self.limits.max_header_bytes} bytes")
                )

    def _refuse(self, error: TooLarge) -> None:
        """Drop the connection with `error`, and stop the parser (httptools re-raises from
        feed_data)."""
        self._abort(error)
        raise error

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.lost(self)
        if self.active and not self.complete and self.error is None:
            if self.until_close and self.headers_done:
                self.complete = True
            else:
                self.error = ConnectError(
                    "the upstream closed the connection before the answer was whole"
                )
        self._wake()

    # -- httptools callbacks

    # Bytes after the end of the answer (before it is released) belong to no request:
    # they are dropped, and the connection, out of step with the upstream, is not reused.

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            self.keep_alive = False
            return
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.limits.max_header_bytes:
            self._refuse(
                TooLarge(f"the upstream's headers exceed {self.limits.max_header_bytes} bytes")
            )
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.complete:
            self.keep_alive = False
            return
        status = self.parser.get_status_code()
        if (
            100 <= status < 200 and status != 101
        ):  # 100 Continue, 103 Early Hints...: skip (RFC 9110 15.2)
            self.interim = True
            self.headers = []  # header_bytes keeps counting: interim answers share the bound
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        names = {name for name, _ in self.headers}
        if (
            b"content-length" not in names
            and b"transfer-encoding" not in names
            and self.status not in (204, 304)
        ):
            self.until_close = True
            self.keep_alive = False
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.keep_alive = False
            return
        self.body_bytes += len(body)
        if self.body_bytes > self.limits.max_body_bytes and not self.streaming:
            self._refuse(
                TooLarge(f"the upstream's body exceeds {self.limits.max_body_bytes} bytes")
            )
        self.chunks.append(body)
        self.buffered += len(body)
        if self.streaming:
            if self.buffered > STREAM_HIGH_WATER and not self.paused and self.transport is not None:
                self.transport.pause_reading()
                self.paused = True
            self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.complete:
            self.keep_alive = False
            return
        self.complete = True
        self._wake()

    # -- waiting

    @property
    def has_data(self) -> bool:
        return bool(self.chunks) or self.complete

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_for(self, ready: str, within: float | None, idle: float | None = None) -> None:
        """Wait until attribute `ready` is true; raise the connection's error, or TimeoutError
        after `within` seconds (one timer, not an asyncio.timeout: no task cancellation), or
        StallTimeout when `idle` seconds pass without a byte."""
        if within is not None:
            if within <= 0:
                raise TimeoutError
            if idle is not None and idle < within:
                end = self.loop.time() + within
                self.last_byte_at = self.loop.time()
                self.timer = self.loop.call_later(idle, self._check_idle, idle, end)
            else:
                self.timer = self.loop.call_later(within, self._timed_out)
        try:
            while not getattr(self, ready):
                if self.error is not None:
                    raise self.error
                self.waiter = self.loop.create_future()
                await self.waiter
        finally:
            self.waiter = None
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        self._abort(TimeoutError())

    def _check_idle(self, idle: float, end: float) -> None:
        now = self.loop.time()
        if now >= end:
            self._timed_out()
        elif now - self.last_byte_at >= idle * 0.999:
            self.timer = None
            self._abort(StallTimeout())
        else:
            self.timer = self.loop.call_later(
                min(self.last_byte_at + idle, end) - now, self._check_idle, idle, end
            )

    def _abort(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def take_chunks(self) -> bytes:
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()
            self.paused = False
        return data

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None and not self.closed:
            self.transport.abort()


class _Pool:
    """Connections to one origin from one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin, limit: int) -> None:
        self.loop = loop
        self.origin = origin
        self.limit = limit
        self.idle: list[_Connection] = []
        self.open = 0
        self.proxy = proxy_for(origin)
        self.closed = (
            False  # by close_pools(): connections still in use close when their answer ends
        )
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(
        self, connect_timeout: float, within: float, limits: Limits
    ) -> tuple[_Connection, bool]:
        """An idle connection (reused=True) or a new one. Waits while `limit` are open,
        for at most `within` seconds (TimeoutError)."""
        return await self._acquire(connect_timeout, within, limits, fresh=False)

    async def acquire_new(
        self, connect_timeout: float, within: float, limits: Limits
    ) -> _Connection:
        connection, _ = await self._acquire(connect_timeout, within, limits, fresh=True)
        return connection

    async def _acquire(
        self, connect_timeout: float, within: float, limits: Limits, *, fresh: bool
    ) -> tuple[_Connection, bool]:
        deadline = time.monotonic() + within
        while True:
            if not fresh:
                now = time.monotonic()
                while self.idle and now - self.idle[0].idle_since > KEEPALIVE_SECONDS:
                    self.idle.pop(0).close()
                while self.idle:
                    connection = self.idle.pop()
                    if not connection.closed and (
                        limits.allow_private or not connection.allow_private
                    ):
                        return connection, True
                    connection.close()  # opened under a laxer egress policy (a test changed it)
            if self.open < self.limit:
                break
            if self.idle:  # a new connection is wanted and idle ones hold the places: give one up
                self.idle.pop(0).close()
            await self._wait_for_a_place(deadline - time.monotonic())
        self.open += 1
        origin = self.origin
        made: list[_Connection] = []

        def factory() -> _Connection:
            made.append(_Connection(self))
            return made[-1]

        try:
            async with asyncio.timeout(min(connect_timeout, max(0.0, deadline - time.monotonic()))):
                if self.proxy is None:
                    connection = await self._connect(factory, limits.allow_private, made)
                else:
                    # The proxy resolves the upstream's name: the policy checks the name as written.
                    problem = egress.host_problem(origin.host, allow_private=limits.allow_private)
                    if problem:
                        raise EgressRefused(f"the egress policy refuses {origin.host}: {problem}")
                    connection = await self._connect_through_proxy(factory)
        except BaseException as exc:
            # Count the place free exactly once: the transport, if one was made, may
            # already have reported its loss (and freed the place) or may yet do so.
            if not made:
                self._closed_one()
            elif made[0].counted:
                made[0].counted = False
                self._closed_one()
            if isinstance(exc, TimeoutError):
                raise ConnectTimeout(
                    f"no connection to {origin.host}:{origin.port} within {connect_timeout:g}s"
                ) from None
            if isinstance(exc, (OSError, ssl.SSLError)):
                raise ConnectError(
                    f"cannot connect to {origin.host}:{origin.port}: {type(exc).__name__}"
                ) from None
            raise
        connection.allow_private = limits.allow_private
        return connection, False

    async def _connect(
        self, factory: Any, allow_private: bool, made: list[_Connection]
    ) -> _Connection:
        """Resolve the upstream's name, keep the addresses the egress policy allows, connect to
        the first that answers (by address: what was checked is what is connected to)."""
        origin = self.origin
        try:
            addresses = [ipaddress.ip_address(origin.host)]
        except ValueError:
            infos = await self.loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        problems = [
            egress.address_problem(address, allow_private=allow_private) for address in addresses
        ]
        allowed = [
            address for address, problem in zip(addresses, problems, strict=True) if problem is None
        ]
        if not allowed:
            reason = next((p for p in problems if p), "it resolves to no address")
            raise EgressRefused(f"the egress policy refuses {origin.host}: {reason}")
        for index, address in enumerate(allowed):
            try:
                _, connection = await self.loop.create_connection(
                    factory,
                    str(address),
                    origin.port,
                    ssl=_tls_context() if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None,
                )
                return connection
            except OSError as exc:
                # Not answering at this address: try the next (a TLS failure is final).
                if made or isinstance(exc, ssl.SSLError) or index == len(allowed) - 1:
                    raise
        raise AssertionError("unreachable")

    async def _connect_through_proxy(self, factory: Any) -> _Connection:
        proxy, origin = self.proxy, self.origin
        assert proxy is not None
        transport, tunnel = await self.loop.create_connection(
            _Tunnel, proxy.origin.host, proxy.origin.port
        )
        try:
            if not origin.tls:  # plain http: requests go to the proxy in absolute form
                connection = factory()
                transport.set_protocol(connection)
                connection.connection_made(transport)
                return connection
            authority = (
                f"[{origin.host}]:{origin.port}"
                if ":" in origin.host
                else f"{origin.host}:{origin.port}"
            )
            head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            if proxy.authorization:
                head += f"Proxy-Authorization: {proxy.authorization}\r\n"
            transport.write((head + "\r\n").encode("latin-1"))
            status = await tunnel.answer
            if status != 200:
                raise ConnectError(f"the proxy refused a tunnel to {authority} (HTTP {status})")
            connection = factory()
            tls = await self.loop.start_tls(
                transport, connection, _tls_context(), server_hostname=origin.host
            )
            connection.connection_made(tls)
            return connection
        except BaseException:
            transport.abort()
            raise

    async def _wait_for_a_place(self, within: float) -> None:
        if within <= 0:
            raise TimeoutError
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        timer = self.loop.call_later(within, _expire, waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # woken, but leaving (cancelled): the place goes to the next in line
                self._wake_one()
            raise
        finally:
            timer.cancel()
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    def release(self, connection: _Connection) -> None:
        if (
            self.closed
            or connection.closed
            or not connection.keep_alive
            or not connection.complete
            or connection.error is not None
        ):
            connection.close()
            return
        connection._start()
        connection.idle_since = time.monotonic()
        self.idle.append(connection)
        self._wake_one()

    def lost(self, connection: _Connection) -> None:
        if connection.counted:
            connection.counted = False
            self._closed_one()
        if connection in self.idle:
            self.idle.remove(connection)

    def _closed_one(self) -> None:
        self.open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self.closed = True
        for connection in self.idle:
            connection.close()
        self.idle.clear()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Origin, _Pool]] = (
    weakref.WeakKeyDictionary()
)


_last: tuple[asyncio.AbstractEventLoop | None, dict[Origin, _Pool]] = (None, {})


def _pool(origin: Origin, limit: int) -> _Pool:
    global _last
    loop = asyncio.get_running_loop()
    if _last[0] is loop:  # the common case, without a weakref per request
        pools = _last[1]
    else:
        found = _pools.get(loop)
        if found is None:
            found = _pools[loop] = {}
        pools = found
        _last = (loop, pools)
    pool = pools.get(origin)
    if pool is None:
        pool = pools[origin] = _Pool(loop, origin, limit)
    else:
        pool.limit = limit
    return pool


def close_pools() -> None:
    """Close the idle connections of this loop (the open ones close when their answer ends)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    global _last
    if _last[0] is loop:
        _last = (None, {})
    for pool in _pools.pop(loop, {}).values():
        pool.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _encode_head(
    method: str, target: str, origin: Origin, headers: dict[str, str], length: int
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
    if length or method == "POST":
        lines.append(f"Content-Length: {length}\r\n")
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ProtocolError(f"header {name!r} cannot be sent: it holds a line break or a colon")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise ProtocolError("a request header holds characters HTTP/1.1 cannot carry") from None


class Response:
    """An answer whose status line and headers have arrived; the body follows."""

    __slots__ = ("_connection", "_decoder", "_limits", "headers", "status")

    def __init__(self, connection: _Connection) -> None:
        self._connection: _Connection | None = connection
        self._limits = connection.limits
        self.status = connection.status
        self.headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in connection.headers
        }
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding in ("identity", ""):
            self._decoder = None
        else:
            connection.close()
            raise ProtocolError(
                f"the upstream answered in an encoding this gateway cannot read: {encoding}"
            )

    def _inflate_step(self, data: bytes) -> bytes:
        """At most INFLATE_STEP bytes of output; the input left over waits in unconsumed_tail."""
        try:
            return self._decoder.decompress(data, INFLATE_STEP)
        except zlib.error:
            raise ProtocolError("the upstream's compressed body is corrupt") from None

    def _check_end(self) -> None:
        if not self._decoder.eof:
            raise ProtocolError("the upstream's compressed body ends before its end")

    async def _inflate(self, data: bytes) -> bytes:
        """The whole body decompressed, in steps (the loop runs between them), at most
        max_decompressed_bytes of it: a compression bomb stops at the bound."""
        limit = self._limits.max_decompressed_bytes
        pieces: list[bytes] = []
        total = 0
        while True:
            piece = self._inflate_step(data)
            data = self._decoder.unconsumed_tail
            total += len(piece)
            if total > limit:
                raise TooLarge(f"the upstream's body decompresses to more than {limit} bytes")
            pieces.append(piece)
            if not data and len(piece) < INFLATE_STEP:
                break
            await asyncio.sleep(0)
        self._check_end()
        return b"".join(pieces)

    def _check_length(self) -> None:
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limits.max_body_bytes:
            raise TooLarge(
                f"the upstream's body ({declared} bytes) exceeds {self._limits.max_body_bytes} "
                "bytes"
            )

    async def read(self, within: float | None = None, idle: float | None = None) -> bytes:
        """The whole body, within `within` seconds (TimeoutError) and with no pause longer than
        `idle` seconds (StallTimeout); gives the connection back to the pool."""
        connection = self._connection
        if connection is None:
            raise ClientError("the body was already read")
        try:
            self._check_length()
            await connection.wait_for("complete", within, idle)
            data = connection.take_chunks()
            if self._decoder is not None:
                data = await self._inflate(data)
        except BaseException:
            self.close()
            raise
        self.release()
        return data

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (a compressed one in pieces of at most INFLATE_STEP bytes);
        gives the connection back at its end."""
        connection = self._connection
        if connection is None:
            raise ClientError("the body was already read")
        connection.streaming = True
        try:
            while True:
                if connection.chunks:
                    data = connection.take_chunks()
                    if self._decoder is None:
                        yield data
                    else:
                        while True:
                            piece = self._inflate_step(data)
                            data = self._decoder.unconsumed_tail
                            if piece:
                                yield piece
                            if not data and len(piece) < INFLATE_STEP:
                                break
                            await asyncio.sleep(0)  # more to inflate: let the loop run first
                    continue
                if connection.complete:
                    if self._decoder is not None:
                        self._check_end()
                    break
                await connection.wait_for("has_data", None)
        except BaseException:
            self.close()
            raise
        self.release()

    def release(self) -> None:
        """Give a finished connection back to the pool (or drop an unfinished one)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.pool.release(connection)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


async def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    body: bytes = b"",
    connect_timeout: float,
    first_byte_timeout: float,
    max_connections: int = 1000,
    limits: Limits | None = None,
) -> Response:
    """Send one request and wait for its status line and headers.

    Raises ConnectError (EgressRefused when the policy refuses the address),
    ProtocolError (TooLarge past `limits`, by default default_limits()), or
    TimeoutError when the headers did not arrive within `first_byte_timeout`
    seconds (connecting included).
    """
    limits = limits or default_limits()
    origin, target = split_url(url)
    pool = _pool(origin, max_connections)
    if pool.proxy is not None and not origin.tls:
        target = f"http://{origin.host_header}{target}"  # absolute form, for the proxy
        if pool.proxy.authorization:
            headers = {**headers, "Proxy-Authorization": pool.proxy.authorization}
    data = _encode_head(method, target, origin, headers, len(body)) + body
    deadline = time.monotonic() + first_byte_timeout
    connection, reused = await pool.acquire(connect_timeout, first_byte_timeout, limits)
    while True:
        connection.limits = limits
        connection.active = True
        try:
            connection.transport.write(data)  # type: ignore[union-attr]
            await connection.wait_for("headers_done", deadline - time.monotonic())
        except ConnectError:
            connection.close()
            if reused and not connection.got_bytes:
                # The upstream dropped an idle keep-alive connection as the request went
                # out: send it once more, on a new connection.
                reused = False
                connection = await pool.acquire_new(
                    connect_timeout, max(0.0, deadline - time.monotonic()), limits
                )
                continue
            raise
        except BaseException:
            connection.close()
            raise
        return Response(connection)
