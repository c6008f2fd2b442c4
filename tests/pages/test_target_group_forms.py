"""Target groups by plain forms: create, add a member, remove a member (htmx and without JS)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from gateway.hotpath.config_version import REDIS_KEY, config_version_from_db
from targetgroups.models import TargetGroup, TargetGroupMember

HTMX = {"HX-Request": "true"}
FORM = {
    "name": "billing-pool",
    "display_name": "Billing pool",
    "description": "Billing questions.",
    "workload_kind": "chat",
    "selection_policy": "round_robin",
    "enabled": "on",
    "members": ["inst_a", "qwen-cheap-a"],
}


@pytest.fixture
def bumps(django_capture_on_commit_callbacks: Any) -> Callable[[], Any]:
    """`with bumps():` runs the commit hooks of what happens inside and asserts the config version
    moved."""

    @contextmanager
    def watch() -> Iterator[None]:
        before = config_version_from_db()
        with django_capture_on_commit_callbacks(execute=True):
            yield
        after = config_version_from_db()
        assert after > before, "the config version was not bumped"
        if settings.REDIS_URL:
            from gateway.hotpath.redis_client import redis_sync

            assert int(redis_sync().get(REDIS_KEY)) == after

    return watch


def _members(name: str) -> list[tuple[str, int, int, bool]]:
    return [
        (m.instance.instance_id, m.weight, m.priority, m.enabled)
        for m in TargetGroupMember.objects.filter(group__name=name)
        .select_related("instance")
        .order_by("instance__instance_id")
    ]


# -- create ------------------------------------------------------------------------------------


def test_the_list_links_to_the_new_group_form(admin_client, demo) -> None:
    html = admin_client.get("/target-groups/").content.decode()
    assert 'href="/target-groups/new/"' in html and 'href="/target-groups/import/"' in html


def test_the_form_offers_the_instances_of_the_chosen_kind(admin_client, demo) -> None:
    html = admin_client.get("/target-groups/new/").content.decode()
    assert 'value="inst_a"' in html and 'value="embed-small"' not in html
    assert 'name="workload_kind" value="chat"' in html and "checked" in html
    fragment = admin_client.get(
        "/target-groups/new/?workload_kind=embeddings", headers=HTMX
    ).content.decode()
    assert fragment.lstrip().startswith('<div class="field" id="member-choices"')
    assert 'value="embed-small"' in fragment and 'value="inst_a"' not in fragment


def test_creating_a_group_saves_it_with_its_first_members(admin_client, demo, bumps) -> None:
    with bumps():
        response = admin_client.post("/target-groups/new/", FORM)
    assert response.status_code == 302 and response["Location"] == "/target-groups/billing-pool/"
    group = TargetGroup.objects.get(name="billing-pool")
    assert (
        group.display_name,
        group.description,
        group.workload_kind,
        group.selection_policy,
        group.enabled,
    ) == ("Billing pool", "Billing questions.", "chat", "round_robin", True)
    assert _members("billing-pool") == [("inst_a", 100, 1, True), ("qwen-cheap-a", 100, 1, True)]
    html = admin_client.get(response["Location"]).content.decode()
    assert "Created target group billing-pool with 2 members." in html


def test_a_group_can_start_empty_and_disabled(admin_client, demo, bumps) -> None:
    with bumps():
        response = admin_client.post(
            "/target-groups/new/",
            {"name": "later", "workload_kind": "embeddings", "selection_policy": "least_busy"},
        )
    assert response.status_code == 302
    group = TargetGroup.objects.get(name="later")
    assert (group.workload_kind, group.enabled, group.members.count()) == ("embeddings", False, 0)
    html = admin_client.get("/target-groups/later/").content.decode()
    assert 'id="members-empty"' in html and 'value="embed-small"' in html


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"name": ""}, "name", "This field is required."),
        ({"name": "Billing Pool"}, "name", "Use 1-63 lowercase letters, digits"),
        ({"name": "x" * 64}, "name", "Ensure this field has no more than 63 characters."),
        ({"name": "tech-support-pool"}, "name", "Target group with this Name already exists."),
        ({"workload_kind": "images"}, "workload_kind", "Select a valid choice."),
        ({"selection_policy": "fastest"}, "selection_policy", "Select a valid choice."),
        (
            {"members": ["inst_a", "embed-small"]},
            "members",
            "embed-small is a embeddings instance; the group serves chat.",
        ),
        ({"members": ["ghost"]}, "members", "No instance with instance_id &#x27;ghost&#x27;."),
        (
            {"display_name": "x" * 201},
            "display_name",
            "Ensure this field has no more than 200 characters.",
        ),
    ],
)
def test_each_rule_of_the_importer_is_shown_beside_its_field_and_nothing_is_saved(
    admin_client,
    demo,
    change,
    field,
    message,
) -> None:
    groups, members = TargetGroup.objects.count(), TargetGroupMember.objects.count()
    before = TargetGroup.objects.get(name="tech-support-pool").updated_at
    response = admin_client.post("/target-groups/new/", {**FORM, **change})
    html = response.content.decode()
    assert response.status_code == 200 and "Nothing was saved." in html
    assert message in html
    if field != "members":
        assert (
            f'name="{field}"' in html.split(message)[0].rsplit('<div class="field', 1)[1]
        )  # beside its field
        assert 'aria-invalid="true"' in html
    assert (TargetGroup.objects.count(), TargetGroupMember.objects.count()) == (groups, members)
    assert (
        TargetGroup.objects.get(name="tech-support-pool").updated_at == before
    )  # a taken name replaces nothing


def test_the_form_keeps_what_was_typed_after_an_error(admin_client, demo) -> None:
    html = admin_client.post("/target-groups/new/", {**FORM, "name": "Bad Name"}).content.decode()
    assert 'value="Bad Name"' in html and "Billing questions." in html
    assert re.search(r'value="inst_a" id="id_members_\d+" checked', html)
    assert re.search(r'value="qwen-cheap-a" id="id_members_\d+" checked', html)
    assert not re.search(r'value="inst_b" id="id_members_\d+" checked', html)


def test_the_create_form_needs_a_login(client, demo) -> None:
    response = client.post("/target-groups/new/", FORM)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert not TargetGroup.objects.filter(name="billing-pool").exists()


# -- add a member ------------------------------------------------------------------------------


def test_the_add_form_offers_only_instances_of_the_kind_that_are_not_members(
    admin_client, demo
) -> None:
    from targetgroups.models import Instance

    Instance.objects.filter(instance_id="backup-small").update(enabled=False)
    html = admin_client.get("/target-groups/tech-support-pool/").content.decode()
    form = html.split('id="add-member"')[1].split("</form>")[0]
    assert (
        '<option value="qwen-cheap-a">' in form
        and '<option value="backup-small">backup-small (disabled)' in form
    )
    assert 'value="inst_a"' not in form and 'value="embed-small"' not in form
    assert (
        'name="weight" min="0" max="1000" value="100"' in form
        and 'name="priority" min="1" max="1000" value="1"' in form
    )


def test_htmx_adds_the_row_and_refreshes_the_form(admin_client, demo, bumps) -> None:
    with bumps():
        response = admin_client.post(
            "/target-groups/tech-support-pool/members/add/",
            {"instance": "qwen-cheap-a", "weight": "30", "priority": "2"},
            headers=HTMX,
        )
    html = response.content.decode()
    member = TargetGroupMember.objects.get(
        group__name="tech-support-pool", instance__instance_id="qwen-cheap-a"
    )
    assert (member.weight, member.priority, member.enabled) == (30, 2, True)
    # The form answers in place, fresh (the instance is no longer offered); the row is appended out
    # of band.
    assert (
        html.lstrip().startswith('<form id="add-member"')
        and 'hx-swap-oob="true"' not in html.split(">")[0]
    )
    assert 'value="qwen-cheap-a"' not in html.split("</form>")[0]
    row = html.split('<template><tbody hx-swap-oob="beforeend:#member-rows">')[1]
    assert (
        row.lstrip().startswith(f'<tr id="member-{member.pk}" data-testid="member-qwen-cheap-a"')
        and "Added ✓" in row
    )
    assert "members-empty" not in html  # the table had rows: nothing to delete
    assert (
        '<pre class="code" id="group-json" hx-swap-oob="true">' in html
        and "&quot;instance_id&quot;: &quot;qwen-cheap-a&quot;" in html
    )


def test_adding_to_an_empty_group_drops_the_empty_row(admin_client, demo) -> None:
    TargetGroup.objects.create(name="empty-pool", workload_kind="embeddings")
    html = admin_client.post(
        "/target-groups/empty-pool/members/add/",
        {"instance": "embed-small", "weight": "", "priority": ""},
        headers=HTMX,
    ).content.decode()
    assert '<template><tr id="members-empty" hx-swap-oob="delete"></tr></template>' in html
    assert _members("empty-pool") == [("embed-small", 100, 1, True)]  # the model's defaults


def test_a_plain_post_adds_and_redirects(admin_client, demo, bumps) -> None:
    with bumps():
        response = admin_client.post(
            "/target-groups/tech-support-pool/members/add/", {"instance": "backup-small"}
        )
    assert (
        response.status_code == 302 and response["Location"] == "/target-groups/tech-support-pool/"
    )
    assert ("backup-small", 100, 1, True) in _members("tech-support-pool")
    html = admin_client.get(response["Location"]).content.decode()
    assert (
        "Added backup-small to tech-support-pool." in html
        and 'data-testid="member-backup-small"' in html
    )


@pytest.mark.parametrize(
    ("instance", "message"),
    [
        ("embed-small", "embed-small is a embeddings instance; this group serves chat."),
        ("inst_a", "inst_a is already a member of tech-support-pool."),
        ("ghost", "No such instance."),
        ("", "Choose an instance to add."),
    ],
)
def test_a_wrong_kind_a_duplicate_or_no_instance_is_refused(
    admin_client, demo, instance, message
) -> None:
    before = _members("tech-support-pool")
    response = admin_client.post(
        "/target-groups/tech-support-pool/members/add/", {"instance": instance}, headers=HTMX
    )
    html = response.content.decode()
    assert response.status_code == 200 and message in html
    assert html.lstrip().startswith('<form id="add-member"') and 'aria-invalid="true"' in html
    response = admin_client.post(
        "/target-groups/tech-support-pool/members/add/", {"instance": instance}
    )
    assert response.status_code == 302
    assert message in admin_client.get(response["Location"]).content.decode()
    assert _members("tech-support-pool") == before


def test_weight_and_priority_follow_the_model_rules(admin_client, demo) -> None:
    html = admin_client.post(
        "/target-groups/tech-support-pool/members/add/",
        {"instance": "qwen-cheap-a", "weight": "1001", "priority": "0"},
        headers=HTMX,
    ).content.decode()
    assert "less than or equal to 1000" in html and "greater than or equal to 1" in html
    assert not TargetGroupMember.objects.filter(
        group__name="tech-support-pool", instance__instance_id="qwen-cheap-a"
    ).exists()


def test_adding_needs_a_login(client, demo) -> None:
    response = client.post(
        "/target-groups/tech-support-pool/members/add/", {"instance": "qwen-cheap-a"}, headers=HTMX
    )
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert ("qwen-cheap-a", 100, 1, True) not in _members("tech-support-pool")
    assert client.get("/target-groups/tech-support-pool/members/add/").status_code == 302


def test_adding_is_post_only(admin_client, demo) -> None:
    assert admin_client.get("/target-groups/tech-support-pool/members/add/").status_code == 405


# -- remove a member ---------------------------------------------------------------------------


def test_each_row_has_a_remove_button_with_a_confirm(admin_client, demo) -> None:
    member = TargetGroupMember.objects.get(
        group__name="tech-support-pool", instance__instance_id="inst_b"
    )
    html = admin_client.get("/target-groups/tech-support-pool/").content.decode()
    row = html.split(f'<tr id="member-{member.pk}"')[1].split("</tr>")[0]
    assert f'hx-post="/target-groups/tech-support-pool/members/{member.pk}/remove/"' in row
    assert 'hx-confirm="Remove inst_b from tech-support-pool?' in row and ">Remove</button>" in row


def test_htmx_removes_the_row_and_offers_the_instance_again(admin_client, demo, bumps) -> None:
    member = TargetGroupMember.objects.get(
        group__name="tech-support-pool", instance__instance_id="inst_b"
    )
    with bumps():
        response = admin_client.post(
            f"/target-groups/tech-support-pool/members/{member.pk}/remove/", headers=HTMX
        )
    html = response.content.decode()
    assert response.status_code == 200 and "<tr" not in html  # the row's outerHTML swap removes it
    assert (
        'id="add-member"' in html
        and 'hx-swap-oob="true"' in html
        and '<option value="inst_b">' in html
    )
    assert (
        'id="group-json" hx-swap-oob="true"' in html
        and "inst_b" not in html.split('id="group-json"')[1]
    )
    assert _members("tech-support-pool") == [("inst_a", 100, 1, True)]


def test_removing_the_last_member_is_allowed_like_an_empty_import(
    admin_client, demo, bumps
) -> None:
    group = TargetGroup.objects.get(name="backup-group")
    assert (
        group.routes.exists()
    )  # routes depend on it; an imported `"members": []` is accepted all the same
    member = group.members.get()
    with bumps():
        html = admin_client.post(
            f"/target-groups/backup-group/members/{member.pk}/remove/", headers=HTMX
        ).content.decode()
    assert '<template><tbody hx-swap-oob="beforeend:#member-rows"><tr id="members-empty">' in html
    assert not group.members.exists()


def test_a_plain_post_removes_and_redirects(admin_client, demo, bumps) -> None:
    member = TargetGroupMember.objects.get(
        group__name="tech-support-pool", instance__instance_id="inst_a"
    )
    with bumps():
        response = admin_client.post(
            f"/target-groups/tech-support-pool/members/{member.pk}/remove/"
        )
    assert response["Location"] == "/target-groups/tech-support-pool/"
    assert (
        "Removed inst_a from tech-support-pool."
        in admin_client.get(response["Location"]).content.decode()
    )
    assert _members("tech-support-pool") == [("inst_b", 100, 2, True)]


def test_removing_needs_a_login_a_post_and_a_member_of_that_group(admin_client, demo) -> None:
    member = TargetGroupMember.objects.get(
        group__name="tech-support-pool", instance__instance_id="inst_a"
    )
    url = f"/target-groups/tech-support-pool/members/{member.pk}/remove/"
    response = Client().post(url, headers=HTMX)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert admin_client.get(url).status_code == 405
    assert (
        admin_client.post(f"/target-groups/embed-pool/members/{member.pk}/remove/").status_code
        == 404
    )
    assert TargetGroupMember.objects.filter(pk=member.pk).exists()
