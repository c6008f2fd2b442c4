from __future__ import annotations

from django.contrib import admin
from django.db import models
from django.forms.models import BaseInlineFormSet

from targetgroups.forms import URL_FIELD_OPTIONS, InstanceForm
from targetgroups.models import Instance, TargetGroup, TargetGroupMember


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    form = InstanceForm
    formfield_overrides = {models.URLField: URL_FIELD_OPTIONS}
    list_display = (
        "instance_id",
        "display_name",
        "provider",
        "model",
        "workload_kind",
        "enabled",
        "has_key",
    )
    list_filter = ("provider", "workload_kind", "enabled")
    search_fields = ("instance_id", "display_name", "model")

    @admin.display(boolean=True, description="API key set")
    def has_key(self, obj: Instance) -> bool:
        return obj.has_api_key


class MemberFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        for form in self.forms:
            if form.cleaned_data and not form.cleaned_data.get("DELETE"):
                form.instance.group = self.instance


class MemberInline(admin.TabularInline):
    model = TargetGroupMember
    formset = MemberFormSet
    extra = 1
    autocomplete_fields = ("instance",)


@admin.register(TargetGroup)
class TargetGroupAdmin(admin.ModelAdmin):
    list_display = ("name", "display_name", "workload_kind", "selection_policy", "enabled")
    list_filter = ("workload_kind", "selection_policy", "enabled")
    search_fields = ("name", "display_name")
    inlines = [MemberInline]
