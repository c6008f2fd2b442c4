from __future__ import annotations

from typing import Any

from django import forms
from django.db import models

from targetgroups.models import Instance

# A base URL typed without a scheme gets https:// (Django 6's default; 5.2 warns when unset).
URL_FIELD_OPTIONS = {"assume_scheme": "https"}


def _formfield(field: models.Field, **kwargs: Any) -> forms.Field | None:
    if isinstance(field, models.URLField):
        kwargs = {**URL_FIELD_OPTIONS, **kwargs}
    return field.formfield(**kwargs)


class InstanceForm(forms.ModelForm):
    """The upstream API key is write-only: never rendered back, blank keeps the stored one."""

    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave blank to keep the stored key.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored key.")

    class Meta:
        model = Instance
        formfield_callback = _formfield
        fields = [
            "instance_id", "display_name", "provider", "base_url", "model", "api_key", "workload_kind",
            "input_price_per_million", "output_price_per_million", "quality_tier", "connect_timeout",
            "first_byte_timeout", "request_timeout", "options", "enabled",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stored_key = self.instance.api_key if self.instance.pk else ""
        self.initial["api_key"] = ""

    def clean_api_key(self) -> str:
        value = self.cleaned_data.get("api_key") or ""
        if self.data.get(self.add_prefix("clear_api_key")) in ("on", "true", "1", True):
            return ""
        return value or self._stored_key
