"""Who may do what on the control plane.

Three roles, each including the one before:

- **viewer**: every page read-only (balancers, live boards, target groups, instances,
  API keys without their secrets, usage and cost), and the playground and smoke tests,
  which call the gateway but change nothing. `GET /api/...` too.
- **operator**: also changes configuration (balancers and routes, target groups and
  members, instances and their simulator knobs) and gateway API keys, on the pages and
  through every `/api/` method.
- **staff**: an operator who also manages users in the Django admin. A user with
  `is_staff` (superusers included) has this role; the admin grants what Django's model
  permissions allow (the `staff` group holds the user-management ones).

Viewer and operator are Django groups holding the permissions `accounts.observe` and
`accounts.operate` (created by accounts/migrations/0002); `manage.py set_role` or the
admin's user page assigns them. A signed-in user with no role gets a 403 everywhere:
signing in alone grants nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from rest_framework.permissions import SAFE_METHODS, BasePermission

VIEWER, OPERATOR, STAFF = "viewer", "operator", "staff"
ROLES = (VIEWER, OPERATOR, STAFF)
_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}

# What each role group holds; the data migration and `set_role` read this.
GROUP_PERMISSIONS: dict[str, tuple[str, ...]] = {
    VIEWER: ("accounts.observe",),
    OPERATOR: ("accounts.observe", "accounts.operate"),
    STAFF: (
        "accounts.observe",
        "accounts.operate",
        "auth.view_user",
        "auth.add_user",
        "auth.change_user",
        "auth.delete_user",
        "auth.view_group",
    ),
}


def role_of(user: Any) -> str | None:
    """The user's role, or None (anonymous, inactive, or signed in without a role)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if user.is_staff or user.is_superuser:
        return STAFF
    if user.has_perm("accounts.operate"):
        return OPERATOR
    if user.has_perm("accounts.observe"):
        return VIEWER
    return None


def has_role(user: Any, role: str) -> bool:
    current = role_of(user)
    return current is not None and _RANK[current] >= _RANK[role]


def _needed(request: HttpRequest, read: str, write: str) -> str:
    return read if request.method in SAFE_METHODS else write


def role_required(
    role: str, *, write: str | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Page views: anonymous visitors go to the login page; a signed-in user below
    the role gets a 403. `write` is the role other methods than GET/HEAD/OPTIONS need
    (a page a viewer may read and an operator may post to)."""
    write = write or role

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        def refusal(request: HttpRequest, user: Any) -> HttpResponse | None:
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
            needed = _needed(request, role, write)
            if not has_role(user, needed):
                raise PermissionDenied(f"This needs the {needed} role.")
            return None

        if iscoroutinefunction(view):

            @wraps(view)
            async def async_wrapper(
                request: HttpRequest, *args: Any, **kwargs: Any
            ) -> HttpResponse:
                refused = await sync_to_async(refusal)(request, await request.auser())
                return refused if refused is not None else await view(request, *args, **kwargs)

            wrapper: Callable[..., Any] = async_wrapper
        else:

            @wraps(view)
            def sync_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                refused = refusal(request, request.user)
                return refused if refused is not None else view(request, *args, **kwargs)

            wrapper = sync_wrapper
        return wrapper

    return decorator


class ApiRolePermission(BasePermission):
    """The management API: viewers read (GET, HEAD, OPTIONS), operators and staff write."""

    message = (
        "Your role does not allow this: reading needs the viewer role, changes the operator role."
    )

    def has_permission(self, request: Any, view: Any) -> bool:
        return has_role(request.user, _needed(request, VIEWER, OPERATOR))


def role_context(request: HttpRequest) -> dict[str, Any]:
    """Template context: which controls to show (the views enforce the same rules)."""
    current = role_of(getattr(request, "user", None))
    return {
        "role": current,
        "can_operate": current in (OPERATOR, STAFF),
        "can_manage_users": current == STAFF,
    }
