"""Template filters for money and shares: `{% load usage_format %}`."""

from __future__ import annotations

from decimal import Decimal

from django import template

from gateway.reporting.selectors import format_usd

register = template.Library()


@register.filter
def usd(value: Decimal | float | int | None) -> str:
    return format_usd(value)


@register.filter
def percent(value: float | None) -> str:
    """A fraction as a percentage: 0.1234 -> "12.3%", 0 -> "0%"; none -> "—"."""
    if value is None:
        return "\N{EM DASH}"
    if value in (0, 1):
        return f"{value:.0%}"
    if 0 < value < 0.001:
        return "<0.1%"
    return f"{value:.1%}"
