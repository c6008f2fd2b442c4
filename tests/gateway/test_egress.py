"""The egress policy at connect time: the upstream client resolves the name itself and connects
only to addresses the policy allows, so a name that passed the save-time check (it is not
written as a loopback address) but resolves to one is refused before any connection is made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import time

import pytest

from gateway.hotpath.snapshot import instance_spec
from gateway.upstream import UpstreamFailure, call_upstream, http
from targetgroups import egress
from targetgroups.models import Instance
from tests.factories import make_instance
from tests.gateway.test_http_client import Peer, Server, async_test, get

STRICT = http.Limits(allow_private=False)


def loopback_names() -> list[str]:
    """`localhost`, and this machine's own name when it resolves to a loopback address."""
    names = ["localhost"]
    try:
        addresses = {
            info[4][0]
            for info in socket.getaddrinfo(socket.gethostname(), 80, type=socket.SOCK_STREAM)
        }
    except OSError:
        return names
    if addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses):
        names.append(socket.gethostname())
    return names


async def healthy(peer: Peer) -> None:
    await peer.answer_requests(b"ok")


@pytest.mark.parametrize("host", loopback_names())
@async_test
async def test_a_name_resolving_to_loopback_is_refused_after_resolution_when_private_is_off(
    host: str,
) -> None:
    async with Server(healthy) as server:
        with pytest.raises(http.EgressRefused, match="loopback address"):
            await get(f"http://{host}:{server.port}/v1/models", limits=STRICT)
        assert server.accepted == 0  # refused before connecting
        reply = await get(
            f"http://{host}:{server.port}/v1/models", limits=http.Limits(allow_private=True)
        )
        assert await reply.read(within=2) == b"ok"


@async_test
async def test_the_metadata_address_is_refused_with_no_connection_attempt_whatever_setting() -> (
    None
):
    for allow_private in (True, False):
        started = time.monotonic()
        with pytest.raises(http.EgressRefused, match="cloud metadata address"):
            await get(
                "http://169.254.169.254/latest/meta-data/",
                limits=http.Limits(allow_private=allow_private),
            )
        assert time.monotonic() - started < 0.5  # no connect timeout waited out: nothing was sent


@async_test
async def test_an_egress_refusal_is_a_connect_error() -> None:
    # ConnectError: the gateway's adapters turn it into a retryable "connect" failure (failover).
    with pytest.raises(http.ConnectError):
        await get("http://[fe80::1]:80/", limits=http.Limits(allow_private=True))


@pytest.mark.django_db
def test_a_name_resolving_to_loopback_fails_over_as_a_connect_failure_when_private_is_off(
    settings,
) -> None:
    names = loopback_names()
    if len(names) < 2:
        pytest.skip("this machine's name does not resolve to loopback")
    settings.GATEWAY_EGRESS_ALLOW_PRIVATE = False
    # A name passes the save-time check, and what it resolves to may change later (DNS
    # rebinding). This machine's own name stands in for such a name; it goes into the spec
    # directly since Django's URL validator wants a dotted name.
    instance = make_instance(provider="openai", base_url="http://upstream.example/v1", model="m")

    async def scenario() -> None:
        async with Server(healthy) as server:
            spec = dataclasses.replace(
                instance_spec(instance), base_url=f"http://{names[1]}:{server.port}/v1"
            )
            assert egress.base_url_problem(spec.base_url, allow_private=False) is None
            with pytest.raises(UpstreamFailure) as failure:
                await call_upstream(
                    spec,
                    endpoint="chat",
                    stream=False,
                    payload={"model": "m", "messages": []},
                    deadline=time.monotonic() + 5,
                )
            assert failure.value.kind == "connect" and failure.value.retryable
            assert "egress policy refuses" in failure.value.detail
            assert server.accepted == 0
        http.close_pools()

    asyncio.run(scenario())


@pytest.mark.django_db
def test_a_base_url_saved_before_the_policy_is_refused_when_called() -> None:
    instance = make_instance(provider="openai", base_url="http://127.0.0.1:9/v1", model="m")
    Instance.objects.filter(pk=instance.pk).update(
        base_url="http://127.0.0.1:9/?next=/healthz"
    )  # skips validation
    instance.refresh_from_db()

    async def scenario() -> None:
        with pytest.raises(UpstreamFailure, match="query string"):
            await call_upstream(
                instance_spec(instance),
                endpoint="chat",
                stream=False,
                payload={"model": "m", "messages": []},
                deadline=time.monotonic() + 5,
            )

    asyncio.run(scenario())
