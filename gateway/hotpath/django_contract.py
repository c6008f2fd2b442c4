"""The one place the gateway's ASGI handler relies on a private part of Django.

HttpResponseBase.close() runs the response's resource closers (a streamed answer's
iterator, the request's uploaded files) and then sends the request_finished signal. The
signal's receivers reset this thread's URLconf and close this thread's database connections
and caches; the event loop thread holds none of them (the gateway's few queries run in
worker threads), so on /v1 the signal is pure cost: 7.6% of the worker's CPU at 32
connections (bench/out, py-spy) and, per request, the figure `python -m bench.security_cost`
prints for response.close() beside close_quietly() (ARCHITECTURE.md quotes both).

Django has no public way to run the closers without the signal, so close_quietly() does what
close() does, minus the signal, over the private `_resource_closers` list. The contract it
depends on is pinned by tests/gateway/test_django_contract.py: the Django minor version and
the source of HttpResponseBase.close(). An upgrade that changes either fails that test, and
this module is the only one to re-read.
"""

from __future__ import annotations

from django.http.response import HttpResponseBase

# Django releases whose HttpResponseBase.close() this module copies, minus the signal.
DJANGO_VERSIONS = ((5, 2),)


def close_quietly(response: HttpResponseBase) -> None:
    """What response.close() does, without sending request_finished."""
    closers = response._resource_closers  # type: ignore[attr-defined]  # private, pinned above
    for closer in closers:
        try:
            closer()
        except Exception:
            pass
    closers.clear()
    response.closed = True
