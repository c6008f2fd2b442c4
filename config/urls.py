from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.views import APIView


def api_schema(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The OpenAPI schema, imported on first use: drf-spectacular adds ~20 MiB to every worker
    otherwise."""
    from drf_spectacular.views import SpectacularAPIView

    return SpectacularAPIView.as_view()(request, *args, **kwargs)


class LoginView(auth_views.LoginView):
    """The sign-in page; it says how to get a first login only while there is none (make run prints
    one)."""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["has_admin"] = get_user_model().objects.filter(is_superuser=True).exists()
        return context


class ApiNotFound(APIView):
    """Any other /api/ URL (an unknown path, an id the converters refuse): the API's own JSON
    404, with the API's authentication and permissions, rather than the pages' HTML one."""

    schema = None  # not an operation

    def _not_found(self, request: Request, *args: Any, **kwargs: Any) -> None:
        raise NotFound()

    get = post = put = patch = delete = _not_found


urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/schema/", api_schema, name="api-schema"),
    path("api/", include("targetgroups.api_urls")),
    path("api/", include("balancers.api_urls")),
    path("api/", include("gateway.api_urls")),
    re_path(r"^api/", ApiNotFound.as_view(), name="api-not-found"),
    path("", include("gateway.hotpath.v1_urls")),
    path("", include("pages.balancers.urls")),
    path("", include("pages.targetgroups.urls")),
    path("", include("gateway.urls")),
    path("playground/", include("playground.urls")),
]
