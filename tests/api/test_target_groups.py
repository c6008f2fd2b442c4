from __future__ import annotations

import json
from pathlib import Path

import pytest

from targetgroups.documents import target_group_document
from targetgroups.models import TargetGroup
from tests.factories import make_balancer, make_group, make_instance

pytestmark = pytest.mark.django_db

SEED_FILE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "target-group.json"


@pytest.fixture
def seed_document() -> dict:
    make_instance(instance_id="inst_a")
    make_instance(instance_id="inst_b")
    return json.loads(SEED_FILE.read_text())


def test_importing_the_seed_file_creates_the_group_then_replaces_it(
    admin_client, seed_document
) -> None:
    created = admin_client.post(
        "/api/target-groups/import/", seed_document, content_type="application/json"
    )
    seed_document["members"][1]["weight"] = 0
    replaced = admin_client.post(
        "/api/target-groups/import/", seed_document, content_type="application/json"
    )

    assert created.status_code == 201, created.json()
    assert replaced.status_code == 200, replaced.json()
    assert replaced.json() == seed_document
    assert TargetGroup.objects.count() == 1


def test_export_round_trips_the_seed_file(admin_client, seed_document) -> None:
    admin_client.post("/api/target-groups/import/", seed_document, content_type="application/json")

    response = admin_client.get("/api/target-groups/tech-support-pool/export/")

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="tech-support-pool.json"'
    assert response["Content-Type"].startswith("application/json")
    assert json.loads(response.content) == seed_document


def test_get_returns_exactly_the_document(admin_client) -> None:
    group = make_group(instances=[make_instance(), make_instance()])

    detail = admin_client.get(f"/api/target-groups/{group.name}/")
    listing = admin_client.get("/api/target-groups/")

    assert detail.status_code == 200
    assert detail.json() == target_group_document(group)
    assert listing.json() == [target_group_document(group)]


def test_bad_import_changes_nothing_and_names_the_field(admin_client, seed_document) -> None:
    admin_client.post("/api/target-groups/import/", seed_document, content_type="application/json")
    before = admin_client.get("/api/target-groups/tech-support-pool/").json()
    bad = {
        **seed_document,
        "description": "changed",
        "members": [seed_document["members"][0], {"instance_id": "inst_z"}],
    }

    response = admin_client.post("/api/target-groups/import/", bad, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "members": [{}, {"instance_id": ["No instance with instance_id 'inst_z'."]}]
    }
    assert admin_client.get("/api/target-groups/tech-support-pool/").json() == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"workload_kind": "embeddings"}, "members"),  # members are chat instances
        ({"selection_policy": "fastest"}, "selection_policy"),
        ({"name": "Not A Slug"}, "name"),
        ({"colour": "blue"}, "colour"),
        ({"members": "inst_a"}, "members"),
    ],
)
def test_bad_documents_are_refused_naming_the_field(
    admin_client, seed_document, change: dict, field: str
) -> None:
    response = admin_client.post(
        "/api/target-groups/import/", {**seed_document, **change}, content_type="application/json"
    )

    assert response.status_code == 400
    assert field in response.json()
    assert not TargetGroup.objects.exists()


def test_a_member_with_a_bad_weight_is_named_by_position(admin_client, seed_document) -> None:
    seed_document["members"][1]["weight"] = 5000

    response = admin_client.post(
        "/api/target-groups/", seed_document, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["members"] == [
        {},
        {"weight": ["Ensure this value is less than or equal to 1000."]},
    ]


def test_malformed_json_is_a_400(admin_client) -> None:
    response = admin_client.post(
        "/api/target-groups/import/", "{not json", content_type="application/json"
    )

    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]


def test_a_document_that_is_not_an_object_is_a_400(admin_client) -> None:
    for url in ("/api/target-groups/import/", "/api/target-groups/"):
        response = admin_client.post(url, [1, 2], content_type="application/json")
        assert response.status_code == 400
        assert "non_field_errors" in response.json()


def test_creating_a_group_whose_name_exists_is_refused(admin_client, seed_document) -> None:
    admin_client.post("/api/target-groups/", seed_document, content_type="application/json")

    response = admin_client.post(
        "/api/target-groups/",
        {**seed_document, "description": "x"},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "name" in response.json()
    assert TargetGroup.objects.get().description == seed_document["description"]


def test_put_replaces_the_document_and_its_members(admin_client, seed_document) -> None:
    admin_client.post("/api/target-groups/", seed_document, content_type="application/json")
    document = {
        **seed_document,
        "display_name": "Pool",
        "members": [{"instance_id": "inst_b", "weight": 7, "enabled": True, "priority": 1}],
    }
    del document["name"]  # the URL names the group

    response = admin_client.put(
        "/api/target-groups/tech-support-pool/", document, content_type="application/json"
    )

    assert response.status_code == 200, response.json()
    assert response.json() == {"name": "tech-support-pool", **document}


def test_patch_changes_only_the_keys_it_gives(admin_client, seed_document) -> None:
    admin_client.post("/api/target-groups/", seed_document, content_type="application/json")

    response = admin_client.patch(
        "/api/target-groups/tech-support-pool/",
        {"selection_policy": "least_latency"},
        content_type="application/json",
    )

    assert response.status_code == 200
    assert response.json() == {**seed_document, "selection_policy": "least_latency"}


def test_a_group_cannot_be_renamed_through_update(admin_client, seed_document) -> None:
    admin_client.post("/api/target-groups/", seed_document, content_type="application/json")

    response = admin_client.put(
        "/api/target-groups/tech-support-pool/",
        {**seed_document, "name": "other"},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "name" in response.json()


def test_changing_the_kind_of_a_group_used_by_routes_is_refused(admin_client) -> None:
    group = make_group(instances=[make_instance()])
    make_balancer(routes=[{"name": "main", "target_group": group, "is_default": True}])

    response = admin_client.patch(
        f"/api/target-groups/{group.name}/",
        {"workload_kind": "embeddings", "members": []},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "workload_kind" in response.json()


def test_deleting_a_group_used_by_a_route_is_refused(admin_client) -> None:
    group = make_group(instances=[make_instance()])
    balancer = make_balancer(routes=[{"name": "main", "target_group": group, "is_default": True}])

    response = admin_client.delete(f"/api/target-groups/{group.name}/")

    assert response.status_code == 400
    assert f"{balancer.name}/main" in response.json()["non_field_errors"][0]
    assert TargetGroup.objects.filter(pk=group.pk).exists()


def test_deleting_an_unused_group_keeps_its_instances(admin_client) -> None:
    instance = make_instance()
    group = make_group(instances=[instance])

    response = admin_client.delete(f"/api/target-groups/{group.name}/")

    assert response.status_code == 204
    assert not TargetGroup.objects.filter(pk=group.pk).exists()
    assert admin_client.get(f"/api/instances/{instance.instance_id}/").status_code == 200


def test_an_unknown_group_is_a_404(admin_client) -> None:
    assert admin_client.get("/api/target-groups/nope/").status_code == 404
    assert admin_client.get("/api/target-groups/nope/export/").status_code == 404
    assert (
        admin_client.put(
            "/api/target-groups/nope/", {}, content_type="application/json"
        ).status_code
        == 404
    )
