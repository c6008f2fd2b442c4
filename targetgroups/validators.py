from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from targetgroups import egress

# Internal identifiers: lowercase letters, digits, "-" and "_"; used in URLs and JSON.
slug_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]{0,62}$",
    "Use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit.",
    code="invalid_slug",
)

# Serving names are what clients send as `model`; allow the characters model ids use.
serving_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$",
    "Use 1-128 letters, digits, '.', '_', ':', '/' or '-', starting with a letter or digit.",
    code="invalid_serving_name",
)


def base_url_problem(url: str) -> str | None:
    """Why the egress policy (targetgroups/egress.py, GATEWAY_EGRESS_ALLOW_PRIVATE) refuses this
    instance base URL, or None. The one check behind the forms, the admin, the API and imports."""
    return egress.base_url_problem(url, allow_private=settings.GATEWAY_EGRESS_ALLOW_PRIVATE)


def validate_base_url(url: str) -> None:
    problem = base_url_problem(url)
    if problem:
        raise ValidationError(problem, code="egress_refused")
