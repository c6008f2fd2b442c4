"""Target group and instance pages: create form, members inline (add, edit, remove), JSON
import/export, health, simulator knobs; provider credentials (one key per provider, write-only,
checked by the provider's free probe)."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import sync_to_async
from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count
from django.db.models.functions import Lower
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.roles import OPERATOR, VIEWER, has_role, role_required
from config.http import HtmxHttpRequest
from gateway.hotpath.runtime import health_snapshot
from gateway.probes import probe_credential
from gateway.reporting.selectors import probe_summaries
from targetgroups.documents import DocumentError, flatten_errors, target_group_document
from targetgroups.forms import (
    InstanceForm,
    MemberAddForm,
    ProviderCredentialForm,
    TargetGroupCreateForm,
)
from targetgroups.models import (
    SIMULATOR_OPTIONS,
    Instance,
    Provider,
    ProviderCredential,
    TargetGroup,
    TargetGroupMember,
)
from targetgroups.providers import PROVIDERS, ProviderFacts
from targetgroups.services import (
    instance_save,
    provider_credential_delete,
    provider_credential_save,
    target_group_create,
    target_group_import,
    target_group_member_add,
    target_group_member_remove,
    target_group_member_update,
)

MAX_IMPORT_BYTES = 1024 * 1024
PROBE_STRIP = 10  # latest probes shown per instance on the instance list


# -- target groups ----------------------------------------------------------------------------


@role_required(VIEWER)
@require_GET
def target_group_list(request: HtmxHttpRequest) -> HttpResponse:
    groups = TargetGroup.objects.annotate(
        member_count=Count("members", distinct=True), route_count=Count("routes", distinct=True)
    ).order_by("name")
    return render(request, "targetgroups/list.html", {"groups": groups})


def _member_rows(group: TargetGroup) -> list[dict[str, Any]]:
    members = list(
        group.members.select_related("instance").order_by("priority", "instance__instance_id")
    )
    health = health_snapshot([m.instance.pk for m in members])
    return [{"member": m, "health": health[m.instance.pk].status} for m in members]


def _leaf_messages(detail: Any) -> list[str]:
    """The messages in a serializer error, without the paths (a form shows them beside the
    field)."""
    if isinstance(detail, dict):
        return [m for value in detail.values() for m in _leaf_messages(value)]
    if isinstance(detail, list):
        return [m for value in detail for m in _leaf_messages(value)]
    return [str(detail)] if detail else []


@role_required(OPERATOR)
@require_http_methods(["GET", "POST"])
def target_group_create_view(request: HtmxHttpRequest) -> HttpResponse:
    """A new group from a plain form; the same rules as the importer, nothing saved on an error."""
    if request.method == "GET" and request.htmx and "workload_kind" in request.GET:
        # The kind changed: offer that kind's instances as first members.
        form = TargetGroupCreateForm(request.GET)
        return render(request, "targetgroups/new.html#member-choices", {"form": form})
    form = TargetGroupCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            group = target_group_create(
                name=data["name"],
                display_name=data["display_name"],
                description=data["description"],
                workload_kind=data["workload_kind"],
                selection_policy=data["selection_policy"],
                enabled=data["enabled"],
                instance_ids=data["members"],
            )
        except DocumentError as exc:
            for field, errors in exc.detail.items():
                form.add_error(field if field in form.fields else None, _leaf_messages(errors))
        except DjangoValidationError as exc:
            _add_errors(form, exc)
        else:
            count = len(data["members"])
            messages.success(
                request,
                f"Created target group {group.name} with {count} "
                f"member{'s' if count != 1 else ''}.",
            )
            return redirect("targetgroup-detail", name=group.name)
    _mark_invalid(form)
    return render(request, "targetgroups/new.html", {"form": form})


def _mark_invalid(form: forms.BaseForm) -> None:
    for name in form.errors:
        if name in form.fields:
            form.fields[name].widget.attrs["aria-invalid"] = "true"


@role_required(VIEWER)
@require_GET
def target_group_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    group = get_object_or_404(TargetGroup, name=name)
    routes = group.routes.select_related("balancer").order_by("balancer__name", "priority")
    return render(
        request,
        "targetgroups/detail.html",
        {
            "group": group,
            "rows": _member_rows(group),
            "routes": routes,
            "add_form": MemberAddForm(group=group),
            "document": _document_text(group),
        },
    )


def _document_text(group: TargetGroup) -> str:
    return json.dumps(target_group_document(group), indent=2)


@role_required(OPERATOR)
@require_POST
def target_group_member_add_view(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """Add an instance: htmx appends its row (and refreshes the form), a plain POST redirects."""
    group = get_object_or_404(TargetGroup, name=name)
    form = MemberAddForm(request.POST, group=group)
    member = None
    if form.is_valid():
        try:
            member = target_group_member_add(
                group=group,
                instance=form.cleaned_data["instance"],
                weight=form.cleaned_data["weight"],
                priority=form.cleaned_data["priority"],
            )
        except DjangoValidationError as exc:
            _add_errors(form, exc)
    if request.htmx:
        # The form swaps itself: with its errors, or fresh with the new row appended out of band.
        if member is None:
            _mark_invalid(form)
            return render(
                request, "targetgroups/detail.html#add-member", {"group": group, "add_form": form}
            )
        health = health_snapshot([member.instance.pk])[member.instance.pk].status
        return render(
            request,
            "targetgroups/detail.html#member-added",
            {
                "row": {"member": member, "health": health},
                "group": group,
                "added": True,
                "add_form": MemberAddForm(group=group),
                "was_empty": group.members.count() == 1,
                "document": _document_text(group),
            },
        )
    if member is None:
        messages.error(
            request,
            "Not added: " + "; ".join(str(m) for errors in form.errors.values() for m in errors),
        )
    else:
        messages.success(request, f"Added {member.instance.instance_id} to {group.name}.")
    return redirect("targetgroup-detail", name=name)


@role_required(OPERATOR)
@require_POST
def target_group_member_remove_view(
    request: HtmxHttpRequest, name: str, member_id: int
) -> HttpResponse:
    """Remove a member. An empty group is allowed (the importer accepts one too)."""
    member = get_object_or_404(
        TargetGroupMember.objects.select_related("instance", "group"),
        pk=member_id,
        group__name=name,
    )
    group, instance_id = member.group, member.instance.instance_id
    target_group_member_remove(member=member)
    left = group.members.count()
    if request.htmx:
        # The row's outerHTML swap with this body removes it; the add form offers the instance
        # again.
        return render(
            request,
            "targetgroups/detail.html#member-removed",
            {
                "group": group,
                "add_form": MemberAddForm(group=group),
                "empty": left == 0,
                "document": _document_text(group),
            },
        )
    messages.success(request, f"Removed {instance_id} from {group.name}.")
    return redirect("targetgroup-detail", name=name)


class MemberForm(forms.Form):
    weight = forms.IntegerField(min_value=0, max_value=1000)
    priority = forms.IntegerField(min_value=1, max_value=1000)
    enabled = forms.BooleanField(required=False)


@role_required(OPERATOR)
@require_POST
def target_group_member_edit(request: HtmxHttpRequest, name: str, member_id: int) -> HttpResponse:
    """Change a member's weight, priority or enabled flag (the row posts all three)."""
    member = get_object_or_404(
        TargetGroupMember.objects.select_related("instance", "group"),
        pk=member_id,
        group__name=name,
    )
    form = MemberForm(request.POST)
    errors: list[str] = []
    if form.is_valid():
        try:
            target_group_member_update(member=member, **form.cleaned_data)
        except DjangoValidationError as exc:
            errors = exc.messages
    else:
        errors = [
            f"{field}: {message}"
            for field, messages_ in form.errors.items()
            for message in messages_
        ]
    if request.htmx:
        if errors:
            member.refresh_from_db()
        health = health_snapshot([member.instance.pk])[member.instance.pk].status
        return render(
            request,
            "targetgroups/detail.html#member-row",
            {
                "row": {"member": member, "health": health},
                "group": member.group,
                "errors": errors,
                "saved": not errors,
                "posted": request.POST,
            },
        )
    if errors:
        messages.error(request, f"{member.instance.instance_id}: " + "; ".join(errors))
    else:
        messages.success(request, f"Saved {member.instance.instance_id}.")
    return redirect("targetgroup-detail", name=name)


@role_required(VIEWER)
@require_GET
def target_group_export(request: HtmxHttpRequest, name: str) -> HttpResponse:
    group = get_object_or_404(TargetGroup, name=name)
    body = json.dumps(target_group_document(group), indent=2) + "\n"
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{group.name}.json"'
    return response


@role_required(OPERATOR)
@require_http_methods(["GET", "POST"])
def target_group_import_view(request: HtmxHttpRequest) -> HttpResponse:
    """Create or replace a group from its JSON document: an uploaded file or pasted text."""
    text = ""
    errors: list[str] = []
    if request.method == "GET":
        source = TargetGroup.objects.filter(name=request.GET.get("from", "")).first()
        if source is not None:
            text = json.dumps(target_group_document(source), indent=2)
    else:
        upload = request.FILES.get("file")
        if upload is not None:
            if (upload.size or 0) > MAX_IMPORT_BYTES:
                errors = [
                    "The file is larger than 1 MiB; a target group document is a few hundred bytes."
                ]
            else:
                text = upload.read().decode("utf-8", errors="replace")
        else:
            text = request.POST.get("document", "")
        if not errors and not text.strip():
            errors = ["Choose a JSON file or paste the document."]
        if not errors:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                errors = [f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."]
            else:
                try:
                    group, created = target_group_import(data=data)
                except DocumentError as exc:
                    errors = flatten_errors(exc.detail)
                except DjangoValidationError as exc:
                    errors = flatten_errors(
                        exc.message_dict if hasattr(exc, "error_dict") else exc.messages
                    )
                else:
                    verb = "Created" if created else "Replaced"
                    messages.success(
                        request,
                        f"{verb} target group {group.name} with {group.members.count()} members.",
                    )
                    return redirect("targetgroup-detail", name=group.name)
    return render(request, "targetgroups/import.html", {"text": text, "errors": errors})


# -- instances ----------------------------------------------------------------------------------


@role_required(VIEWER)
@require_GET
def instance_list(request: HtmxHttpRequest) -> HttpResponse:
    instances = list(
        Instance.objects.annotate(group_count=Count("memberships", distinct=True)).order_by(
            "workload_kind", Lower("display_name"), "instance_id"
        )
    )
    health = health_snapshot([i.pk for i in instances])
    probes = probe_summaries([i.pk for i in instances], history=PROBE_STRIP)
    rows = [{"instance": i, "health": health[i.pk], "probe": probes[i.pk]} for i in instances]
    return render(request, "targetgroups/instances.html", {"rows": rows})


class SimulatorForm(forms.Form):
    """The simulator's knobs, so an operator can break an upstream on purpose and watch failover."""

    down = forms.BooleanField(required=False, label="Down (refuse connections)")
    error_rate = forms.FloatField(
        min_value=0,
        max_value=1,
        required=False,
        label="Error rate",
        help_text="Share of requests answered with a 500, 0 to 1.",
    )
    latency_ms = forms.IntegerField(
        min_value=0,
        max_value=600_000,
        required=False,
        label="Latency (ms)",
        help_text="Time to the first byte.",
    )
    tokens_per_second = forms.IntegerField(
        min_value=0,
        max_value=100_000,
        required=False,
        label="Tokens per second",
        help_text="Streaming pace; 0 is as fast as possible.",
    )

    def options(self, current: dict[str, Any]) -> dict[str, Any]:
        options = {k: v for k, v in current.items() if k in SIMULATOR_OPTIONS}
        for key in SIMULATOR_OPTIONS:
            value = self.cleaned_data.get(key)
            if key == "down":
                if value:
                    options["down"] = True
                else:
                    options.pop("down", None)
            elif value is None or value == 0:
                options.pop(key, None)
            else:
                options[key] = value
        return options


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def capability_rows(instance: Instance) -> list[tuple[str, str, str]]:
    """(label, effective value, where it came from) for the instance page."""
    caps = instance.capabilities()
    source = caps.source

    def tokens(value: int | None) -> str:
        return "unknown" if value is None else f"{value:,} tokens"

    return [
        ("Context window", tokens(caps.context_window), source.get("context_window", "")),
        ("Max output", tokens(caps.max_output_tokens), source.get("max_output_tokens", "")),
        ("Tools", _yes_no(caps.supports_tools), source.get("supports_tools", "")),
        ("Vision", _yes_no(caps.supports_vision), source.get("supports_vision", "")),
        ("JSON mode", _yes_no(caps.supports_json_mode), source.get("supports_json_mode", "")),
        ("Streaming", _yes_no(caps.supports_streaming), source.get("supports_streaming", "")),
        ("Strengths", ", ".join(caps.strengths) or "none", source.get("strengths", "")),
        (
            "Cached input",
            "unknown"
            if caps.cached_input_price_per_million is None
            else f"${caps.cached_input_price_per_million.normalize():f} / 1M tokens",
            source.get("cached_input_price_per_million", ""),
        ),
    ]


def _instance_context(
    instance: Instance, form: InstanceForm, sim_form: SimulatorForm | None = None
) -> dict[str, Any]:
    health = health_snapshot([instance.pk])[instance.pk] if instance.pk else None
    _mark_invalid(form)
    context: dict[str, Any] = {"instance": instance, "form": form, "health": health}
    if instance.pk:
        context["probe"] = probe_summaries([instance.pk], history=settings.GATEWAY_PROBE_HISTORY)[
            instance.pk
        ]
        context["probe_seconds"] = settings.GATEWAY_PROBE_SECONDS
        context["probe_down_after"] = settings.GATEWAY_PROBE_DOWN_AFTER
        context["probe_up_after"] = settings.GATEWAY_PROBE_UP_AFTER
        context["catalogue"] = instance.catalogue_entry
        context["capability_rows"] = capability_rows(instance)
        context["memberships"] = instance.memberships.select_related("group").order_by(
            "group__name"
        )
        context["routes"] = instance.routes.select_related("balancer").order_by("balancer__name")
        context["routed"] = instance.routed_balancers.order_by("name")
        if instance.provider == Provider.SIMULATOR:
            context["sim_form"] = sim_form or SimulatorForm(
                initial={"down": False, **(instance.options or {})}
            )
    return context


def _save_instance(form: InstanceForm) -> Instance:
    data = dict(form.cleaned_data)
    data.pop("clear_api_key", None)
    api_key = data.pop("api_key", None)  # None (left blank) keeps the stored key
    return instance_save(instance=form.instance, api_key=api_key, **data)


@role_required(OPERATOR)
@require_http_methods(["GET", "POST"])
def instance_create(request: HtmxHttpRequest) -> HttpResponse:
    form = InstanceForm(_with_options(request, None), initial={"provider": Provider.OPENAI})
    if request.method == "POST" and (instance := _save_or_show_errors(form)) is not None:
        messages.success(request, f"Added {instance.instance_id}.")
        return redirect("instance-detail", instance_id=instance.instance_id)
    return render(request, "targetgroups/instance_detail.html", _instance_context(Instance(), form))


def _with_options(request: HtmxHttpRequest, instance: Instance | None) -> Any:
    """The main form leaves the simulator knobs alone: they have their own form on the page."""
    if request.method != "POST":
        return None
    data = request.POST.copy()
    data["options"] = json.dumps(instance.options if instance else {})
    return data


def _save_or_show_errors(form: InstanceForm) -> Instance | None:
    """The saved instance, or None with the form carrying every error beside its field."""
    if not form.is_valid():
        return None
    try:
        return _save_instance(form)
    except DjangoValidationError as exc:
        _add_errors(form, exc)
        return None


def _add_errors(form: forms.BaseForm, exc: DjangoValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


@role_required(VIEWER, write=OPERATOR)
@require_http_methods(["GET", "POST"])
def instance_detail(request: HtmxHttpRequest, instance_id: str) -> HttpResponse:
    instance = get_object_or_404(Instance, instance_id=instance_id)
    form = InstanceForm(_with_options(request, instance), instance=instance)
    if request.method == "POST":
        if (saved := _save_or_show_errors(form)) is not None:
            messages.success(request, f"Saved {saved.instance_id}.")
            return redirect("instance-detail", instance_id=saved.instance_id)
        instance = Instance.objects.get(pk=instance.pk)
    if not has_role(request.user, OPERATOR):
        for field in form.fields.values():
            field.disabled = True  # a viewer reads the configuration
    return render(request, "targetgroups/instance_detail.html", _instance_context(instance, form))


@role_required(OPERATOR)
@require_POST
def instance_simulator(request: HtmxHttpRequest, instance_id: str) -> HttpResponse:
    instance = get_object_or_404(Instance, instance_id=instance_id, provider=Provider.SIMULATOR)
    form = SimulatorForm(request.POST)
    saved = False
    if form.is_valid():
        try:
            instance_save(instance=instance, options=form.options(instance.options or {}))
        except DjangoValidationError as exc:
            _add_errors(form, exc)
        else:
            saved = True
    if request.htmx:
        instance.refresh_from_db()
        return render(
            request,
            "targetgroups/instance_detail.html#simulator",
            {
                "instance": instance,
                "oob": True,
                "health": health_snapshot([instance.pk])[instance.pk],
                "sim_form": form
                if not saved
                else SimulatorForm(initial={"down": False, **instance.options}),
                "sim_saved": saved,
            },
        )
    if saved:
        messages.success(request, f"Simulator knobs of {instance.instance_id} saved.")
    else:
        messages.error(
            request,
            "; ".join(f"{k}: {' '.join(str(m) for m in v)}" for k, v in form.errors.items()),
        )
    return redirect("instance-detail", instance_id=instance.instance_id)


# -- provider credentials ---------------------------------------------------------------------


def _provider_or_404(provider: str) -> ProviderFacts:
    facts = PROVIDERS.get(provider)
    if facts is None:
        raise Http404("No such provider.")
    return facts


@role_required(VIEWER)
@require_GET
def provider_list(request: HtmxHttpRequest) -> HttpResponse:
    stored = {c.provider: c for c in ProviderCredential.objects.all()}
    rows = [{"facts": facts, "credential": stored.get(code)} for code, facts in PROVIDERS.items()]
    return render(request, "targetgroups/providers.html", {"rows": rows})


@role_required(VIEWER, write=OPERATOR)
@require_http_methods(["GET", "POST"])
def provider_detail(request: HtmxHttpRequest, provider: str) -> HttpResponse:
    facts = _provider_or_404(provider)
    stored = ProviderCredential.objects.filter(provider=provider).first()
    credential = stored or ProviderCredential(provider=provider)
    form = ProviderCredentialForm(request.POST or None, instance=credential)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        data.pop("clear_api_key", None)
        api_key = data.pop("api_key", None)
        try:
            saved = provider_credential_save(provider=provider, api_key=api_key, **data)
        except DjangoValidationError as exc:
            _add_errors(form, exc)
        else:
            messages.success(request, f"Saved the {facts.label} credential.")
            return redirect("provider-detail", provider=saved.provider)
        credential = ProviderCredential.objects.filter(provider=provider).first() or credential
    if not has_role(request.user, OPERATOR):
        for field in form.fields.values():
            field.disabled = True
    _mark_invalid(form)
    return render(
        request,
        "targetgroups/provider_detail.html",
        {"facts": facts, "credential": credential, "stored": stored is not None, "form": form},
    )


@role_required(OPERATOR)
@require_POST
def provider_remove(request: HtmxHttpRequest, provider: str) -> HttpResponse:
    facts = _provider_or_404(provider)
    credential = get_object_or_404(ProviderCredential, provider=provider)
    provider_credential_delete(credential=credential)
    messages.success(
        request, f"Removed the {facts.label} credential: its models answer 404 from now on."
    )
    return redirect("provider-list")


@role_required(OPERATOR)
@require_POST
async def provider_check(request: HtmxHttpRequest, provider: str) -> HttpResponse:
    """The provider's free probe with the stored credential; shown, not recorded."""
    facts = _provider_or_404(provider)
    credential = await ProviderCredential.objects.filter(provider=provider).afirst()
    if credential is None:
        raise Http404("No credential is stored for this provider.")
    result = await probe_credential(credential)
    context = {"facts": facts, "result": result}
    if request.htmx:
        return await sync_to_async(render)(
            request, "targetgroups/provider_detail.html#check-result", context
        )
    level = messages.SUCCESS if result.status == "healthy" else messages.ERROR
    await sync_to_async(messages.add_message)(
        request, level, f"{facts.label}: {result.status} · {result.detail}"
    )
    return redirect("provider-detail", provider=provider)
