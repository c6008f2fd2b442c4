"""The wizard publishes a tuned auto serving name: a pool (its routes), a preference and an
exclusion, and the gateway never picks the excluded model (issue 12, "Operators can publish these
as serving names they tune (pool, preference, exclusions) from the wizard")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from balancers.models import Balancer
from tests.factories import make_api_key
from tests.live_server import LiveGateway
from tests.pages.conftest import route_post_data

pytestmark = pytest.mark.django_db(transaction=True)

DRAFT = "balancer-wizard:new"


@pytest.fixture
def live(transactional_db: Any) -> Iterator[LiveGateway]:
    server = LiveGateway()
    yield server
    server.stop()


def walk_to_routes(client: Any, exclusions: str) -> Any:
    client.get("/balancers/new/")
    client.post("/balancers/new/name/", {"nav": "next", "name": "tuned", "serving_name": "tuned"})
    client.post("/balancers/new/workload/", {"nav": "next", "workload_kind": "chat"})
    return client.post(
        "/balancers/new/mode/",
        {
            "nav": "next",
            "routing_mode": "auto",
            "auto_preference": "cost",
            "auto_exclusions": exclusions,
        },
    )


def test_the_wizard_publishes_an_auto_name_whose_exclusion_is_never_chosen(
    admin_client, demo, live
) -> None:
    page = admin_client.get("/balancers/new/mode/").content.decode()
    assert 'name="auto_exclusions"' in page and "Never choose" in page
    assert walk_to_routes(admin_client, "qwen-cheap")["Location"] == "/balancers/new/routes/"
    # The pool: the demo's routes (efficient-pool: qwen-cheap-a and -b; reasoning-pool:
    # gpt-oss-120b; backup-group: backup-small). By cost alone qwen-cheap (0.40 $) would win.
    rows = admin_client.session[DRAFT]["routes"]["rows"]
    assert admin_client.post("/balancers/new/routes/", route_post_data(rows))["Location"] == (
        "/balancers/new/review/"
    )
    review = admin_client.get("/balancers/new/review/").content.decode()
    assert "cost · never qwen-cheap" in review
    saved = admin_client.post(
        "/balancers/new/review/",
        {"nav": "save", "attempt_budget": "4", "request_timeout": "600", "enabled": "on"},
    )
    assert saved.status_code == 302
    balancer = Balancer.objects.get(name="tuned")
    assert (balancer.routing_mode, balancer.auto_preference) == ("auto", "cost")
    assert balancer.auto_exclusions == ["qwen-cheap"]
    assert balancer.routes.count() == len(rows)

    _, secret = make_api_key(balancers=[balancer])
    live.wait_for_config()
    client = openai.OpenAI(base_url=live.v1, api_key=secret, max_retries=0, timeout=20)
    served = set()
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model="tuned", messages=[{"role": "user", "content": "Hi"}]
        )
        served.add(raw.parse().model)
        assert raw.headers["x-balancer-decision"] == "auto:cost"
    assert served == {"backup-small"}  # the cheapest model left
    explained = httpx.post(
        f"{live.v1}/explain",
        headers={"authorization": f"Bearer {secret}"},
        json={"model": "tuned", "messages": [{"role": "user", "content": "Hi"}]},
    ).json()
    skipped = {s["instance"]: s["reason"] for s in explained["skipped"]}
    reason = "excluded by the operator (never choose)"
    assert skipped == {"qwen-cheap-a": reason, "qwen-cheap-b": reason}
    assert "qwen-cheap" not in {r["model"] for r in explained["ranking"]}


def test_an_exclusion_naming_no_instance_is_refused_and_editing_keeps_them(
    admin_client, demo
) -> None:
    response = walk_to_routes(admin_client, "qwen-cheep")
    assert response["Location"] == "/balancers/new/mode/"  # refused: back to the step
    page = admin_client.get(response["Location"]).content.decode()
    assert "No instance has the model name or instance id qwen-cheep" in page
    walk_to_routes(admin_client, "gpt-oss-120b, local-free")
    rows = admin_client.session[DRAFT]["routes"]["rows"]
    admin_client.post("/balancers/new/routes/", route_post_data(rows))
    admin_client.post(
        "/balancers/new/review/",
        {"nav": "save", "attempt_budget": "4", "request_timeout": "600", "enabled": "on"},
    )
    balancer = Balancer.objects.get(name="tuned")
    assert balancer.auto_exclusions == ["gpt-oss-120b", "local-free"]
    admin_client.get("/balancers/tuned/edit/?step=mode")
    draft = admin_client.session[f"balancer-wizard:{balancer.pk}"]["mode"]
    assert draft["auto_exclusions"] == "gpt-oss-120b, local-free"
