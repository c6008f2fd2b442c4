"""The private part of Django the gateway's ASGI handler relies on (gateway/hotpath/
django_contract.py), pinned: a Django upgrade that changes it fails here, loudly."""

from __future__ import annotations

import hashlib
import inspect

import django
from django.core.signals import request_finished
from django.http import StreamingHttpResponse
from django.http.response import HttpResponseBase

from gateway.hotpath.django_contract import DJANGO_VERSIONS, close_quietly

# sha256 of inspect.getsource(HttpResponseBase.close) on Django 5.2: the closers, then the signal.
CLOSE_SOURCE_SHA256 = "84589f5b23acbb23aa9010f3506ef411b72b1053f2fc2764590e2b3bf3470438"


class Body:
    def __init__(self) -> None:
        self.closed = False

    def __iter__(self):
        yield b"x"

    def close(self) -> None:
        self.closed = True


def test_django_is_a_release_the_adapter_was_written_for() -> None:
    assert django.VERSION[:2] in DJANGO_VERSIONS, (
        f"Django {django.get_version()}: re-read HttpResponseBase.close() and update "
        "gateway/hotpath/django_contract.py before adding this release to DJANGO_VERSIONS"
    )


def test_responses_close_as_the_adapter_copies_it() -> None:
    source = inspect.getsource(HttpResponseBase.close)
    assert hashlib.sha256(source.encode()).hexdigest() == CLOSE_SOURCE_SHA256, (
        "HttpResponseBase.close() changed: close_quietly() copies it minus the signal\n" + source
    )


def test_close_quietly_runs_the_closers_without_the_signal() -> None:
    finished: list[object] = []

    def receiver(**kwargs: object) -> None:
        finished.append(kwargs)

    request_finished.connect(receiver)
    try:
        body = Body()
        response = StreamingHttpResponse(body)
        close_quietly(response)
        assert body.closed and response.closed
        assert finished == []

        # ... while the public close() would send it: the reason the adapter exists.
        other = StreamingHttpResponse(Body())
        other.close()
        assert len(finished) == 1
    finally:
        request_finished.disconnect(receiver)
