from __future__ import annotations

from django.urls import path

from pages.targetgroups import views

urlpatterns = [
    path("target-groups/", views.target_group_list, name="targetgroup-list"),
    path("target-groups/new/", views.target_group_create_view, name="targetgroup-create"),
    path("target-groups/import/", views.target_group_import_view, name="targetgroup-import"),
    path("target-groups/<slug:name>/", views.target_group_detail, name="targetgroup-detail"),
    path("target-groups/<slug:name>/export/", views.target_group_export, name="targetgroup-export"),
    path(
        "target-groups/<slug:name>/members/add/",
        views.target_group_member_add_view,
        name="targetgroup-member-add",
    ),
    path(
        "target-groups/<slug:name>/members/<int:member_id>/",
        views.target_group_member_edit,
        name="targetgroup-member",
    ),
    path(
        "target-groups/<slug:name>/members/<int:member_id>/remove/",
        views.target_group_member_remove_view,
        name="targetgroup-member-remove",
    ),
    path("providers/", views.provider_list, name="provider-list"),
    path("providers/<slug:provider>/", views.provider_detail, name="provider-detail"),
    path("providers/<slug:provider>/remove/", views.provider_remove, name="provider-remove"),
    path("providers/<slug:provider>/check/", views.provider_check, name="provider-check"),
    path("instances/", views.instance_list, name="instance-list"),
    path("instances/new/", views.instance_create, name="instance-create"),
    path("instances/<slug:instance_id>/", views.instance_detail, name="instance-detail"),
    path(
        "instances/<slug:instance_id>/simulator/",
        views.instance_simulator,
        name="instance-simulator",
    ),
]
