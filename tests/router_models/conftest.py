from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """The router model tests run without Django or Redis (overrides tests/conftest.py)."""
