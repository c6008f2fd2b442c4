"""Every operator page needs a login."""

from __future__ import annotations

import pytest

PAGES = [
    "/",
    "/balancers/",
    "/balancers/new/",
    "/balancers/new/name/",
    "/balancers/new/check/?field=name&name=x",
    "/balancers/support-balancer/",
    "/balancers/support-balancer/board/",
    "/balancers/support-balancer/edit/",
    "/balancers/support-balancer/test/",
    "/target-groups/",
    "/target-groups/new/",
    "/target-groups/import/",
    "/target-groups/tech-support-pool/",
    "/target-groups/tech-support-pool/export/",
    "/instances/",
    "/instances/new/",
    "/instances/inst_a/",
    "/api-keys/",
    "/playground/",
    "/playground/balancer/?balancer=x",
]
POSTS = [
    "/balancers/new/name/",
    "/balancers/new/name/autosave/",
    "/balancers/support-balancer/smoke-test/",
    "/balancers/support-balancer/toggle/",
    "/balancers/support-balancer/delete/",
    "/api-keys/1/revoke/",
    "/instances/inst_a/simulator/",
    "/target-groups/tech-support-pool/members/1/",
    "/target-groups/new/",
    "/target-groups/tech-support-pool/members/add/",
    "/target-groups/tech-support-pool/members/1/remove/",
    "/playground/send/",
    "/playground/auto/",
]


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_anonymous_visitors_to_the_login(client, demo, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("path", POSTS)
def test_actions_refuse_anonymous_visitors(client, demo, path: str) -> None:
    response = client.post(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_the_login_page_renders_and_signs_in(client, django_user_model) -> None:
    django_user_model.objects.create_user("ops", password="a-long-test-password")
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"username": "ops", "password": "a-long-test-password"})
    assert response.status_code == 302 and response["Location"] == "/balancers/"


def test_views_answer_only_their_methods(admin_client, demo) -> None:
    assert admin_client.post("/balancers/").status_code == 405
    assert admin_client.get("/balancers/support-balancer/toggle/").status_code == 405
    assert admin_client.get("/balancers/support-balancer/smoke-test/").status_code == 405
