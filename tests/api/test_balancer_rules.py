"""Content rules through the management API: nested in the balancer like its routes."""

from __future__ import annotations

import pytest

from balancers.models import ContentRule
from tests.api.test_balancers import _balancer, setup  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db

RULES = [
    {"name": "invoices", "order": 1, "kind": "regex", "value": r"INV-\d{4}", "route": "reasoning"},
    {"name": "big", "order": 2, "kind": "prompt_tokens", "min_tokens": 2000, "route": "reasoning"},
    {
        "name": "gold",
        "order": 3,
        "kind": "metadata",
        "metadata_key": "tier",
        "value": "gold",
        "route": "efficient",
        "enabled": False,
    },
]


def _post(client, document: dict):
    return client.post("/api/balancers/", document, content_type="application/json")


def test_rules_round_trip_in_order(admin_client, setup) -> None:  # noqa: F811
    response = _post(admin_client, _balancer(rules=RULES))

    assert response.status_code == 201, response.json()
    rules = response.json()["rules"]
    assert [(r["name"], r["order"], r["kind"], r["route"], r["enabled"]) for r in rules] == [
        ("invoices", 1, "regex", "reasoning", True),
        ("big", 2, "prompt_tokens", "reasoning", True),
        ("gold", 3, "metadata", "efficient", False),
    ]
    assert rules[0]["value"] == r"INV-\d{4}"
    assert (rules[1]["min_tokens"], rules[1]["max_tokens"]) == (2000, None)
    assert rules[2]["metadata_key"] == "tier"
    assert admin_client.get("/api/balancers/support/").json()["rules"] == rules


def test_a_bad_regex_is_refused_with_a_message_keyed_to_the_rule(admin_client, setup) -> None:  # noqa: F811
    bad = [{"name": "backref", "kind": "regex", "value": r"(a)\1", "route": "efficient"}]

    response = _post(admin_client, _balancer(rules=bad))

    assert response.status_code == 400
    assert "RE2 syntax" in str(response.json()["rules[0].value"])
    assert not ContentRule.objects.exists()


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ({"name": "x", "kind": "tools", "route": "nowhere"}, "rules[0].route", "not a route"),
        (
            {"name": "x", "kind": "prompt_tokens", "route": "efficient"},
            "rules[0].min_tokens",
            "minimum",
        ),
        (
            {"name": "x", "kind": "metadata", "value": "gold", "route": "efficient"},
            "rules[0].metadata_key",
            "key",
        ),
        (
            {"name": "x", "kind": "keywords", "value": " , ", "route": "efficient"},
            "rules[0].value",
            "keywords",
        ),
        ({"name": "x", "kind": "sorcery", "route": "efficient"}, "rules[0].kind", ""),
        (
            {"name": "a-name-far-too-long-for-a-rule-xyz", "kind": "tools", "route": "efficient"},
            "rules[0].name",
            "",
        ),
    ],
)
def test_invalid_rules_are_400s_naming_the_field(admin_client, setup, rule, field, words) -> None:  # noqa: F811
    response = _post(admin_client, _balancer(rules=[rule]))

    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert words in str(response.json()[field])


def test_a_rule_on_a_disabled_route_is_refused(admin_client, setup) -> None:  # noqa: F811
    document = _balancer(rules=[{"name": "x", "kind": "tools", "route": "efficient"}])
    document["routes"][0]["enabled"] = False

    response = _post(admin_client, document)

    assert response.status_code == 400
    assert "disabled" in str(response.json()["rules[0].route"])


def test_duplicate_rule_names_are_refused(admin_client, setup) -> None:  # noqa: F811
    rule = {"name": "same", "kind": "tools", "route": "efficient"}
    response = _post(admin_client, _balancer(rules=[rule, {**rule, "kind": "images"}]))

    assert response.status_code == 400
    assert "unique" in str(response.json()["rules"])


def test_patch_without_rules_keeps_them_and_with_rules_replaces_them(admin_client, setup) -> None:  # noqa: F811
    assert _post(admin_client, _balancer(rules=RULES)).status_code == 201

    kept = admin_client.patch(
        "/api/balancers/support/", {"description": "x"}, content_type="application/json"
    )
    assert [r["name"] for r in kept.json()["rules"]] == ["invoices", "big", "gold"]

    replaced = admin_client.patch(
        "/api/balancers/support/", {"rules": [RULES[1]]}, content_type="application/json"
    )
    assert replaced.status_code == 200, replaced.json()
    assert [r["name"] for r in replaced.json()["rules"]] == ["big"]


def test_removing_a_route_a_kept_rule_uses_is_refused(admin_client, setup) -> None:  # noqa: F811
    assert _post(admin_client, _balancer(rules=RULES)).status_code == 201
    document = _balancer()
    document["routes"] = [r for r in document["routes"] if r["name"] != "reasoning"]

    response = admin_client.put(
        "/api/balancers/support/", document, content_type="application/json"
    )

    assert response.status_code == 400
    assert "not a route" in str(response.json()["rules[0].route"])
    assert ContentRule.objects.count() == 3
