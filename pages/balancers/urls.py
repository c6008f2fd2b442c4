from __future__ import annotations

from django.urls import path

from pages.balancers import views

step = "<slug:step>/"

urlpatterns = [
    path("", views.home, name="home"),
    path("balancers/", views.balancer_list, name="balancer-list"),
    # The create wizard: each step is a URL; the draft lives in the session until the last step.
    path("balancers/new/", views.wizard_start, name="wizard-start"),
    path("balancers/new/check/", views.wizard_check, name="wizard-check"),
    path("balancers/new/discard/", views.wizard_discard, name="wizard-discard"),
    path("balancers/new/separation/", views.wizard_separation, name="wizard-separation"),
    path("balancers/new/" + step, views.wizard_step, name="wizard-step"),
    path("balancers/new/" + step + "autosave/", views.wizard_autosave, name="wizard-autosave"),
    # The same wizard edits an existing balancer.
    path("balancers/<slug:name>/edit/", views.wizard_edit, name="wizard-edit"),
    path("balancers/<slug:name>/edit/check/", views.wizard_check, name="wizard-edit-check"),
    path("balancers/<slug:name>/edit/discard/", views.wizard_discard, name="wizard-edit-discard"),
    path(
        "balancers/<slug:name>/edit/separation/",
        views.wizard_separation,
        name="wizard-edit-separation",
    ),
    path("balancers/<slug:name>/edit/" + step, views.wizard_step, name="wizard-edit-step"),
    path(
        "balancers/<slug:name>/edit/" + step + "autosave/",
        views.wizard_autosave,
        name="wizard-edit-autosave",
    ),
    path("balancers/<slug:name>/", views.balancer_detail, name="balancer-detail"),
    path("balancers/<slug:name>/board/", views.balancer_board, name="balancer-board"),
    # A goal name's board (auto, auto-cheap... called with no balancer of that name).
    path("auto/<slug:goal>/board/", views.auto_board, name="auto-board"),
    path("auto/<slug:goal>/board/events/", views.auto_board_events, name="auto-board-events"),
    path(
        "balancers/<slug:name>/board/events/",
        views.balancer_board_events,
        name="balancer-board-events",
    ),
    path(
        "balancers/<slug:name>/board/action/",
        views.balancer_board_action,
        name="balancer-board-action",
    ),
    path(
        "balancers/<slug:name>/correction/",
        views.balancer_correction,
        name="balancer-correction",
    ),
    path(
        "balancers/<slug:name>/prompt-logging/",
        views.balancer_prompt_logging,
        name="balancer-prompt-logging",
    ),
    path("balancers/<slug:name>/test/", views.balancer_test, name="balancer-test"),
    path(
        "balancers/<slug:name>/smoke-test/", views.balancer_smoke_test, name="balancer-smoke-test"
    ),
    path("balancers/<slug:name>/toggle/", views.balancer_toggle, name="balancer-toggle"),
    path("balancers/<slug:name>/delete/", views.balancer_remove, name="balancer-delete"),
]
