"""The request type the HTML pages receive: Django's, with django-htmx's `request.htmx`.

django-htmx's documented way to type views behind its middleware (django-stubs
knows nothing of the attribute the middleware adds).
"""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails
