from __future__ import annotations

from typing import Any

import pytest

from tests.pages.ui_support import (  # noqa: F401  (fixtures)
    _close_stray_connections,
    _fast_password_hashing,
    demo,
    usage_writer,
)


@pytest.fixture(autouse=True)
def _usage_from_earlier_tests_out_of_sight(db: Any) -> None:
    """Each page test starts with no usage rows.

    The in-process gateway (playground, smoke tests) hands usage events to the writer
    thread, which commits them on its own connection, outside any test's transaction, so
    they would outlive the test that made them. Write out what is pending (from a thread of
    its own: the writer's unit of work may close its thread's connection, which here is the
    test's), then delete every usage row inside this test's transaction (rolled back with it).
    """
    import threading

    from gateway.hotpath.usage import recorder
    from gateway.models import UsageEvent, UsageHourly, UsageRollupState

    writer = threading.Thread(target=recorder.flush)
    writer.start()
    writer.join(10)
    UsageEvent.objects.all().delete()
    UsageHourly.objects.all().delete()
    UsageRollupState.objects.all().delete()


def route_post_data(rows: list[dict[str, Any]], *, nav: str = "next") -> dict[str, Any]:
    """The routes step's form as a browser posts it, from the draft's rows."""
    data: dict[str, Any] = {"nav": nav, "route_key": [r["key"] for r in rows]}
    for row in rows:
        prefix = f"r-{row['key']}-"
        for field in (
            "name",
            "intent",
            "destination",
            "priority",
            "weight",
            "examples",
            "latency_threshold_ms",
        ):
            data[prefix + field] = row.get(field, "")
        if row.get("enabled", True):
            data[prefix + "enabled"] = "on"
        if row.get("hedge"):
            data[prefix + "hedge"] = "on"
        if row.get("is_default"):
            data["default_route"] = row["key"]
    return data
