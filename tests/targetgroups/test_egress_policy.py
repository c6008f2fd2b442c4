"""The egress policy at save time: every door that writes an instance's base URL (the management
API, the instance form, the Django admin) and the target-group import refuse what the policy
forbids. Link-local and metadata addresses always; loopback and private networks when
GATEWAY_EGRESS_ALLOW_PRIVATE is off (the tests run with it on, see tests/conftest.py)."""

from __future__ import annotations

import json

import pytest

from targetgroups import egress
from targetgroups.models import Instance, TargetGroup
from tests.factories import make_instance

FORM = {
    "instance_id": "new-one",
    "provider": "openai",
    "model": "gpt-x",
    "workload_kind": "chat",
    "input_price_per_million": "0",
    "output_price_per_million": "0",
    "quality_tier": "3",
    "connect_timeout": "5",
    "first_byte_timeout": "60",
    "request_timeout": "300",
}


def api_instance(base_url: str) -> dict[str, object]:
    return {
        "instance_id": "inst_egress",
        "provider": "openai",
        "base_url": base_url,
        "model": "m",
        "input_price_per_million": "0",
        "output_price_per_million": "0",
    }


# -- the rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.0.1",
        "fe80::1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "fd00:ec2::254",
        "100.100.100.200",
        "168.63.129.16",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "255.255.255.255",
    ],
)
@pytest.mark.parametrize("allow_private", [True, False])
def test_link_local_metadata_and_unroutable_addresses_are_always_refused(
    address: str, allow_private: bool
) -> None:
    assert egress.address_problem(address, allow_private=allow_private)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.5",
        "192.168.1.10",
        "100.64.0.1",
        "fc00::1",
        "::ffff:127.0.0.1",
    ],
)
def test_loopback_and_private_addresses_depend_on_the_setting(address: str) -> None:
    assert egress.address_problem(address, allow_private=True) is None
    assert "GATEWAY_EGRESS_ALLOW_PRIVATE=1" in (
        egress.address_problem(address, allow_private=False) or ""
    )


@pytest.mark.parametrize("address", ["8.8.8.8", "104.18.0.1", "2606:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert egress.address_problem(address, allow_private=False) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/?x=/healthz",  # the query would take the appended /chat/completions
        "http://upstream.example/v1?api-version=1",
        "http://upstream.example/v1#",
        "http://upstream.example/v1#frag",
        "http://user:secret@upstream.example/v1",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/v1",
        "http://metadata.google.internal/computeMetadata/v1",
        "ftp://upstream.example/v1",
    ],
)
def test_base_urls_the_policy_refuses_whatever_the_setting(url: str) -> None:
    assert egress.base_url_problem(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:11434/v1",
        "http://127.1:8000/v1",
        "http://2130706433/v1",
        "http://0x7f000001/v1",
        "http://[::1]:8000/v1",
        "http://10.0.0.7/v1",
        "http://ollama.localhost/v1",
    ],
)
def test_loopback_and_private_base_urls_in_any_spelling_need_the_setting(url: str) -> None:
    assert egress.base_url_problem(url, allow_private=True) is None
    assert egress.base_url_problem(url, allow_private=False)


# -- the doors --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "base_url",
    ["http://169.254.169.254/v1", "http://127.0.0.1:8000/?x=", "http://u:p@h.example/v1"],
)
def test_the_management_api_refuses_a_forbidden_base_url(admin_client, base_url: str) -> None:
    response = admin_client.post(
        "/api/instances/", api_instance(base_url), content_type="application/json"
    )
    assert response.status_code == 400
    assert "base_url" in response.json()
    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_the_management_api_refuses_loopback_only_when_private_networks_are_off(
    admin_client, settings
) -> None:
    response = admin_client.post(
        "/api/instances/", api_instance("http://127.0.0.1:8000/v1"), content_type="application/json"
    )
    assert response.status_code == 201
    settings.GATEWAY_EGRESS_ALLOW_PRIVATE = False
    response = admin_client.patch(
        "/api/instances/inst_egress/",
        {"base_url": "http://localhost:8001/v1"},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "GATEWAY_EGRESS_ALLOW_PRIVATE" in response.json()["base_url"][0]
    assert Instance.objects.get().base_url == "http://127.0.0.1:8000/v1"


@pytest.mark.django_db
def test_the_instance_form_refuses_the_metadata_address(admin_client) -> None:
    html = admin_client.post(
        "/instances/new/", {**FORM, "base_url": "http://169.254.169.254/latest"}
    ).content.decode()
    assert "cloud metadata address, always refused" in html
    html = admin_client.post(
        "/instances/new/", {**FORM, "base_url": "http://127.0.0.1:9/v1?next=/healthz"}
    ).content.decode()
    assert "query string" in html
    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_the_instance_form_refuses_loopback_when_private_networks_are_off(
    admin_client, settings
) -> None:
    settings.GATEWAY_EGRESS_ALLOW_PRIVATE = False
    html = admin_client.post(
        "/instances/new/", {**FORM, "base_url": "http://127.0.0.1:9/v1"}
    ).content.decode()
    assert "loopback address" in html
    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_the_admin_refuses_the_metadata_address(admin_client) -> None:
    response = admin_client.post(
        "/admin/targetgroups/instance/add/",
        {
            **FORM,
            "base_url": "http://[fd00:ec2::254]/latest",
            "options": "{}",
            "enabled": "on",
        },
    )
    assert response.status_code == 200
    assert "cloud metadata address, always refused" in response.content.decode()
    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_a_target_group_import_refuses_a_member_whose_base_url_the_policy_forbids(settings) -> None:
    from django.core.management import CommandError, call_command

    make_instance(
        instance_id="local-llm",
        provider="openai",
        base_url="http://127.0.0.1:11434/v1",
        model="llama",
    )
    settings.GATEWAY_EGRESS_ALLOW_PRIVATE = False
    document = {"name": "pool", "workload_kind": "chat", "members": [{"instance_id": "local-llm"}]}
    path = settings.VAR_DIR / "egress-pool.json"
    path.write_text(json.dumps(document))
    try:
        with pytest.raises(
            CommandError, match=r"members\[0\]\.instance_id: local-llm's base URL is refused"
        ):
            call_command("import_targetgroup", str(path))
    finally:
        path.unlink()
    assert not TargetGroup.objects.exists()
