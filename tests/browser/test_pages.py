"""Target groups, instances, failover in the playground, API keys and the phone layout, in
Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.models import ApiKey
from targetgroups.models import Instance, TargetGroup

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

BILLING_POOL = {
    "name": "billing-pool",
    "display_name": "Billing pool",
    "description": "Billing instances behind one name.",
    "workload_kind": "chat",
    "selection_policy": "weighted_round_robin",
    "enabled": True,
    "members": [
        {"instance_id": "inst_a", "weight": 100, "enabled": True, "priority": 1},
        {"instance_id": "inst_b", "weight": 100, "enabled": True, "priority": 2},
    ],
}


def test_an_operator_imports_edits_and_exports_a_target_group(ui, tmp_path: Path) -> None:
    page = ui.page
    ui.login()
    page.get_by_role("link", name="Target groups").first.click()
    expect(page.get_by_role("heading", name="Target groups")).to_be_visible()
    ui.shot("target-groups")
    page.get_by_role("link", name="Import JSON").click()

    # A document naming an unknown instance is refused whole, naming the field.
    broken = {
        **BILLING_POOL,
        "members": [{"instance_id": "nope", "weight": 100, "enabled": True, "priority": 1}],
    }
    page.get_by_label("Or paste the document").fill(json.dumps(broken))
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_test_id("import-errors")).to_contain_text("members[0].instance_id")
    ui.shot("target-group-import-errors")
    assert not TargetGroup.objects.filter(name="billing-pool").exists()

    # A file upload creates the group.
    path = tmp_path / "billing-pool.json"
    path.write_text(json.dumps(BILLING_POOL, indent=2))
    page.get_by_label("Or paste the document").fill("")
    page.get_by_label("JSON file").set_input_files(str(path))
    page.get_by_role("button", name="Import").click()
    expect(page).to_have_url(re.compile(r"/target-groups/billing-pool/$"))
    expect(page.get_by_role("status").first).to_contain_text(
        "Created target group billing-pool with 2 members"
    )

    # Weight and enabled change inline, without a page load.
    page.evaluate("window.__samePage = true")
    weight = page.get_by_label("Weight of inst_a")
    weight.fill("40")
    weight.press("Enter")
    expect(page.get_by_test_id("member-inst_a")).to_contain_text("Saved")
    page.get_by_test_id("member-inst_b").get_by_role("checkbox").uncheck()
    expect(page.get_by_test_id("member-inst_b")).to_contain_text("Saved")
    weight = page.get_by_label("Weight of inst_a")
    weight.fill("5000")
    weight.press("Enter")
    expect(page.get_by_test_id("member-inst_a").get_by_role("alert")).to_contain_text(
        "less than or equal to 1000"
    )
    assert page.evaluate("window.__samePage") is True
    ui.shot("target-group-detail")
    members = {
        m.instance.instance_id: m
        for m in TargetGroup.objects.get(name="billing-pool").members.select_related("instance")
    }
    assert members["inst_a"].weight == 40 and members["inst_b"].enabled is False

    # Export gives back the document, with the edits.
    with page.expect_download() as download_info:
        page.get_by_test_id("export").click()
    download = download_info.value
    assert download.suggested_filename == "billing-pool.json"
    exported = json.loads(Path(download.path()).read_text())
    expected = json.loads(json.dumps(BILLING_POOL))
    expected["members"][0]["weight"] = 40
    expected["members"][1]["enabled"] = False
    assert exported == expected


def test_breaking_an_upstream_fails_over_in_the_playground(ui) -> None:
    page = ui.page
    ui.login()
    page.get_by_role("link", name="Instances").first.click()
    expect(page.get_by_test_id("instance-backup-small")).to_contain_text("healthy")
    ui.shot("instances")
    page.get_by_role("link", name="backup-small").first.click()
    expect(page.get_by_test_id("sim-state")).to_have_text("up")
    # The upstream API key is write-only: a stored key is never rendered back.
    stored = Instance.objects.get(instance_id="backup-small")
    stored.api_key = "sk-upstream-secret"
    stored.save(update_fields=["api_key_encrypted"])
    page.reload()
    expect(page.get_by_label(re.compile("Upstream API key"))).to_have_value("")
    assert "sk-upstream-secret" not in page.content()
    page.get_by_text("Down: refuse every connection").click()
    expect(page.get_by_test_id("sim-state")).to_have_text("down")
    ui.shot("instance-detail")
    assert Instance.objects.get(instance_id="backup-small").options.get("down") is True

    ui.go("/playground/?balancer=support-balancer")
    page.get_by_label("Route").select_option("fallback")
    page.get_by_role("button", name="Send", exact=True).click()
    result = page.get_by_test_id("playground-result").first
    expect(result).to_contain_text("failed over")
    expect(result).not_to_contain_text("instance backup-small")
    expect(result.get_by_test_id("playground-answer")).not_to_be_empty()
    ui.shot("playground")


def test_an_api_key_secret_is_shown_once_and_the_key_can_be_revoked(ui) -> None:
    page = ui.page
    ui.login()
    page.get_by_role("link", name="API keys").first.click()
    page.get_by_label("Name", exact=True).fill("support-app")
    page.get_by_label("support-balancer").check()
    page.get_by_label("Requests per minute").fill("600")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#secret-value")
    expect(secret).to_have_text(re.compile(r"^sb-"))
    value = secret.inner_text()
    key = ApiKey.objects.get(name="support-app")
    assert value.startswith(key.prefix) and key.rate_limit_per_minute == 600
    ui.shot("api-keys")
    page.reload()
    expect(page.locator("#secret-value")).to_have_count(0)
    assert value not in page.content()
    page.locator(f"#key-{key.pk}").get_by_role("button", name="Revoke").click()
    expect(page.locator(f"#key-{key.pk}")).to_contain_text("revoked")
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_the_pages_fit_a_phone(phone) -> None:
    page = phone.page
    phone.login()
    for path, name in [
        ("/balancers/", "phone-balancer-list"),
        ("/balancers/support-balancer/", "phone-balancer-detail"),
        ("/balancers/new/routes/", "phone-wizard-routes"),
        ("/target-groups/tech-support-pool/", "phone-target-group"),
    ]:
        phone.go(path)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a phone"
        phone.shot(name)
    page.get_by_text("Menu").click()
    expect(page.locator(".topbar").get_by_role("link", name="Playground")).to_be_visible()
