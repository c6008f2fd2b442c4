from __future__ import annotations

from django.urls import path

from playground import views

urlpatterns = [
    path("", views.playground, name="playground"),
    path("balancer/", views.playground_balancer, name="playground-balancer"),
    path("sample/", views.playground_sample, name="playground-sample"),
    path("send/", views.playground_send, name="playground-send"),
    path("auto/", views.playground_auto, name="playground-auto"),
    path("direct/", views.playground_direct, name="playground-direct"),
]
