from __future__ import annotations

from typing import Any

from tests.pages.ui_support import (  # noqa: F401  (fixtures)
    _close_stray_connections,
    _fast_password_hashing,
    demo,
    usage_writer,
)


def route_post_data(rows: list[dict[str, Any]], *, nav: str = "next") -> dict[str, Any]:
    """The routes step's form as a browser posts it, from the draft's rows."""
    data: dict[str, Any] = {"nav": nav, "route_key": [r["key"] for r in rows]}
    for row in rows:
        prefix = f"r-{row['key']}-"
        for field in ("name", "intent", "destination", "priority", "weight", "examples"):
            data[prefix + field] = row.get(field, "")
        if row.get("enabled", True):
            data[prefix + "enabled"] = "on"
        if row.get("is_default"):
            data["default_route"] = row["key"]
    return data
