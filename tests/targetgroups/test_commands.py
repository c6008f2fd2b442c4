from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from balancers.demo import seed_demo
from balancers.models import Balancer
from gateway.models import ApiKey, hash_api_key
from targetgroups.models import Instance, TargetGroup

pytestmark = pytest.mark.django_db

SEED_FILE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "target-group.json"


def run(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def test_the_seed_file_round_trips_through_import_and_export():
    seed_demo()
    TargetGroup.objects.filter(name="tech-support-pool").delete()
    assert "Created target group tech-support-pool" in run("import_targetgroup", str(SEED_FILE))
    assert json.loads(run("export_targetgroup", "tech-support-pool")) == json.loads(
        SEED_FILE.read_text()
    )


def test_a_bad_file_changes_nothing_and_the_error_names_the_field(tmp_path):
    seed_demo()
    before = json.loads(run("export_targetgroup", "tech-support-pool"))
    bad = json.loads(SEED_FILE.read_text())
    bad["members"][1]["instance_id"] = "inst_missing"
    bad["members"][0]["weight"] = 100
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(
        CommandError,
        match=r"members\[1\]\.instance_id: No instance with instance_id 'inst_missing'",
    ):
        run("import_targetgroup", str(path))
    assert json.loads(run("export_targetgroup", "tech-support-pool")) == before
    path.write_text("{not json")
    with pytest.raises(CommandError, match="not valid JSON"):
        run("import_targetgroup", str(path))
    path.write_text(json.dumps({**before, "selection_polcy": "random"}))
    with pytest.raises(CommandError, match="selection_polcy: Unknown field"):
        run("import_targetgroup", str(path))


def test_seed_demo_is_idempotent():
    seed_demo()
    counts = (Instance.objects.count(), TargetGroup.objects.count(), Balancer.objects.count())
    assert "nothing changed" in run("seed_demo")
    assert (
        Instance.objects.count(),
        TargetGroup.objects.count(),
        Balancer.objects.count(),
    ) == counts
    support = Balancer.objects.get(name="support-balancer")
    assert [r.name for r in support.routes.order_by("priority")] == [
        "efficient",
        "reasoning",
        "fallback",
    ]
    assert support.routes.get(is_default=True).name == "fallback"
    assert support.router_model.provider == "builtin"
    assert Balancer.objects.get(name="embed-balancer").workload_kind == "embeddings"


def test_create_api_key_prints_only_the_secret_and_stores_its_hash():
    seed_demo()
    secret = run("create_api_key", "--name", "ci", "--balancers", "support-balancer").strip()
    assert secret.startswith("sb-") and "\n" not in secret
    key = ApiKey.objects.get(name="ci")
    assert key.key_hash == hash_api_key(secret) and secret not in key.prefix + key.key_hash
    assert [b.name for b in key.balancers.all()] == ["support-balancer"]
    with pytest.raises(CommandError, match="no balancer named nope"):
        run("create_api_key", "--name", "x", "--balancers", "nope")


def test_instance_api_keys_are_write_only_in_the_admin(admin_client):
    inst = Instance.objects.create(
        instance_id="secret-holder",
        provider="openai",
        base_url="http://127.0.0.1:9/v1",
        model="m",
        api_key="sk-very-secret",
    )
    page = admin_client.get(f"/admin/targetgroups/instance/{inst.pk}/change/").content.decode()
    assert "sk-very-secret" not in page
