from __future__ import annotations

from django.urls import path

from balancers.api import (
    BalancerCreateApi,
    BalancerDeleteApi,
    BalancerListApi,
    BalancerRetrieveApi,
    BalancerUpdateApi,
)
from config.api import endpoint

urlpatterns = [
    path("balancers/", endpoint(BalancerListApi, BalancerCreateApi), name="api-balancers"),
    path(
        "balancers/<slug:name>/",
        endpoint(BalancerRetrieveApi, BalancerUpdateApi, BalancerDeleteApi),
        name="api-balancer",
    ),
]
