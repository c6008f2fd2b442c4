from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.django_db


def test_the_login_page_says_how_to_create_a_first_admin_only_while_there_is_none(
    client: Any, django_user_model: Any
) -> None:
    page = client.get("/login/").content.decode()
    assert "createsuperuser" in page and "make run" not in page
    django_user_model.objects.create_superuser("admin", "", "a-long-test-password")
    page = client.get("/login/").content.decode()
    assert "createsuperuser" not in page
    assert "the admin login it printed on its first run" in page
