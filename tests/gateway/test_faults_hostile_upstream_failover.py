"""Hostile upstreams end to end: the real gateway (uvicorn) in front of an upstream that answers
with a compression bomb. The bomb is an upstream failure like any other: the gateway fails over
to the healthy fallback (or answers an OpenAI-shaped 502 when there is none), stays small, and
records the attempt."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from tests.factories import make_balancer, make_instance
from tests.gateway.test_faults_upstream_limits import MiB, gzip_bomb
from tests.gateway.test_openai_sdk import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "hello"}]


class _BombHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                return
            head += data
        bomb = gzip_bomb()
        try:
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                + f"Content-Length: {len(bomb)}\r\n\r\n".encode()
                + bomb
            )
            while sock.recv(65536):  # until the gateway drops the connection
                pass
        except OSError:
            pass


@contextmanager
def bomb_upstream() -> Iterator[socketserver.ThreadingTCPServer]:
    """An 'OpenAI-compatible' server on loopback whose every answer is a 1 GiB gzip bomb (1 MB
    sent)."""
    gzip_bomb()  # built before the clock starts
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _BombHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def gateway_peak_rss_growth(pid: int) -> tuple[int, Callable[[], int]]:
    """Reset the gateway process's peak resident set; the returned function reads its growth
    since."""
    status = Path(f"/proc/{pid}/status")

    def read(field: str) -> int:
        line = next(line for line in status.read_text().splitlines() if line.startswith(field))
        return int(line.split()[1]) * 1024

    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = read("VmRSS:")
    return before, lambda: read("VmHWM:") - before


def test_a_gzip_bomb_from_the_primary_fails_over_to_the_healthy_fallback(setup) -> None:
    with bomb_upstream() as bomb:
        primary = make_instance(
            provider="openai",
            base_url=f"http://127.0.0.1:{bomb.server_address[1]}/v1",
            model="bomb",
            api_key="upstream-secret-bomb",
        )
        fallback = setup.instance("fb-after-bomb")
        balancer = setup.failover_balancer(primary, fallback, serving_name="bombed")
        make_balancer(
            serving_name="warm-up",
            routes=[
                {
                    "name": "main",
                    "intent": "All.",
                    "instance": fallback,
                    "priority": 1,
                    "is_default": True,
                }
            ],
        )
        client = setup.client()
        client.chat.completions.create(
            model="warm-up", messages=HELLO
        )  # a first request pays the worker's warm-up
        _, growth = gateway_peak_rss_growth(setup.gateway.process.pid)
        started = time.monotonic()
        raw = client.chat.completions.with_raw_response.create(model="bombed", messages=HELLO)
        elapsed = time.monotonic() - started
        grew = growth()
        print(
            f"\nbomb then fallback through the gateway: {elapsed:.2f} s, gateway peak RSS growth "
            f"{grew / MiB:.1f} MiB"
        )
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-balancer-instance"] == fallback.instance_id
        assert raw.headers["x-balancer-attempts"] == "2"
        assert setup.upstream.count("fb-after-bomb") == 2
        assert elapsed < 3.0  # today: ~11 s of inflating before anything else runs
        assert grew < 200 * MiB  # today: the worker grows by over 2 GiB
        [event] = wait_for_events(1, balancer=balancer)
        assert [a["outcome"] for a in event.attempt_log] == ["protocol", "ok"]


def test_a_gzip_bomb_with_no_fallback_is_an_openai_shaped_502(setup) -> None:
    with bomb_upstream() as bomb:
        only = make_instance(
            provider="openai",
            base_url=f"http://127.0.0.1:{bomb.server_address[1]}/v1",
            model="bomb",
            api_key="upstream-secret-bomb",
        )
        make_balancer(
            serving_name="only-bomb",
            routes=[
                {
                    "name": "main",
                    "intent": "All.",
                    "instance": only,
                    "priority": 1,
                    "is_default": True,
                }
            ],
        )
        with pytest.raises(openai.APIStatusError) as err:
            setup.client().chat.completions.create(model="only-bomb", messages=HELLO)
        assert err.value.status_code == 502
        assert err.value.body["type"] and only.instance_id in err.value.body["message"]
