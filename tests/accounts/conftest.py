from __future__ import annotations

from tests.pages.ui_support import _fast_password_hashing, demo  # noqa: F401  (fixtures)
