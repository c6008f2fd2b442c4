from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """The engine tests run without Django or Redis: nothing to clean (overrides
    tests/conftest.py)."""
