from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/", include("targetgroups.api_urls")),
    path("api/", include("balancers.api_urls")),
    path("api/", include("gateway.api_urls")),
    path("", include("gateway.urls")),
    path("", include("balancers.urls")),
    path("", include("targetgroups.urls")),
    path("", include("gateway.page_urls")),
    path("playground/", include("playground.urls")),
]
