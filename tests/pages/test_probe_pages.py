"""Active-health probes on the pages: the state and a short history on the instance list and
detail pages, a badge and a probe table on the live board."""

from __future__ import annotations

from gateway.probes import ProbeResult, record_probe_results
from targetgroups.models import Instance


def _probe(instance_id: str, status: str, latency_ms: float | None, detail: str) -> None:
    pk = Instance.objects.get(instance_id=instance_id).pk
    record_probe_results([ProbeResult(pk, status, latency_ms, detail)])


def _inst_a_went_down() -> None:
    _probe("inst_a", "healthy", 4.0, "GET /models answered 200")
    _probe("inst_a", "unavailable", 12.0, "HTTP 503")
    _probe("inst_a", "unavailable", None, "probe timed out")


def test_the_instance_list_shows_each_probe_state_and_the_latest_probes(admin_client, demo) -> None:
    _inst_a_went_down()
    _probe("inst_b", "healthy", 3.0, "GET /models answered 200")
    html = admin_client.get("/instances/").content.decode()
    row_a = html.split('data-testid="instance-inst_a"')[1].split("</tr>")[0]
    row_b = html.split('data-testid="instance-inst_b"')[1].split("</tr>")[0]
    assert 'data-testid="probe-state" title="probe timed out">unavailable<' in row_a
    assert row_a.count('class="probe-mark') == 3
    assert (
        "· unavailable · 12 ms · HTTP 503" in row_a
        and "· healthy · 4 ms · GET /models answered 200" in row_a
    )
    assert ">healthy<" in row_b
    assert ">not probed<" in html  # the other seeded instances: no probe yet


def test_the_instance_page_shows_the_probe_history(admin_client, demo) -> None:
    _inst_a_went_down()
    html = admin_client.get("/instances/inst_a/").content.decode()
    table = html.split('data-testid="probe-history"')[1].split("</table>")[0]
    rows = table.split("<tr>")[2:]  # newest first, after the header row
    assert len(rows) == 3
    assert ">unavailable</span>" in rows[0] and "probe timed out" in rows[0] and "—" in rows[0]
    assert "state after: unavailable" in rows[0]
    assert (
        ">unavailable</span>" in rows[1]
        and "state after: degraded" in rows[1]
        and "12 ms" in rows[1]
    )
    assert "HTTP 503" in rows[1]
    assert ">healthy</span>" in rows[2] and "4 ms" in rows[2]
    assert "2 failed probes in a row make the instance unavailable" in html


def test_the_board_shows_a_probe_badge_and_the_members_probes(admin_client, demo) -> None:
    for status, detail in (
        ("healthy", "GET /models answered 200"),
        ("unavailable", "HTTP 503"),
        ("unavailable", "probe timed out"),
    ):
        _probe("qwen-cheap-a", status, 5.0, detail)
    _probe("gpt-oss-120b", "unavailable", None, "connection failed: refused")
    _probe("backup-small", "healthy", 7.0, "GET /models answered 200")
    # The page as loaded, and the lanes payload the live board receives (event stream or poll).
    page = admin_client.get("/balancers/support-balancer/board/").content.decode()
    live = admin_client.get("/balancers/support-balancer/board/?lanes=1").json()
    for lanes, html in (
        (page.split('data-testid="route-lanes"')[1].split('data-testid="board-probes"')[0], page),
        ("".join(lane["html"] for lane in live["lanes"].values()), live["probes"]),
    ):
        assert (
            'data-testid="member-probe" title="Active probes: probe timed out">probe unavailable<'
            in lanes
        )
        assert 'title="Active probes: connection failed: refused">probe degraded<' in lanes
        assert (
            lanes.count('data-testid="member-probe"') == 2
        )  # healthy and unprobed members: no badge
        table = html.split('data-testid="board-probes"')[1].split("</table>")[0]
        row = table.split('data-testid="probe-qwen-cheap-a"')[1].split("</tr>")[0]
        assert (
            ">unavailable<" in row
            and row.count('class="probe-mark') == 3
            and "probe timed out" in row
        )
        row = table.split('data-testid="probe-gpt-oss-120b"')[1].split("</tr>")[0]
        assert ">degraded<" in row and "connection failed: refused" in row
        assert ">healthy<" in table.split('data-testid="probe-backup-small"')[1].split("</tr>")[0]
        assert (
            ">not probed<" in table.split('data-testid="probe-qwen-cheap-b"')[1].split("</tr>")[0]
        )
