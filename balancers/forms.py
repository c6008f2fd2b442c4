"""The create/edit wizard: one form per step, and the draft the steps fill in.

The draft is a plain dict of what the operator typed, kept in the session, so
back, next and a reload never lose it and nothing reaches the database before
the last step. `draft_check` binds every step's form to the draft and runs the
shared rules (balancers.validation, through balancers.services), so the wizard
refuses exactly what the API and the admin refuse, in the same words.
"""

from __future__ import annotations

import copy
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.forms import BoundField

from balancers.demo import SUPPORT_ROUTES
from balancers.models import (
    LATENCY_THRESHOLD_MAX_MS,
    LATENCY_THRESHOLD_MIN_MS,
    RULE_NAME_MAX,
    AutoPreference,
    Balancer,
    CacheMode,
    RoutingMode,
    RuleKind,
)
from balancers.services import balancer_save, rule_values
from balancers.validation import (
    balancer_field_errors,
    exclusion_errors,
    route_field_errors,
    route_set_errors,
    rule_field_errors,
    rule_set_errors,
)
from targetgroups.models import Instance, Provider, TargetGroup, WorkloadKind
from targetgroups.validators import serving_name_validator, slug_validator


@dataclass(frozen=True)
class Step:
    slug: str
    title: str
    short: str


STEPS = (
    Step("name", "Name the balancer", "Name"),
    Step("workload", "Choose the workload kind", "Workload"),
    Step("mode", "Choose a routing mode", "Routing mode"),
    Step("router", "Pick a router model", "Router model"),
    Step("routes", "Add routes", "Routes"),
    Step("review", "Save and test", "Save and test"),
)
STEP_SLUGS = tuple(s.slug for s in STEPS)

MODE_HELP = {
    RoutingMode.INTENT_CLASSIFIER: "For many specialised routes: a router model reads each prompt "
    "and picks the route whose intent fits; the default takes the rest.",
    RoutingMode.ORDERED: "For failover: every request tries the route with the lowest priority "
    "first, then the next one.",
    RoutingMode.WEIGHTED: "For splitting traffic by weight, e.g. a 90/10 canary between two "
    "providers.",
    RoutingMode.AUTO: "Ranks every instance of every route live (latency, availability, load, "
    "price) for one preference.",
}
KIND_HELP = {
    WorkloadKind.CHAT: "Prompts in, answers out, on /v1/chat/completions (streaming or not).",
    WorkloadKind.EMBEDDINGS: "Text in, vectors out, on /v1/embeddings, for search and retrieval.",
}
# Field of the draft -> the step that edits it (for errors raised by the save).
FIELD_STEP = {
    "name": "name",
    "serving_name": "name",
    "description": "name",
    "workload_kind": "workload",
    "routing_mode": "mode",
    "auto_preference": "mode",
    "auto_exclusions": "mode",
    "router_model": "router",
    "classifier_timeout": "router",
    "confidence_threshold": "router",
    "attempt_budget": "review",
    "request_timeout": "review",
    "enabled": "review",
    "cache_mode": "review",
    "cache_ttl_seconds": "review",
    "cache_similarity_threshold": "review",
    "cache_shared_across_keys": "review",
    "baseline_route": "review",
}
# The review step's cost settings (response cache, savings baseline), as the draft keeps them.
CACHE_FIELDS = ("cache_mode", "cache_ttl_seconds", "cache_similarity_threshold", "baseline_route")


def new_row_key() -> str:
    return secrets.token_hex(4)


def blank_row(priority: int = 1) -> dict[str, Any]:
    return {
        "key": new_row_key(),
        "name": "",
        "intent": "",
        "destination": "",
        "priority": str(priority),
        "weight": "100",
        "examples": "",
        "is_default": False,
        "enabled": True,
        "latency_threshold_ms": "",
        "hedge": False,
    }


RULE_ROW_FIELDS = (
    "name",
    "order",
    "kind",
    "value",
    "metadata_key",
    "min_tokens",
    "max_tokens",
    "route",
)


def blank_rule(order: int = 1) -> dict[str, Any]:
    return {
        "key": new_row_key(),
        "name": "",
        "order": str(order),
        "kind": RuleKind.KEYWORDS,
        "value": "",
        "metadata_key": "",
        "min_tokens": "",
        "max_tokens": "",
        "route": "",
        "enabled": True,
    }


# -- destinations -------------------------------------------------------------------


def destination_choices(workload_kind: str) -> list[Any]:
    groups = [
        (
            f"group:{g.name}",
            f"{g.display_name or g.name} ({g.name}) · group of {getattr(g, 'n', 0)}",
        )
        for g in _groups_of_kind(workload_kind)
    ]
    instances = [
        (
            f"instance:{i.instance_id}",
            f"{i.display_name or i.instance_id} ({i.instance_id}) · {i.model}",
        )
        for i in Instance.objects.filter(workload_kind=workload_kind).exclude(
            provider=Provider.BUILTIN
        )
    ]
    choices: list[Any] = [("", "Choose a target group or an instance…")]
    if groups:
        choices.append(("Target groups", groups))
    if instances:
        choices.append(("Single instances", instances))
    return choices


def _groups_of_kind(workload_kind: str) -> list[TargetGroup]:
    from django.db.models import Count

    return list(
        TargetGroup.objects.filter(workload_kind=workload_kind)
        .annotate(n=Count("members"))
        .order_by("name")
    )


def resolve_destination(value: str) -> tuple[TargetGroup | None, Instance | None]:
    kind, _, ident = (value or "").partition(":")
    if kind == "group":
        return TargetGroup.objects.filter(name=ident).first(), None
    if kind == "instance":
        return None, Instance.objects.filter(instance_id=ident).first()
    return None, None


def router_model_choices() -> list[Instance]:
    """Chat instances that can classify prompts: the built-in router model first."""
    instances = list(Instance.objects.filter(workload_kind=WorkloadKind.CHAT))
    instances.sort(key=lambda i: (i.provider != Provider.BUILTIN, i.instance_id))
    return instances


def default_router_model() -> Instance | None:
    builtin = Instance.objects.filter(
        provider=Provider.BUILTIN, model="intent-classifier", workload_kind=WorkloadKind.CHAT
    )
    return (
        builtin.filter(instance_id="local-router").first()
        or builtin.order_by("instance_id").first()
    )


# -- the draft ----------------------------------------------------------------------


def default_routes(workload_kind: str) -> list[dict[str, Any]]:
    """The common case, filled in: efficient, reasoning and fallback (the default)."""
    groups = {g.name for g in _groups_of_kind(workload_kind)}
    if workload_kind == WorkloadKind.EMBEDDINGS:
        row = blank_row(1)
        first = sorted(groups)[0] if groups else ""
        row.update(
            name="primary",
            intent="All embeddings.",
            destination=f"group:{first}" if first else "",
            is_default=True,
        )
        return [row]
    rows = []
    for spec in SUPPORT_ROUTES:
        row = blank_row(spec["priority"])
        row.update(
            name=spec["name"],
            intent=spec["intent"],
            examples="\n".join(spec["examples"]),
            destination=f"group:{spec['group']}" if spec["group"] in groups else "",
            is_default=bool(spec.get("is_default")),
        )
        rows.append(row)
    return rows


def draft_new() -> dict[str, Any]:
    router = default_router_model()
    return {
        "balancer": None,
        "step": "name",
        "checked": [],
        "name": {"name": "", "serving_name": "", "description": ""},
        "workload": {"workload_kind": WorkloadKind.CHAT},
        "mode": {
            "routing_mode": RoutingMode.INTENT_CLASSIFIER,
            "auto_preference": AutoPreference.BALANCED,
            "auto_exclusions": "",
        },
        "router": {
            "router_model": router.instance_id if router else "",
            "classifier_timeout": "1.5",
            "confidence_threshold": "0.0",
        },
        "routes": {"rows": default_routes(WorkloadKind.CHAT), "pristine": True},
        "rules": {"rows": []},
        "review": {
            "attempt_budget": "4",
            "request_timeout": "600.0",
            "enabled": True,
            "cache_mode": CacheMode.OFF,
            "cache_ttl_seconds": "300",
            "cache_similarity_threshold": "0.95",
            "cache_shared_across_keys": False,
            "baseline_route": "",
        },
    }


def draft_from_balancer(balancer: Balancer) -> dict[str, Any]:
    router = balancer.router_model or default_router_model()
    rows = []
    for route in balancer.routes.select_related("target_group", "instance").order_by(
        "priority", "name"
    ):
        rows.append(
            {
                "key": new_row_key(),
                "name": route.name,
                "intent": route.intent,
                "destination": f"group:{route.target_group.name}"
                if route.target_group
                else f"instance:{route.instance.instance_id}"
                if route.instance
                else "",
                "priority": str(route.priority),
                "weight": str(route.weight),
                "examples": "\n".join(route.examples or []),
                "is_default": route.is_default,
                "enabled": route.enabled,
                "latency_threshold_ms": str(route.latency_threshold_ms or ""),
                "hedge": route.hedge,
            }
        )
    return {
        "balancer": balancer.pk,
        "step": "name",
        "checked": [],
        "name": {
            "name": balancer.name,
            "serving_name": balancer.serving_name,
            "description": balancer.description,
        },
        "workload": {"workload_kind": balancer.workload_kind},
        "mode": {
            "routing_mode": balancer.routing_mode,
            "auto_preference": balancer.auto_preference,
            "auto_exclusions": ", ".join(balancer.auto_exclusions or ()),
        },
        "router": {
            "router_model": router.instance_id if router else "",
            "classifier_timeout": str(balancer.classifier_timeout),
            "confidence_threshold": str(balancer.confidence_threshold),
        },
        "routes": {"rows": rows, "pristine": False},
        "rules": {
            "rows": [
                {
                    "key": new_row_key(),
                    **{k: "" if rule[k] is None else str(rule[k]) for k in RULE_ROW_FIELDS},
                    "enabled": rule["enabled"],
                }
                for rule in rule_values(balancer)
            ]
        },
        "review": {
            "attempt_budget": str(balancer.attempt_budget),
            "request_timeout": str(balancer.request_timeout),
            "enabled": balancer.enabled,
            "cache_mode": balancer.cache_mode,
            "cache_ttl_seconds": str(balancer.cache_ttl_seconds),
            "cache_similarity_threshold": str(balancer.cache_similarity_threshold),
            "cache_shared_across_keys": balancer.cache_shared_across_keys,
            "baseline_route": balancer.baseline_route,
        },
    }


def active_steps(draft: dict[str, Any]) -> list[str]:
    """The router model step only applies to the intent_classifier mode."""
    mode = draft["mode"].get("routing_mode")
    return [s for s in STEP_SLUGS if s != "router" or mode == RoutingMode.INTENT_CLASSIFIER]


def neighbour_step(draft: dict[str, Any], step: str, offset: int) -> str | None:
    steps = STEP_SLUGS
    index = steps.index(step) + offset
    active = active_steps(draft)
    while 0 <= index < len(steps):
        if steps[index] in active:
            return steps[index]
        index += offset
    return None


# Draft keys that say where the operator is, not what they typed.
_DRAFT_PLACE = ("step", "checked", "edited", "save_errors")


def draft_values(draft: dict[str, Any]) -> dict[str, Any]:
    """What the operator typed or picked, without where they are in the wizard."""
    return {k: v for k, v in draft.items() if k not in _DRAFT_PLACE}


def draft_update(draft: dict[str, Any], step: str, data: Any) -> None:
    """Store what a step's form posted (valid or not): back, next and reload keep it.

    `draft["edited"]` turns true once a posted value differs from the draft's (the balancer list
    mentions a draft only then: opening the wizard and leaving is no unsaved balancer), and a save's
    refusal is forgotten (it was about the values before this edit).
    """
    before = copy.deepcopy(draft_values(draft))
    _draft_update(draft, step, data)
    draft.pop("save_errors", None)
    if draft_values(draft) != before:
        draft["edited"] = True


def _draft_update(draft: dict[str, Any], step: str, data: Any) -> None:
    if step == "name":
        draft["name"] = {
            k: str(data.get(k, "")).strip() if k != "description" else str(data.get(k, ""))
            for k in ("name", "serving_name", "description")
        }
    elif step == "workload":
        kind = data.get("workload_kind", draft["workload"]["workload_kind"])
        if kind != draft["workload"]["workload_kind"]:
            draft["workload"]["workload_kind"] = kind
            if (
                kind == WorkloadKind.EMBEDDINGS
                and draft["mode"]["routing_mode"] == RoutingMode.INTENT_CLASSIFIER
            ):
                # The classifier reads prompts; an embeddings balancer usually fails over in order.
                draft["mode"]["routing_mode"] = RoutingMode.ORDERED
            if draft["routes"].get("pristine"):
                draft["routes"]["rows"] = default_routes(kind)
    elif step == "mode":
        draft["mode"] = {
            "routing_mode": data.get("routing_mode", ""),
            "auto_preference": data.get("auto_preference", AutoPreference.BALANCED),
            "auto_exclusions": str(data.get("auto_exclusions", ""))[:8000],
        }
    elif step == "router":
        draft["router"] = {
            k: str(data.get(k, draft["router"].get(k, "")))
            for k in ("router_model", "classifier_timeout", "confidence_threshold")
        }
    elif step == "routes":
        rows = routes_from_post(data)
        if rows != draft["routes"]["rows"]:
            draft["routes"] = {"rows": rows, "pristine": False}
        if "rule_key" in data or "rules_present" in data:
            draft["rules"] = {"rows": rules_from_post(data)}
    elif step == "review":
        kept = {
            **_review_defaults(),
            **draft["review"],
        }  # a post without the cost settings keeps them
        posted_cache = "cache_mode" in data
        draft["review"] = {
            "attempt_budget": str(data.get("attempt_budget", "")),
            "request_timeout": str(data.get("request_timeout", "")),
            "enabled": data.get("enabled") in ("on", "true", "1", True),
            **{k: str(data.get(k, kept.get(k, ""))) for k in CACHE_FIELDS},
            "cache_shared_across_keys": data.get("cache_shared_across_keys")
            in ("on", "true", "1", True)
            if posted_cache
            else bool(kept.get("cache_shared_across_keys")),
        }


def routes_from_post(data: Any) -> list[dict[str, Any]]:
    default_key = data.get("default_route", "")
    rows = []
    for key in data.getlist("route_key"):
        prefix = f"r-{key}-"
        rows.append(
            {
                "key": key,
                "name": data.get(prefix + "name", "").strip(),
                "intent": data.get(prefix + "intent", "").strip(),
                "destination": data.get(prefix + "destination", ""),
                "priority": data.get(prefix + "priority", "").strip(),
                "weight": data.get(prefix + "weight", "").strip(),
                "examples": data.get(prefix + "examples", ""),
                "is_default": key == default_key,
                "enabled": data.get(prefix + "enabled") in ("on", "true", "1"),
                "latency_threshold_ms": data.get(prefix + "latency_threshold_ms", "").strip(),
                "hedge": data.get(prefix + "hedge") in ("on", "true", "1"),
            }
        )
    return rows


def rules_from_post(data: Any) -> list[dict[str, Any]]:
    rows = []
    for key in data.getlist("rule_key"):
        prefix = f"u-{key}-"
        row: dict[str, Any] = {"key": key}
        for name in RULE_ROW_FIELDS:
            value = data.get(prefix + name, "")
            row[name] = value if name == "value" else value.strip()
        row["enabled"] = data.get(prefix + "enabled") in ("on", "true", "1")
        rows.append(row)
    return rows


def draft_rules(draft: dict[str, Any]) -> list[dict[str, Any]]:
    """The draft's rule rows (drafts started before content rules existed have none)."""
    return list(draft.get("rules", {}).get("rows", []))


# -- forms, one per step ----------------------------------------------------------------


class NameForm(forms.Form):
    name = forms.CharField(
        max_length=63,
        validators=[slug_validator],
        label="Name",
        help_text="Internal, used in URLs and logs: lowercase letters, digits, '-' and '_'.",
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "spellcheck": "false", "placeholder": "support-balancer"}
        ),
    )
    serving_name = forms.CharField(
        max_length=128,
        validators=[serving_name_validator],
        label="Serving name",
        help_text='What clients send as model, e.g. model="support-balancer".',
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "spellcheck": "false", "placeholder": "support-balancer"}
        ),
    )
    description = forms.CharField(
        required=False, label="Description", widget=forms.Textarea(attrs={"rows": 2})
    )

    def __init__(self, *args: Any, balancer_pk: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.balancer_pk = balancer_pk

    def _others(self) -> Any:
        return (
            Balancer.objects.exclude(pk=self.balancer_pk)
            if self.balancer_pk
            else Balancer.objects.all()
        )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if self._others().filter(name=name).exists():
            raise ValidationError(f"A balancer named {name} already exists.")
        return name

    def clean_serving_name(self) -> str:
        serving_name = self.cleaned_data["serving_name"]
        other = self._others().filter(serving_name=serving_name).first()
        if other is not None:
            raise ValidationError(
                f"Balancer {other.name} already serves {serving_name}; clients could not tell "
                "them apart."
            )
        return serving_name


class WorkloadForm(forms.Form):
    workload_kind = forms.ChoiceField(
        choices=WorkloadKind.choices, widget=forms.RadioSelect, label="Workload kind"
    )


class ModeForm(forms.Form):
    routing_mode = forms.ChoiceField(
        choices=RoutingMode.choices, widget=forms.RadioSelect, label="Routing mode"
    )
    auto_preference = forms.ChoiceField(
        choices=AutoPreference.choices, required=False, label="Auto preference"
    )
    auto_exclusions = forms.CharField(
        required=False,
        label="Never choose",
        help_text="Auto mode: model names or instance ids, separated by commas or spaces.",
    )

    def __init__(self, *args: Any, workload_kind: str = WorkloadKind.CHAT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workload_kind = workload_kind

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.cleaned_data
        mode = data.get("routing_mode")
        if mode:
            # Ask the shared rules about the mode alone: a stand-in chat router model keeps
            # "router model required" (the next step's business) out of the answer.
            stand_in = Instance(
                workload_kind=WorkloadKind.CHAT,
                provider=Provider.BUILTIN,
                model="intent-classifier",
            )
            message = balancer_field_errors(
                routing_mode=mode, workload_kind=self.workload_kind, router_model=stand_in
            ).get("routing_mode")
            if message:
                self.add_error("routing_mode", message)
        if not data.get("auto_preference"):
            data["auto_preference"] = AutoPreference.BALANCED
        names = list(dict.fromkeys(re.split(r"[\s,]+", data.get("auto_exclusions") or "")))
        names = [name for name in names if name]
        if mode != RoutingMode.AUTO:
            names = []  # only auto ranks models; another mode keeps none
        elif message := exclusion_errors(names):
            self.add_error("auto_exclusions", message)
        data["auto_exclusions"] = names
        return data


class RouterForm(forms.Form):
    router_model = forms.ChoiceField(
        label="Router model",
        widget=forms.RadioSelect,
        error_messages={"required": "A router model is required for the intent_classifier mode."},
    )
    classifier_timeout = forms.FloatField(
        min_value=0.01,
        max_value=30,
        label="Classifier timeout (seconds)",
        help_text="Past this the default route answers.",
    )
    confidence_threshold = forms.FloatField(
        min_value=0,
        max_value=1,
        label="Confidence threshold",
        help_text="0 to 1; below it the default route answers.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instances = router_model_choices()
        cast(forms.ChoiceField, self.fields["router_model"]).choices = [
            (i.instance_id, str(i)) for i in self.instances
        ]

    def clean_router_model(self) -> Instance:
        value = self.cleaned_data["router_model"]
        instance = next(i for i in self.instances if i.instance_id == value)
        message = balancer_field_errors(
            routing_mode=RoutingMode.INTENT_CLASSIFIER,
            workload_kind=WorkloadKind.CHAT,
            router_model=instance,
        ).get("router_model")
        if message:
            raise ValidationError(message)
        return instance


class RouteRowForm(forms.Form):
    name = forms.CharField(
        max_length=63,
        validators=[slug_validator],
        label="Route name",
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "spellcheck": "false", "placeholder": "efficient"}
        ),
    )
    intent = forms.CharField(
        max_length=500,
        required=False,
        label="Intent",
        widget=forms.Textarea(
            attrs={
                "rows": 2,
                "placeholder": "Simple, short tasks: summaries, drafts, quick replies.",
            }
        ),
    )
    destination = forms.ChoiceField(required=False, label="Destination")
    priority = forms.IntegerField(
        min_value=1, max_value=1000, label="Priority", help_text="Lower is tried first."
    )
    weight = forms.IntegerField(
        min_value=0, max_value=1000, label="Weight", help_text="Share of traffic."
    )
    examples = forms.CharField(
        required=False,
        label="Example prompts",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "One prompt per line"}),
        help_text="Optional, one per line: they sharpen the classifier.",
    )
    enabled = forms.BooleanField(required=False, label="Enabled")
    latency_threshold_ms = forms.IntegerField(
        required=False,
        min_value=LATENCY_THRESHOLD_MIN_MS,
        max_value=LATENCY_THRESHOLD_MAX_MS,
        label="Latency threshold (ms)",
        help_text="No first byte by then: the next target is tried. Empty: no threshold.",
    )
    hedge = forms.BooleanField(
        required=False,
        label="Hedge",
        help_text="Past the threshold, race the next target; the first answer wins.",
    )

    def __init__(
        self,
        *,
        row: dict[str, Any],
        routing_mode: str,
        workload_kind: str,
        destinations: list[Any],
        **kwargs: Any,
    ) -> None:
        key = row["key"]
        data = {
            f"r-{key}-{k}": row.get(k, "")
            for k in (
                "name",
                "intent",
                "destination",
                "priority",
                "weight",
                "examples",
                "latency_threshold_ms",
            )
        }
        if row.get("enabled"):
            data[f"r-{key}-enabled"] = "on"
        if row.get("hedge"):
            data[f"r-{key}-hedge"] = "on"
        super().__init__(data, prefix=f"r-{key}", **kwargs)
        self.row = row
        self.routing_mode, self.workload_kind = routing_mode, workload_kind
        cast(forms.ChoiceField, self.fields["destination"]).choices = destinations
        if routing_mode == RoutingMode.INTENT_CLASSIFIER:
            self.fields["intent"].help_text = "One declarative sentence: which prompts belong here."
        else:
            self.fields["intent"].help_text = "Optional here: a note for operators."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.cleaned_data
        group, instance = resolve_destination(data.get("destination", ""))
        examples = [
            line.strip() for line in (data.get("examples") or "").splitlines() if line.strip()
        ]
        data.update(
            target_group=group,
            instance=instance,
            examples=examples,
            is_default=bool(self.row.get("is_default")),
        )
        for key, message in route_field_errors(
            routing_mode=self.routing_mode, workload_kind=self.workload_kind, route=data
        ).items():
            if key in self.fields and key not in self.errors:
                self.add_error(key, message)
        return data


class QuietBoundField(BoundField):
    """Django marks every field with an error aria-invalid; a rule row only shows its errors once
    the operator has tried to leave the step (`form.show_errors`), like the route rows."""

    def build_widget_attrs(self, attrs: Any, widget: Any = None) -> Any:
        attrs = super().build_widget_attrs(attrs, widget)
        if not getattr(self.form, "show_errors", True):
            attrs.pop("aria-invalid", None)
        return attrs


class RuleRowForm(forms.Form):
    """One content rule of the routes step. `value` holds the one parameter most kinds take."""

    bound_field_class = QuietBoundField
    show_errors = False  # set by the page: mark fields invalid only once errors are shown

    name = forms.CharField(
        max_length=RULE_NAME_MAX,
        validators=[slug_validator],
        label="Rule name",
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "spellcheck": "false", "placeholder": "invoices"}
        ),
    )
    order = forms.IntegerField(
        min_value=1, max_value=1000, label="Order", help_text="Lower is checked first."
    )
    kind = forms.ChoiceField(choices=RuleKind.choices, label="Matches on")
    metadata_key = forms.CharField(
        max_length=64,
        required=False,
        label="Metadata key",
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "spellcheck": "false", "placeholder": "tier"}
        ),
    )
    value = forms.CharField(
        max_length=500,
        required=False,
        strip=False,
        label="Value",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    min_tokens = forms.IntegerField(min_value=0, required=False, label="At least (tokens)")
    max_tokens = forms.IntegerField(min_value=0, required=False, label="At most (tokens)")
    route = forms.ChoiceField(required=False, label="Send to route")
    enabled = forms.BooleanField(required=False, label="Enabled")

    VALUE_LABELS = {
        RuleKind.REGEX: (
            "Pattern",
            "RE2 syntax, searched in the last user message, e.g. INV-\\d{4}. Add (?i) to ignore "
            "case.",
        ),
        RuleKind.KEYWORDS: (
            "Keywords",
            "Comma-separated words or phrases, whole words, any case: refund, chargeback.",
        ),
        RuleKind.RESPONSE_FORMAT: (
            "Type (optional)",
            "Empty: any structured output; or json_object, json_schema.",
        ),
        RuleKind.METADATA: ("Value", "The value the metadata key must have."),
        RuleKind.USER: ("User", "The request's user field, exactly."),
        RuleKind.TAG: ("Tag", "One tag; clients send x-balancer-tags: batch, nightly."),
        RuleKind.API_KEY: ("API key name", "The name of the calling key, as on the API keys page."),
    }

    def __init__(
        self, *, row: dict[str, Any], routes: dict[str, bool], workload_kind: str, **kwargs: Any
    ) -> None:
        key = row["key"]
        data = {f"u-{key}-{k}": row.get(k, "") for k in RULE_ROW_FIELDS}
        if row.get("enabled"):
            data[f"u-{key}-enabled"] = "on"
        super().__init__(data, prefix=f"u-{key}", **kwargs)
        self.row = row
        self.routes, self.workload_kind = routes, workload_kind
        choices = [("", "Choose a route…")] + [(name, name) for name in routes]
        if row.get("route") and row["route"] not in routes:
            choices.append((row["route"], f"{row['route']} (no longer a route)"))
        cast(forms.ChoiceField, self.fields["route"]).choices = choices
        label, help_text = self.VALUE_LABELS.get(row.get("kind", ""), ("Value", ""))
        self.fields["value"].label, self.fields["value"].help_text = label, help_text

    @property
    def uses(self) -> set[str]:
        """The parameter fields this rule's kind reads (the others are kept, hidden)."""
        kind = self.row.get("kind")
        if kind == RuleKind.PROMPT_TOKENS:
            return {"min_tokens", "max_tokens"}
        if kind == RuleKind.METADATA:
            return {"metadata_key", "value"}
        if kind in (RuleKind.TOOLS, RuleKind.IMAGES):
            return set()
        return {"value"}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.cleaned_data
        data["enabled"] = bool(data.get("enabled"))
        rule = {
            **data,
            "name": data.get("name") or self.row.get("name", ""),
            "route": data.get("route") or "",
        }
        for key, message in rule_field_errors(
            rule=rule, routes=self.routes, workload_kind=self.workload_kind
        ).items():
            target = key if key in self.fields else None
            if target is None or target not in self.errors:
                self.add_error(target, message)
        return data


class ReviewForm(forms.Form):
    attempt_budget = forms.IntegerField(
        min_value=1,
        max_value=20,
        label="Attempt budget",
        help_text="Upstream attempts per request, across routes and members.",
    )
    request_timeout = forms.FloatField(
        min_value=0.1,
        max_value=3600,
        label="Request timeout (seconds)",
        help_text="For a whole client request, over every attempt.",
    )
    enabled = forms.BooleanField(required=False, label="Serve traffic as soon as it is saved")
    cache_mode = forms.ChoiceField(
        choices=CacheMode.choices,
        label="Response cache",
        help_text="Answer repeated requests from the cache, at no upstream cost.",
    )
    cache_ttl_seconds = forms.IntegerField(
        min_value=1,
        max_value=7 * 24 * 3600,
        label="Cache TTL (seconds)",
        help_text="How long a cached answer is served.",
    )
    cache_similarity_threshold = forms.FloatField(
        min_value=0.5,
        max_value=1,
        label="Semantic threshold",
        help_text="Semantic mode: the cosine similarity a prompt needs with a cached one.",
    )
    cache_shared_across_keys = forms.BooleanField(
        required=False, label="Share cached answers across API keys"
    )
    baseline_route = forms.CharField(
        max_length=63,
        required=False,
        label="Savings baseline route",
        help_text="The usage page shows savings against sending everything here.",
    )


# -- checking and saving the whole draft -----------------------------------------------------


@dataclass
class DraftCheck:
    draft: dict[str, Any]
    balancer_pk: int | None
    name: NameForm
    workload: WorkloadForm
    mode: ModeForm
    router: RouterForm
    routes: list[RouteRowForm]
    review: ReviewForm
    rules: list[RuleRowForm] = field(default_factory=list)
    route_errors: list[str] = field(default_factory=list)
    rule_errors: list[str] = field(default_factory=list)
    extra_errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def routing_mode(self) -> str:
        return self.draft["mode"].get("routing_mode", "")

    @property
    def workload_kind(self) -> str:
        return self.draft["workload"].get("workload_kind", "")

    def step_errors(self, step: str) -> list[str]:
        """Messages for one step, as listed on the review page."""
        messages: list[str] = []
        if step == "routes":
            messages += self.route_errors
            for form in self.routes:
                label = form.row.get("name") or "a route without a name"
                for name, errors in form.errors.items():
                    title = form.fields[name].label if name in form.fields else ""
                    messages += [
                        f"{label}: {title}: {e}" if title else f"{label}: {e}" for e in errors
                    ]
            messages += self.rule_errors
            for rule_form in self.rules:
                label = "rule " + (rule_form.row.get("name") or "without a name")
                for name, errors in rule_form.errors.items():
                    title = rule_form.fields[name].label if name in rule_form.fields else ""
                    messages += [
                        f"{label}: {title}: {e}" if title else f"{label}: {e}" for e in errors
                    ]
        elif step in ("name", "workload", "mode", "router", "review"):
            if step == "router" and self.routing_mode != RoutingMode.INTENT_CLASSIFIER:
                return self.extra_errors.get(step, [])
            form = getattr(self, step)
            for name, errors in form.errors.items():
                title = form.fields[name].label if name in form.fields else ""
                messages += [f"{title}: {e}" if title else e for e in errors]
        return messages + [m for m in self.extra_errors.get(step, []) if m not in messages]

    @property
    def is_valid(self) -> bool:
        return not any(self.step_errors(s) for s in active_steps(self.draft))

    def fields(self) -> dict[str, Any]:
        review = self.review.cleaned_data
        values = {
            **self.name.cleaned_data,
            "workload_kind": self.workload.cleaned_data["workload_kind"],
            "routing_mode": self.mode.cleaned_data["routing_mode"],
            "auto_preference": self.mode.cleaned_data["auto_preference"],
            "auto_exclusions": self.mode.cleaned_data["auto_exclusions"],
            "router_model": None,
            "attempt_budget": review["attempt_budget"],
            "request_timeout": review["request_timeout"],
            "enabled": review["enabled"],
            **{name: review[name] for name in (*CACHE_FIELDS, "cache_shared_across_keys")},
        }
        if values["routing_mode"] == RoutingMode.INTENT_CLASSIFIER:
            values.update(self.router.cleaned_data)
        return values

    def route_values(self) -> list[dict[str, Any]]:
        keys = (
            "name",
            "intent",
            "target_group",
            "instance",
            "priority",
            "weight",
            "is_default",
            "enabled",
            "examples",
            "latency_threshold_ms",
            "hedge",
        )
        return [{k: form.cleaned_data[k] for k in keys} for form in self.routes]

    def rule_values(self) -> list[dict[str, Any]]:
        keys = (*RULE_ROW_FIELDS, "enabled")
        return [{k: form.cleaned_data.get(k) for k in keys} for form in self.rules]


def _review_defaults() -> dict[str, Any]:
    """A draft kept in a session from before the cache settings existed reads as the defaults."""
    return {
        "cache_mode": CacheMode.OFF,
        "cache_ttl_seconds": "300",
        "cache_similarity_threshold": "0.95",
        "baseline_route": "",
    }


def draft_check(draft: dict[str, Any]) -> DraftCheck:
    kind = draft["workload"].get("workload_kind", WorkloadKind.CHAT)
    mode = draft["mode"].get("routing_mode", "")
    destinations = destination_choices(kind)
    check = DraftCheck(
        draft=draft,
        balancer_pk=draft.get("balancer"),
        name=NameForm(draft["name"], balancer_pk=draft.get("balancer")),
        workload=WorkloadForm(draft["workload"]),
        mode=ModeForm(draft["mode"], workload_kind=kind),
        router=RouterForm(draft["router"]),
        routes=[
            RouteRowForm(row=row, routing_mode=mode, workload_kind=kind, destinations=destinations)
            for row in draft["routes"]["rows"]
        ],
        review=ReviewForm(
            {
                **_review_defaults(),
                **draft["review"],
                "enabled": "on" if draft["review"].get("enabled") else "",
                "cache_shared_across_keys": "on"
                if draft["review"].get("cache_shared_across_keys")
                else "",
            }
        ),
    )
    # Rules about the route set as a whole: at least one, unique names, exactly one default.
    check.route_errors = route_set_errors(draft["routes"]["rows"])
    routes = {
        str(r["name"]): bool(r.get("enabled")) for r in draft["routes"]["rows"] if r.get("name")
    }
    check.rules = [
        RuleRowForm(row=row, routes=routes, workload_kind=kind) for row in draft_rules(draft)
    ]
    check.rule_errors = rule_set_errors(draft_rules(draft))
    if draft.get("save_errors"):
        _file_save_errors(check, draft["save_errors"])
    return check


def draft_save(check: DraftCheck) -> Balancer | None:
    """Save a valid draft through balancer_save; on a refusal, file its errors by step and return
    None.

    The refusal is also kept in the draft (`save_errors`) so the review page the browser is sent
    back to (a GET: a reload never posts the save again) shows it, until the next edit.
    """
    if not check.is_valid:
        return None
    balancer = Balancer.objects.filter(pk=check.balancer_pk).first() if check.balancer_pk else None
    try:
        return balancer_save(
            balancer=balancer,
            fields=check.fields(),
            routes=check.route_values(),
            rules=check.rule_values(),
        )
    except ValidationError as exc:
        check.draft["save_errors"] = exc.message_dict
        _file_save_errors(check, exc.message_dict)
        return None


def _file_save_errors(check: DraftCheck, errors: dict[str, list[str]]) -> None:
    """balancer_save's messages, each under the step and field it belongs to."""
    for key, messages in errors.items():
        if key == "routes":
            check.route_errors += [m for m in messages if m not in check.route_errors]
        elif key == "rules":
            check.rule_errors += [m for m in messages if m not in check.rule_errors]
        elif key.startswith("rules["):
            index = int(key[6 : key.index("]")])
            if index >= len(check.rules):
                continue
            name = key.partition(".")[2]
            rule_form = check.rules[index]
            if rule_form.errors is not None:  # cleaned first: add_error needs cleaned_data
                rule_form.add_error(name if name in rule_form.fields else None, messages)
        elif key.startswith("routes["):
            index = int(key[7 : key.index("]")])
            if index >= len(check.routes):
                continue
            name = key.partition(".")[2]
            form = check.routes[index]
            if form.errors is not None:
                form.add_error(name if name in form.fields else None, messages)
        else:
            extra = check.extra_errors.setdefault(FIELD_STEP.get(key, "review"), [])
            extra.extend(m for m in messages if m not in extra)


def rule_summary(rule: dict[str, Any]) -> str:
    """What a rule matches, in a few words (review step, detail page)."""
    kind, value = rule.get("kind"), rule.get("value") or ""
    if kind == RuleKind.REGEX:
        return f"last user message matches /{value}/"
    if kind == RuleKind.KEYWORDS:
        return f"last user message mentions {value}"
    if kind == RuleKind.PROMPT_TOKENS:
        low, high = rule.get("min_tokens"), rule.get("max_tokens")
        if low not in (None, "") and high not in (None, ""):
            return f"prompt of {low} to {high} tokens"
        return (
            f"prompt of at least {low} tokens"
            if low not in (None, "")
            else f"prompt of at most {high} tokens"
        )
    if kind == RuleKind.TOOLS:
        return "request offers tools"
    if kind == RuleKind.IMAGES:
        return "request carries images"
    if kind == RuleKind.RESPONSE_FORMAT:
        return f"response_format {value}" if value else "request asks for structured output"
    if kind == RuleKind.METADATA:
        return f"metadata {rule.get('metadata_key')} = {value}"
    if kind == RuleKind.USER:
        return f"user = {value}"
    if kind == RuleKind.TAG:
        return f"x-balancer-tags has {value}"
    if kind == RuleKind.API_KEY:
        return f"API key named {value}"
    return str(kind)
