"""Operator actions from the live board: each one applied, recorded in the audit log (who, when,
what, object) and shown on the balancer's detail page; refusals change nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from balancers.models import AuditEntry, Balancer
from gateway.hotpath import runtime
from targetgroups.models import Instance, TargetGroupMember

URL = "/balancers/support-balancer/board/action/"


def act(client: Any, **data: str) -> str:
    response = client.post(URL, data, headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.content.decode()


def test_an_operator_disables_and_enables_a_route_and_both_are_audited(
    admin_client, admin_user, demo
) -> None:
    notice = act(admin_client, action="route-disable", route="reasoning")
    assert "Done: route disabled, route reasoning" in notice
    route = Balancer.objects.get(name="support-balancer").routes.get(name="reasoning")
    assert route.enabled is False
    act(admin_client, action="route-enable", route="reasoning")
    route.refresh_from_db()
    assert route.enabled is True
    entries = list(
        AuditEntry.objects.order_by("id").values_list("username", "action", "object_label")
    )
    assert entries == [
        (admin_user.username, "route disabled", "route reasoning"),
        (admin_user.username, "route enabled", "route reasoning"),
    ]
    detail = admin_client.get("/balancers/support-balancer/").content.decode()
    log = detail.split('data-testid="audit-log"')[1]
    assert log.index("route enabled") < log.index("route disabled")  # newest first
    assert f"<b>{admin_user.username}</b>" in log


def test_the_default_route_cannot_be_disabled_and_nothing_is_recorded(admin_client, demo) -> None:
    notice = act(admin_client, action="route-disable", route="fallback")
    assert 'class="alert warn"' in notice and "cannot be disabled" in notice
    assert Balancer.objects.get(name="support-balancer").routes.get(name="fallback").enabled is True
    assert not AuditEntry.objects.exists()


def test_a_drained_member_is_restored_to_its_weight_before_the_drain(admin_client, demo) -> None:
    member = TargetGroupMember.objects.get(
        group__name="efficient-pool", instance__instance_id="qwen-cheap-b"
    )
    member.weight = 40
    member.save()
    act(admin_client, action="member-drain", route="efficient", instance="qwen-cheap-b")
    member.refresh_from_db()
    assert member.weight == 0
    act(admin_client, action="member-restore", route="efficient", instance="qwen-cheap-b")
    member.refresh_from_db()
    assert member.weight == 40
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "member drained",
        "member restored",
    ]


def test_ending_a_cooldown_marks_the_instance_healthy_here_and_for_every_worker(
    admin_client, demo, settings
) -> None:
    instance = Instance.objects.get(instance_id="gpt-oss-120b")
    runtime.mark_unavailable(instance.pk, seconds=120)
    assert runtime.health_snapshot([instance.pk])[instance.pk].status == "cooling"
    act(admin_client, action="cooldown-end", instance="gpt-oss-120b")
    assert runtime.health_snapshot([instance.pk])[instance.pk].status == "healthy"
    if settings.REDIS_URL:  # what the other workers apply at their next sync tick
        from gateway.hotpath.redis_client import redis_sync

        reset_at = float(redis_sync().hget(runtime.RESETS_KEY, str(instance.pk)))
        assert time.time() - 5 < reset_at <= time.time()
    assert AuditEntry.objects.get().action == "cooldown ended"


def test_a_stale_reset_does_not_end_a_newer_cooldown() -> None:
    pk = 987_654
    runtime._apply_reset(pk, time.time() - 60)  # the operator's reset, a minute ago
    runtime.routing.health.apply_remote(
        pk, cooldown_until=time.time() + 30, trips=1, last_failure_at=time.time()
    )
    runtime._apply_reset(pk, time.time() - 60)  # seen again at a later tick: already applied
    runtime._apply_reset(
        pk, time.time() - 30
    )  # an older reset first seen now: the failure came after it
    assert runtime.routing.health.state(pk, time.time()).status == "cooling"
    runtime.routing.health.reset(pk)


def test_switching_a_simulator_down_and_up_from_the_board_is_audited(
    admin_client, admin_user, demo
) -> None:
    notice = act(admin_client, action="simulator-down", instance="qwen-cheap-a")
    assert "Done: simulator switched down, qwen-cheap-a. Recorded in the audit log." in notice
    assert Instance.objects.get(instance_id="qwen-cheap-a").options["down"] is True
    act(admin_client, action="simulator-up", instance="qwen-cheap-a")
    assert Instance.objects.get(instance_id="qwen-cheap-a").options["down"] is False
    notice = act(admin_client, action="simulator-down", instance="not-in-this-balancer")
    assert "serves none of support-balancer" in notice
    support = Balancer.objects.get(name="support-balancer")
    entries = list(
        AuditEntry.objects.order_by("id").values_list(
            "user_id", "username", "action", "object_label", "balancer_id"
        )
    )
    assert entries == [  # the refused one recorded nothing
        (admin_user.pk, admin_user.username, "simulator switched down", "qwen-cheap-a", support.pk),
        (admin_user.pk, admin_user.username, "simulator switched up", "qwen-cheap-a", support.pk),
    ]
    log = admin_client.get("/balancers/support-balancer/").content.decode()
    log = log.split('data-testid="audit-log"')[1]
    assert log.index("simulator switched up") < log.index("simulator switched down")  # newest first


@pytest.mark.parametrize("role", ["viewer"])
def test_a_viewer_sees_no_actions_and_cannot_post_one(
    client, django_user_model, demo, role
) -> None:
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("watcher", password="x")
    user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    board = client.get("/balancers/support-balancer/board/").content.decode()
    assert 'data-testid="actions-' not in board
    assert client.post(URL, {"action": "route-disable", "route": "reasoning"}).status_code == 403
    assert (
        Balancer.objects.get(name="support-balancer").routes.get(name="reasoning").enabled is True
    )
    assert (
        'data-testid="audit-log"' not in client.get("/balancers/support-balancer/").content.decode()
    )


def test_spend_today_this_month_and_the_saving_against_the_priciest_route(
    admin_client, demo
) -> None:
    from decimal import Decimal

    from django.utils import timezone

    from gateway.models import UsageEvent
    from gateway.reporting.selectors import format_usd
    from pages.balancers.page_selectors import balancer_savings, balancers_for_pages

    support = Balancer.objects.get(name="support-balancer")
    for prompt, completion, cost in ((1_000, 500, "0.000100"), (2_000, 1_000, "0.000300")):
        UsageEvent.objects.create(
            created_at=timezone.now(),
            request_id="r",
            endpoint="chat",
            balancer=support,
            route="efficient",
            status_code=200,
            latency_ms=5,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=Decimal(cost),
        )
    savings = balancer_savings(balancers_for_pages(name="support-balancer"))[support.pk]
    priciest = max(
        (
            i
            for r in support.routes.all()
            for i in ([m.instance for m in r.target_group.members.all()])
        ),
        key=lambda i: i.input_price_per_million + i.output_price_per_million,
    )
    expected = (
        3_000 * priciest.input_price_per_million + 1_500 * priciest.output_price_per_million
    ) / 1_000_000
    assert savings.today == savings.month == Decimal("0.000400")
    assert savings.all_on_priciest == expected and savings.saved == expected - Decimal("0.000400")
    assert savings.priciest_route == "reasoning"
    board = admin_client.get("/balancers/support-balancer/board/?lanes=1").json()["summary"]
    assert '<div class="value" data-testid="spend-today">$0.000400</div>' in board
    assert (
        f'data-testid="saved-month">{format_usd(savings.saved)}</div>' in board
        and "vs all on reasoning" in board
    )
    listing = admin_client.get("/balancers/").content.decode()
    assert (
        f"saved {format_usd(savings.saved)}"
        in listing.split('data-testid="savings-support-balancer"')[1]
    )


def test_the_balancer_list_links_each_board(admin_client, demo) -> None:
    html = admin_client.get("/balancers/").content.decode()
    for name in ("support-balancer", "embed-balancer"):
        assert (
            f'href="/balancers/{name}/board/" data-testid="board-link-{name}">Live board</a>'
            in html
        )


def test_the_instance_list_is_sorted_by_the_display_name_it_shows(admin_client, demo) -> None:
    import re

    from tests.factories import make_instance

    make_instance(instance_id="aaa-last", display_name="Zulu model")
    make_instance(instance_id="zzz-first", display_name="alpha model")
    html = admin_client.get("/instances/").content.decode()
    names = {
        i.instance_id: (i.workload_kind, i.display_name.lower()) for i in Instance.objects.all()
    }
    shown = [names[iid] for iid in re.findall(r'<tr data-testid="instance-([^"]+)">', html)]
    assert len(shown) == len(names) and shown == sorted(shown)
