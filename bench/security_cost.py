"""What the /v1 host check and security headers cost per request, in process (CPU time).

    DATABASE_URL=... .venv/bin/python -m bench.security_cost

Compares Django's own per-request calls (HttpRequest.get_host() and SecurityMiddleware's
request and response hooks) with the lean handler's version (gateway/hotpath/asgi.py:
a bounded cache of validated hosts and headers computed once).

Then the public way to close an answer, response.close() (its closers, then the
request_finished signal and its receivers), against gateway/hotpath/django_contract.py's
close_quietly() (the closers only), each with the making of a small JSON answer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.middleware.security import SecurityMiddleware  # noqa: E402
from django.test import RequestFactory  # noqa: E402

from gateway.hotpath.asgi import _host_allowed, _raw_host, _security_headers  # noqa: E402
from gateway.hotpath.django_contract import close_quietly  # noqa: E402

N = 100_000


def per_call_us(step: Callable[[], object]) -> float:
    for _ in range(1000):
        step()
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(N):
            step()
        best = min(best, (time.process_time() - started) / N * 1e6)
    return best


def main() -> None:
    request = RequestFactory().get("/v1/models", HTTP_HOST="127.0.0.1")
    response = JsonResponse({"object": "list"})
    middleware = SecurityMiddleware(lambda r: response)
    headers = _security_headers()

    def django_way() -> None:
        request.get_host()
        middleware.process_request(request)
        middleware.process_response(request, response)

    def lean_way() -> None:
        _host_allowed(_raw_host(request.META))
        for name, value in headers:
            if name not in response:
                response[name] = value

    print(
        f"get_host() + SecurityMiddleware hooks: {per_call_us(django_way):.2f} µs CPU per request"
    )
    print(f"lean handler's check and headers:     {per_call_us(lean_way):.2f} µs CPU per request")

    def public_close() -> None:
        HttpResponse(b"{}", content_type="application/json").close()

    def quiet_close() -> None:
        close_quietly(HttpResponse(b"{}", content_type="application/json"))

    print(
        f"answer + response.close():            {per_call_us(public_close):.2f} µs CPU per request"
    )
    print(
        f"answer + close_quietly():             {per_call_us(quiet_close):.2f} µs CPU per request"
    )
    print(f"(best of 5 x {N:,}; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
