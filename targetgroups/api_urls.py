from __future__ import annotations

from django.urls import path

from config.api import endpoint
from targetgroups.api import (
    InstanceCreateApi,
    InstanceDeleteApi,
    InstanceListApi,
    InstanceRetrieveApi,
    InstanceUpdateApi,
    ProviderDeleteApi,
    ProviderListApi,
    ProviderRetrieveApi,
    ProviderUpdateApi,
    TargetGroupCreateApi,
    TargetGroupDeleteApi,
    TargetGroupExportApi,
    TargetGroupImportApi,
    TargetGroupListApi,
    TargetGroupRetrieveApi,
    TargetGroupUpdateApi,
)

urlpatterns = [
    path("providers/", ProviderListApi.as_view(), name="api-providers"),
    path(
        "providers/<slug:provider>/",
        endpoint(ProviderRetrieveApi, ProviderUpdateApi, ProviderDeleteApi),
        name="api-provider",
    ),
    path("instances/", endpoint(InstanceListApi, InstanceCreateApi), name="api-instances"),
    path(
        "instances/<slug:instance_id>/",
        endpoint(InstanceRetrieveApi, InstanceUpdateApi, InstanceDeleteApi),
        name="api-instance",
    ),
    path(
        "target-groups/",
        endpoint(TargetGroupListApi, TargetGroupCreateApi),
        name="api-target-groups",
    ),
    # Before <name>/ so that it is never read as a group name.
    path("target-groups/import/", TargetGroupImportApi.as_view(), name="api-target-group-import"),
    path(
        "target-groups/<slug:name>/",
        endpoint(TargetGroupRetrieveApi, TargetGroupUpdateApi, TargetGroupDeleteApi),
        name="api-target-group",
    ),
    path(
        "target-groups/<slug:name>/export/",
        TargetGroupExportApi.as_view(),
        name="api-target-group-export",
    ),
]
