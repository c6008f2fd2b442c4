"""A target group built by plain forms in Chromium: create, add members, remove one."""

from __future__ import annotations

import re

import pytest

from targetgroups.models import TargetGroup

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


def test_an_operator_creates_a_group_and_adds_and_removes_members(ui) -> None:
    page = ui.page
    ui.login()
    ui.go("/target-groups/")
    page.get_by_role("link", name="New target group").click()
    expect(page.get_by_role("heading", name="New target group")).to_be_visible()

    # The member list follows the workload kind (htmx), then a bad name is refused beside its field.
    page.locator("input[name=workload_kind][value=embeddings]").check()
    expect(page.get_by_role("checkbox", name="embed-small")).to_be_visible()
    expect(page.get_by_role("checkbox", name=re.compile(r"^inst_a"))).to_have_count(0)
    page.locator("input[name=workload_kind][value=chat]").check()
    expect(page.get_by_role("checkbox", name=re.compile(r"^inst_a"))).to_be_visible()
    page.get_by_label("Name", exact=True).fill("billing-pool")
    page.get_by_label("Display name").fill("Billing pool")
    page.get_by_label("Description").fill("Billing questions, cheap capacity first.")
    page.get_by_label("Selection policy").select_option("round_robin")
    ui.shot("target-group-new")
    page.get_by_label("Name", exact=True).fill("Billing Pool")
    ui.submit("Create target group")
    expect(page.get_by_role("alert").filter(has_text="lowercase letters")).to_be_visible()
    assert not TargetGroup.objects.filter(name__iexact="billing pool").exists()

    page.get_by_label("Name", exact=True).fill("billing-pool")
    ui.submit("Create target group")
    expect(page).to_have_url(re.compile(r"/target-groups/billing-pool/$"))
    expect(page.get_by_role("status").first).to_contain_text(
        "Created target group billing-pool with 0 members"
    )
    expect(page.locator("#members-empty")).to_be_visible()

    # Two members added without a page load; each one leaves the instance select.
    page.evaluate("window.__samePage = true")
    page.get_by_label("Instance").select_option("qwen-cheap-a")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_test_id("member-qwen-cheap-a")).to_contain_text("Added")
    expect(page.locator("#members-empty")).to_have_count(0)
    page.get_by_label("Instance").select_option("backup-small")
    page.get_by_label("Weight", exact=True).fill("25")
    page.get_by_label("Priority", exact=True).fill("2")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_test_id("member-backup-small")).to_contain_text("Added")
    expect(page.get_by_label("Instance").locator("option[value='qwen-cheap-a']")).to_have_count(0)
    expect(page.locator("#group-json")).to_contain_text('"instance_id": "backup-small"')
    ui.shot("target-group-add-member")

    # Remove one (the confirm dialog is accepted); the instance is offered again.
    page.get_by_role("button", name="Remove qwen-cheap-a").click()
    expect(page.get_by_test_id("member-qwen-cheap-a")).to_have_count(0)
    expect(page.get_by_label("Instance").locator("option[value='qwen-cheap-a']")).to_have_count(1)
    expect(page.locator("#group-json")).not_to_contain_text("qwen-cheap-a")
    assert page.evaluate("window.__samePage") is True

    group = TargetGroup.objects.get(name="billing-pool")
    assert (group.selection_policy, group.description) == (
        "round_robin",
        "Billing questions, cheap capacity first.",
    )
    members = [
        (m.instance.instance_id, m.weight, m.priority)
        for m in group.members.select_related("instance")
    ]
    assert members == [("backup-small", 25, 2)]
    page.reload()
    expect(page.get_by_test_id("member-backup-small")).to_be_visible()
    expect(page.locator("#group-json")).to_contain_text('"instance_id": "backup-small"')
