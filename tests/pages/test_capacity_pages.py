"""Target groups (members inline, import/export) and instances (health, write-only key, simulator
knobs)."""

from __future__ import annotations

import json

from django.core.files.uploadedfile import SimpleUploadedFile

from targetgroups.models import Instance, TargetGroup, TargetGroupMember

DOCUMENT = {
    "name": "billing-pool",
    "display_name": "Billing pool",
    "description": "Billing.",
    "workload_kind": "chat",
    "selection_policy": "round_robin",
    "enabled": True,
    "members": [
        {"instance_id": "inst_a", "weight": 100, "enabled": True, "priority": 1},
        {"instance_id": "inst_b", "weight": 50, "enabled": False, "priority": 2},
    ],
}


def test_the_group_list_and_detail_render(admin_client, demo) -> None:
    html = admin_client.get("/target-groups/").content.decode()
    assert "tech-support-pool" in html and "embed-pool" in html
    detail = admin_client.get("/target-groups/tech-support-pool/").content.decode()
    assert 'data-testid="member-inst_a"' in detail and 'data-testid="member-inst_b"' in detail
    assert "Weight of inst_a" in detail and "healthy" in detail


def test_import_by_paste_then_export_round_trips(admin_client, demo) -> None:
    response = admin_client.post("/target-groups/import/", {"document": json.dumps(DOCUMENT)})
    assert response["Location"] == "/target-groups/billing-pool/"
    export = admin_client.get("/target-groups/billing-pool/export/")
    assert export["Content-Disposition"] == 'attachment; filename="billing-pool.json"'
    assert json.loads(export.content) == DOCUMENT


def test_import_by_file_replaces_an_existing_group(admin_client, demo) -> None:
    document = {**DOCUMENT, "name": "tech-support-pool", "members": DOCUMENT["members"][:1]}
    upload = SimpleUploadedFile(
        "group.json", json.dumps(document).encode(), content_type="application/json"
    )
    response = admin_client.post("/target-groups/import/", {"file": upload, "document": ""})
    assert response.status_code == 302
    group = TargetGroup.objects.get(name="tech-support-pool")
    assert [m.instance.instance_id for m in group.members.all()] == ["inst_a"]


def test_import_errors_name_the_field_and_import_nothing(admin_client, demo) -> None:
    bad = {
        **DOCUMENT,
        "members": [{"instance_id": "ghost", "weight": 100, "enabled": True, "priority": 1}],
    }
    html = admin_client.post(
        "/target-groups/import/", {"document": json.dumps(bad)}
    ).content.decode()
    assert (
        "Nothing was imported." in html
        and "members[0].instance_id: No instance with instance_id" in html
    )
    bad["members"][0].update(instance_id="inst_a", weight=2000)
    html = admin_client.post(
        "/target-groups/import/", {"document": json.dumps(bad)}
    ).content.decode()
    assert "members[0].weight: Ensure this value is less than or equal to 1000." in html
    assert not TargetGroup.objects.filter(name="billing-pool").exists()
    html = admin_client.post("/target-groups/import/", {"document": "{not json"}).content.decode()
    assert "Not valid JSON" in html
    html = admin_client.post("/target-groups/import/", {"document": "  "}).content.decode()
    assert "Choose a JSON file or paste the document." in html


def test_edit_as_json_prefills_the_document(admin_client, demo) -> None:
    html = admin_client.get("/target-groups/import/?from=tech-support-pool").content.decode()
    assert "&quot;name&quot;: &quot;tech-support-pool&quot;" in html


def test_members_change_inline(admin_client, demo) -> None:
    member = TargetGroupMember.objects.get(
        group__name="tech-support-pool", instance__instance_id="inst_b"
    )
    url = f"/target-groups/tech-support-pool/members/{member.pk}/"
    html = admin_client.post(
        url, {"weight": "0", "priority": "3"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert html.lstrip().startswith(f'<tr id="member-{member.pk}"') and "Saved" in html
    member.refresh_from_db()
    assert (member.weight, member.priority, member.enabled) == (0, 3, False)
    html = admin_client.post(
        url, {"weight": "1001", "priority": "3", "enabled": "on"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert "less than or equal to 1000" in html and 'aria-invalid="true"' in html
    member.refresh_from_db()
    assert member.weight == 0
    response = admin_client.post(url, {"weight": "10", "priority": "1", "enabled": "on"})
    assert response["Location"] == "/target-groups/tech-support-pool/"
    member.refresh_from_db()
    assert (member.weight, member.enabled) == (10, True)


def test_instances_list_health_prices_and_kind(admin_client, demo) -> None:
    html = admin_client.get("/instances/").content.decode()
    assert 'data-testid="instance-qwen-cheap-a"' in html and "0.10 · 0.30" in html
    assert "embeddings" in html and "healthy" in html


def test_the_upstream_api_key_is_write_only(admin_client, demo) -> None:
    instance = Instance.objects.get(instance_id="inst_a")
    instance.api_key = "sk-very-secret"
    instance.save()
    html = admin_client.get("/instances/inst_a/").content.decode()
    assert "sk-very-secret" not in html and "•••• stored" in html
    form = {
        "instance_id": "inst_a",
        "display_name": "Tech support A",
        "provider": "simulator",
        "base_url": "",
        "model": "support-a",
        "api_key": "",
        "workload_kind": "chat",
        "input_price_per_million": "0.2",
        "output_price_per_million": "0.7",
        "quality_tier": "3",
        "connect_timeout": "5",
        "first_byte_timeout": "60",
        "request_timeout": "300",
        "enabled": "on",
    }
    assert admin_client.post("/instances/inst_a/", form).status_code == 302
    instance.refresh_from_db()
    assert (
        instance.api_key == "sk-very-secret" and str(instance.input_price_per_million) == "0.200000"
    )
    assert instance.options == {"latency_ms": 90}  # the knobs are left alone by the main form
    admin_client.post("/instances/inst_a/", {**form, "clear_api_key": "on"})
    instance.refresh_from_db()
    assert instance.api_key == ""


def test_instance_form_errors_stay_beside_their_fields(admin_client, demo) -> None:
    form = {
        "instance_id": "new-one",
        "provider": "openai",
        "base_url": "",
        "model": "gpt-x",
        "workload_kind": "chat",
        "input_price_per_million": "-1",
        "output_price_per_million": "0",
        "quality_tier": "3",
        "connect_timeout": "5",
        "first_byte_timeout": "60",
        "request_timeout": "300",
    }
    html = admin_client.post("/instances/new/", form).content.decode()
    assert "greater than or equal to 0" in html
    form["input_price_per_million"] = "0.5"
    html = admin_client.post("/instances/new/", form).content.decode()
    assert "A base URL is required for this provider." in html
    form["base_url"] = "http://127.0.0.1:9/v1"
    response = admin_client.post("/instances/new/", {**form, "api_key": "sk-new"})
    assert response["Location"] == "/instances/new-one/"
    assert Instance.objects.get(instance_id="new-one").api_key == "sk-new"


def test_simulator_knobs_break_an_upstream(admin_client, demo) -> None:
    html = admin_client.post(
        "/instances/backup-small/simulator/",
        {"down": "on", "latency_ms": "120", "tokens_per_second": "250"},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert 'id="simulator"' in html and "down" in html and 'hx-swap-oob="true"' in html
    assert Instance.objects.get(instance_id="backup-small").options == {
        "latency_ms": 120,
        "tokens_per_second": 250,
        "down": True,
    }
    admin_client.post(
        "/instances/backup-small/simulator/",
        {"latency_ms": "120", "error_rate": "0.5"},
        headers={"HX-Request": "true"},
    )
    assert Instance.objects.get(instance_id="backup-small").options == {
        "latency_ms": 120,
        "error_rate": 0.5,
    }
    html = admin_client.post(
        "/instances/backup-small/simulator/", {"error_rate": "3"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert "less than or equal to 1" in html
    assert (
        admin_client.post("/instances/local-router/simulator/", {"down": "on"}).status_code == 404
    )
