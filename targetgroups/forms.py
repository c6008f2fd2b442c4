from __future__ import annotations

from typing import Any, cast

from django import forms
from django.db import models

from targetgroups.models import (
    Instance,
    ProviderCredential,
    SelectionPolicy,
    TargetGroup,
    TargetGroupMember,
    WorkloadKind,
    check_strengths,
)
from targetgroups.providers import PROVIDERS

# A base URL typed without a scheme gets https:// (Django 6's default; 5.2 warns when unset).
URL_FIELD_OPTIONS = {"assume_scheme": "https"}


def _formfield(field: models.Field, **kwargs: Any) -> forms.Field | None:
    if isinstance(field, models.URLField):
        kwargs = {**URL_FIELD_OPTIONS, **kwargs}
    return field.formfield(**kwargs)


NO_STRENGTHS = "none"
CAPABILITY_CHOICES = (
    "supports_tools",
    "supports_vision",
    "supports_json_mode",
    "supports_streaming",
)
CAPABILITY_CHOICES_LIST = [("unknown", "Catalogue default"), ("true", "Yes"), ("false", "No")]


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
            "instance_id",
            "display_name",
            "provider",
            "base_url",
            "model",
            "api_key",
            "workload_kind",
            "input_price_per_million",
            "output_price_per_million",
            "pricing",
            "capacity_price_per_hour",
            "capacity_unit",
            "capacity",
            "quality_tier",
            "cached_input_price_per_million",
            "context_window",
            "max_output_tokens",
            "supports_tools",
            "supports_vision",
            "supports_json_mode",
            "supports_streaming",
            "strengths",
            "connect_timeout",
            "first_byte_timeout",
            "request_timeout",
            "latency_threshold_ms",
            "options",
            "enabled",
        ]

    # The pricing fields may be left out of a post (a form or script from before they existed):
    # then the instance keeps what it has (per token, for a new one).
    PRICING_FIELDS = ("pricing", "capacity_price_per_hour", "capacity_unit", "capacity")

    strengths = forms.CharField(
        required=False,
        max_length=400,
        help_text="Comma-separated, e.g. code, reasoning. Empty: the catalogue's; 'none' for no "
        "strengths.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["api_key"] = ""
        for name in self.PRICING_FIELDS:
            self.fields[name].required = False
        # Empty prices and tier take the model catalogue's (targetgroups.services.instance_save).
        for name in ("input_price_per_million", "output_price_per_million", "quality_tier"):
            field = self.fields[name]
            field.required = False
            field.help_text = f"{field.help_text} Empty: the model catalogue's.".strip()
        for name in CAPABILITY_CHOICES:
            widget = forms.NullBooleanSelect()
            widget.choices = CAPABILITY_CHOICES_LIST
            self.fields[name].widget = widget
        stored = self.instance.strengths if self.instance.pk else None
        self.initial["strengths"] = (
            "" if stored is None else (", ".join(stored) if stored else NO_STRENGTHS)
        )

    def _clean_pricing(self, name: str) -> Any:
        value = self.cleaned_data.get(name)
        return getattr(self.instance, name) if value in (None, "") else value

    def clean_pricing(self) -> Any:
        return self._clean_pricing("pricing")

    def clean_capacity_price_per_hour(self) -> Any:
        return self._clean_pricing("capacity_price_per_hour")

    def clean_capacity_unit(self) -> Any:
        return self._clean_pricing("capacity_unit")

    def clean_capacity(self) -> Any:
        return self._clean_pricing("capacity")

    def clean_strengths(self) -> list[str] | None:
        """ "" -> None (the catalogue's); "none" -> []; else the comma-separated words."""
        text = (self.cleaned_data.get("strengths") or "").strip().lower()
        if not text:
            return None
        if text == NO_STRENGTHS:
            return []
        words = [w.strip() for w in text.split(",") if w.strip()]
        message = check_strengths(words)
        if message:
            raise forms.ValidationError(message)
        return words

    def clean_api_key(self) -> str | None:
        """The new key; "" removes the stored one; None keeps it (the field was left blank)."""
        value = self.cleaned_data.get("api_key") or ""
        if self.data.get(self.add_prefix("clear_api_key")) in ("on", "true", "1", True):
            return ""
        return value or None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.cleaned_data
        # Not a model field (the model stores it encrypted), so construct_instance() leaves it
        # alone: set it on the instance here so the admin's save keeps it too.
        key = data.get("api_key")
        if key is not None:
            self.instance.api_key = key
        return data


def _instance_label(instance: Instance) -> str:
    name = (
        f" · {instance.display_name}"
        if instance.display_name and instance.display_name != instance.instance_id
        else ""
    )
    return f"{instance.instance_id}{name}{'' if instance.enabled else ' (disabled)'}"


class InstanceIdsField(forms.MultipleChoiceField):
    """Instance ids as posted; which ones are acceptable is the importer's call, not the form's."""

    def valid_value(self, value: str) -> bool:
        return True


class TargetGroupCreateForm(forms.Form):
    """The fields of a target-group document. Only types are checked here: the rules are the
    importer's (`target_group_create` runs the document serializer and the model's checks)."""

    name = forms.CharField(
        help_text="Lowercase letters, digits, '-' and '_'; used in URLs and JSON."
    )
    display_name = forms.CharField(required=False)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    workload_kind = forms.ChoiceField(
        choices=WorkloadKind.choices, initial=WorkloadKind.CHAT, widget=forms.RadioSelect
    )
    selection_policy = forms.ChoiceField(
        choices=SelectionPolicy.choices,
        initial=SelectionPolicy.WEIGHTED_ROUND_ROBIN,
        help_text="How a member is picked inside the lowest priority tier.",
    )
    enabled = forms.BooleanField(
        required=False, initial=True, help_text="Routes skip a disabled group."
    )
    members = InstanceIdsField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Weight 100, priority 1; change them on the group's page.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].widget.attrs.update(
            autocomplete="off", spellcheck="false", placeholder="billing-pool"
        )
        kind = self.kind()
        cast(forms.ChoiceField, self.fields["members"]).choices = [
            (i.instance_id, _instance_label(i))
            for i in Instance.objects.filter(workload_kind=kind).order_by("instance_id")
        ]

    def kind(self) -> str:
        """The workload kind whose instances the member list offers: the posted one, else chat."""
        value = self.data.get(self.add_prefix("workload_kind")) if self.is_bound else None
        return value if value in WorkloadKind.values else self.fields["workload_kind"].initial


class MemberAddForm(forms.Form):
    """Add one instance to a group. The select offers the instances of the group's kind that are
    not members yet; any instance id is accepted so a mismatch gets the model's own message."""

    instance = forms.ModelChoiceField(
        queryset=Instance.objects.all(),
        to_field_name="instance_id",
        empty_label="Choose an instance…",
        error_messages={
            "required": "Choose an instance to add.",
            "invalid_choice": "No such instance.",
        },
    )
    weight = forms.IntegerField(required=False)
    priority = forms.IntegerField(required=False)

    def __init__(self, *args: Any, group: TargetGroup, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial.setdefault("weight", TargetGroupMember._meta.get_field("weight").default)
        self.initial.setdefault("priority", TargetGroupMember._meta.get_field("priority").default)
        candidates = Instance.objects.filter(workload_kind=group.workload_kind).exclude(
            memberships__group=group
        )
        self.candidates = list(candidates.order_by("instance_id"))
        self.fields["instance"].widget.choices = [("", "Choose an instance…")] + [
            (i.instance_id, _instance_label(i)) for i in self.candidates
        ]


class ProviderCredentialForm(forms.ModelForm):
    """One provider's credential. The key is write-only: never rendered back, blank keeps it."""

    api_key = forms.CharField(
        required=False,
        label="API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave blank to keep the stored key.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored key.")

    class Meta:
        model = ProviderCredential
        formfield_callback = _formfield
        fields = ["base_url", "api_key", "api_version", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["api_key"] = ""
        facts = PROVIDERS[self.instance.provider]
        base_url = self.fields["base_url"]
        base_url.widget.attrs["placeholder"] = facts.base_url or (
            "https://<resource>.openai.azure.com"
            if facts.code == "azure"
            else "http://vllm.internal:8000/v1"
        )
        if facts.code != "azure":
            del self.fields["api_version"]

    def clean_api_key(self) -> str | None:
        """The new key; "" removes the stored one; None keeps it (the field was left blank)."""
        value = self.cleaned_data.get("api_key") or ""
        if self.data.get(self.add_prefix("clear_api_key")) in ("on", "true", "1", True):
            return ""
        return value or None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.cleaned_data
        # Not a model field (stored encrypted): on the credential before the model's checks run.
        key = data.get("api_key")
        if key is not None:
            self.instance.api_key = key
        return data
