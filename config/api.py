"""The management API's plumbing, shared by every app's api.py and api_urls.py.

`endpoint()` serves one URL from several single-operation views, chosen by HTTP
method. DRF's generic views and viewsets would put list and create (or retrieve,
update and delete) into one class; the house style keeps one view per operation
(`InstanceListApi`, `InstanceCreateApi`), each with its own input and output
serializers and schema, and this is the small piece of glue that allows it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.views import APIView

_OPERATION_METHODS = ("get", "post", "put", "patch", "delete")


def _combined_name(views: tuple[type[APIView], ...]) -> str:
    """InstanceListApi + InstanceCreateApi -> InstanceListCreateApi."""
    words = [re.findall(r"[A-Z][a-z0-9]*", view.__name__.removesuffix("Api")) for view in views]
    shared = 0
    while (
        all(len(w) > shared + 1 for w in words)
        and len({tuple(w[: shared + 1]) for w in words}) == 1
    ):
        shared += 1
    return "".join(words[0][:shared]) + "".join("".join(w[shared:]) for w in words) + "Api"


def endpoint(*views: type[APIView]) -> Callable[..., HttpResponseBase]:
    """One URL served by several single-operation views, chosen by HTTP method.

    `path("instances/", endpoint(InstanceListApi, InstanceCreateApi))` keeps one
    view per operation while the URLs stay RESTful. drf-spectacular reads the
    per-method `extend_schema` through `cls`, a class combining the views' handlers;
    that class also answers OPTIONS and refuses other methods with a proper 405.
    """
    handlers: dict[str, Callable[..., HttpResponseBase]] = {}
    for view in views:
        for method in _OPERATION_METHODS:
            if hasattr(view, method):
                if method in handlers:
                    raise ValueError(
                        f"{method.upper()} is served by two views: {[v.__name__ for v in views]}"
                    )
                handlers[method] = view.as_view()
    if "get" in handlers:
        handlers["head"] = handlers["get"]
    combined: type[APIView] = type(
        _combined_name(views), views, {"__module__": views[0].__module__}
    )
    fallback = combined.as_view()

    def dispatch(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        handler = handlers.get((request.method or "").lower(), fallback)
        return handler(request, *args, **kwargs)

    # What DRF's as_view() sets: schema generation needs cls/initkwargs, and the
    # views themselves enforce CSRF for session authentication.
    dispatch.cls = combined  # type: ignore[attr-defined]
    dispatch.initkwargs = {}  # type: ignore[attr-defined]
    dispatch.csrf_exempt = True  # type: ignore[attr-defined]
    return dispatch


def json_object(data: Any) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
    return data


class JsonApi(APIView):
    """Management API views take JSON bodies only: form encoding would read an omitted
    boolean as false (HTML checkbox rules) and quietly disable an instance or a route."""

    parser_classes = [JSONParser]
