from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from targetgroups.models import (
    PRIORITY_VALIDATORS,
    WEIGHT_VALIDATORS,
    Instance,
    TargetGroup,
    WorkloadKind,
)
from targetgroups.validators import serving_name_validator, slug_validator

# A route's latency threshold, in milliseconds: 10 ms to 10 minutes.
LATENCY_THRESHOLD_MIN_MS, LATENCY_THRESHOLD_MAX_MS = 10, 600_000
LATENCY_THRESHOLD_VALIDATORS = [
    MinValueValidator(LATENCY_THRESHOLD_MIN_MS),
    MaxValueValidator(LATENCY_THRESHOLD_MAX_MS),
]


class RoutingMode(models.TextChoices):
    INTENT_CLASSIFIER = "intent_classifier", "Intent classifier"
    ORDERED = "ordered", "Ordered (failover)"
    WEIGHTED = "weighted", "Weighted"
    AUTO = "auto", "Auto"


class AutoPreference(models.TextChoices):
    BALANCED = "balanced", "Balanced"
    QUALITY = "quality", "Quality"
    SPEED = "speed", "Speed"
    COST = "cost", "Cost"
    CODE = "code", "Code (code strength, then quality)"


class CacheMode(models.TextChoices):
    OFF = "off", "Off"
    EXACT = "exact", "Exact match"
    SEMANTIC = "semantic", "Exact, then semantic"


class Balancer(models.Model):
    """One OpenAI-compatible endpoint, called by its serving name."""

    name = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    serving_name = models.CharField(
        max_length=128,
        unique=True,
        validators=[serving_name_validator],
        help_text="What clients send as `model`.",
    )
    description = models.TextField(blank=True)
    workload_kind = models.CharField(
        max_length=20, choices=WorkloadKind.choices, default=WorkloadKind.CHAT
    )
    routing_mode = models.CharField(
        max_length=30, choices=RoutingMode.choices, default=RoutingMode.INTENT_CLASSIFIER
    )
    auto_preference = models.CharField(
        max_length=20, choices=AutoPreference.choices, default=AutoPreference.BALANCED
    )
    auto_exclusions = models.JSONField(
        default=list,
        blank=True,
        verbose_name="never choose",
        help_text="Auto mode: model names or instance ids auto never chooses, whatever their "
        "score.",
    )
    router_model = models.ForeignKey(
        Instance,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="routed_balancers",
        limit_choices_to={"workload_kind": WorkloadKind.CHAT},
        help_text="The chat instance that classifies prompts (intent_classifier mode).",
    )
    classifier_timeout = models.FloatField(
        default=1.5,
        validators=[MinValueValidator(0.01), MaxValueValidator(30)],
        help_text="Seconds the router model may take before the default route is used.",
    )
    confidence_threshold = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Below this confidence the default route is used.",
    )
    attempt_budget = models.PositiveSmallIntegerField(
        default=4,
        validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="Upstream attempts per request, across routes and members.",
    )
    request_timeout = models.FloatField(
        default=600.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(3600)],
        help_text="Seconds a client request may take over all attempts.",
    )
    enabled = models.BooleanField(default=True)
    # The response cache (gateway.hotpath.cache; docs/gateway.md, "Response cache").
    cache_mode = models.CharField(
        max_length=20,
        choices=CacheMode.choices,
        default=CacheMode.OFF,
        help_text="Answer repeated requests from the cache: off, exact match, or exact then "
        "semantic.",
    )
    cache_ttl_seconds = models.PositiveIntegerField(
        default=300,
        validators=[MinValueValidator(1), MaxValueValidator(7 * 24 * 3600)],
        help_text="How long a cached answer is served, in seconds.",
    )
    cache_similarity_threshold = models.FloatField(
        default=0.95,
        validators=[MinValueValidator(0.5), MaxValueValidator(1)],
        help_text="Semantic mode: the cosine similarity a prompt needs with a cached one to reuse "
        "its answer.",
    )
    cache_shared_across_keys = models.BooleanField(
        default=False,
        help_text="Serve one API key's cached answers to the others (off: each key has its own).",
    )
    log_prompts = models.BooleanField(
        default=False,
        verbose_name="keep prompts",
        help_text="Keep each request's last user message (its first 4,000 characters) with its "
        "usage event, so an operator can correct the router's decisions from the board, the usage "
        "page and the playground. Off: the gateway keeps no prompt.",
    )
    baseline_route = models.CharField(
        max_length=63,
        blank=True,
        help_text="The route savings are measured against (everything sent there); empty: no such "
        "baseline.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.serving_name

    @property
    def in_use_label(self) -> str:
        """How a capacity row's delete refusal names this balancer (its router model)."""
        return f"router model of balancer {self.name}"

    def clean(self) -> None:
        from balancers.validation import balancer_field_errors, exclusion_errors

        errors = balancer_field_errors(
            routing_mode=self.routing_mode,
            workload_kind=self.workload_kind,
            router_model=self.router_model if self.router_model_id else None,
        )
        if self.auto_exclusions and (message := exclusion_errors(self.auto_exclusions)):
            errors["auto_exclusions"] = message
        if errors:
            raise ValidationError(errors)


class Route(models.Model):
    balancer = models.ForeignKey(Balancer, on_delete=models.CASCADE, related_name="routes")
    name = models.CharField(max_length=63, validators=[slug_validator])
    intent = models.CharField(max_length=500, blank=True, help_text="A short declarative sentence.")
    target_group = models.ForeignKey(
        TargetGroup, on_delete=models.PROTECT, null=True, blank=True, related_name="routes"
    )
    instance = models.ForeignKey(
        Instance,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="routes",
        help_text="A single instance, treated as a group of one.",
    )
    priority = models.PositiveIntegerField(default=1, validators=PRIORITY_VALIDATORS)
    weight = models.PositiveIntegerField(default=100, validators=WEIGHT_VALIDATORS)
    is_default = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    examples = models.JSONField(
        default=list, blank=True, help_text="Example prompts for the classifier."
    )
    # Latency threshold (docs/routing.md, "Latency threshold and hedging"): an attempt on this
    # route that has not sent its first byte (a stream: its first event) after this many
    # milliseconds gives way to the next target; with `hedge` it keeps running and races it.
    latency_threshold_ms = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=LATENCY_THRESHOLD_VALIDATORS,
        help_text="Time to first byte after which the next target is tried; empty: no threshold.",
    )
    hedge = models.BooleanField(
        default=False,
        help_text="Past the threshold, race the next target instead of cancelling this one: the "
        "first answer wins, the other is cancelled.",
    )

    class Meta:
        ordering = ["priority", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["balancer", "name"], name="route_unique_name_per_balancer"
            ),
            models.UniqueConstraint(
                fields=["balancer"],
                condition=models.Q(is_default=True),
                name="route_one_default_per_balancer",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(target_group__isnull=False, instance__isnull=True)
                    | models.Q(target_group__isnull=True, instance__isnull=False)
                ),
                name="route_exactly_one_destination",
            ),
            models.CheckConstraint(
                condition=models.Q(priority__gte=1), name="route_priority_min_1"
            ),
            models.CheckConstraint(
                condition=models.Q(weight__lte=1000), name="route_weight_max_1000"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.balancer.name}/{self.name}"

    @property
    def in_use_label(self) -> str:
        """How a capacity row's delete refusal names this route (its destination)."""
        return f"destination of route {self.balancer.name}/{self.name}"

    def get_constraints(self) -> list:
        # "One default per balancer" is a property of the whole route set, checked by
        # balancers.validation.route_set_errors (the database constraint stays as the
        # backstop); checking it row by row against the database would refuse moving
        # the default from one route to another in a single save.
        return [
            (model, [c for c in constraints if c.name != "route_one_default_per_balancer"])
            for model, constraints in super().get_constraints()
        ]

    @property
    def destination(self) -> TargetGroup | Instance | None:
        return self.target_group or self.instance

    @property
    def destination_label(self) -> str:
        if self.target_group is not None:
            return f"group {self.target_group.name}"
        if self.instance is not None:
            return f"instance {self.instance.instance_id}"
        return "-"


class RuleKind(models.TextChoices):
    """What a content rule looks at (gateway.engine.rules states what each one matches)."""

    REGEX = "regex", "Regular expression in the last user message"
    KEYWORDS = "keywords", "Keywords in the last user message"
    PROMPT_TOKENS = "prompt_tokens", "Prompt size in tokens"
    TOOLS = "tools", "Request offers tools"
    IMAGES = "images", "Request carries images"
    RESPONSE_FORMAT = "response_format", "Request asks for structured output (response_format)"
    METADATA = "metadata", "Request metadata key = value"
    USER = "user", "Request user field"
    TAG = "tag", "Tag in the x-balancer-tags header"
    API_KEY = "api_key", "Calling API key (by name)"


RULE_NAME_MAX = 32  # "rule:<name>" fits the usage event's 40-character decision reason


class ContentRule(models.Model):
    """A rule that sends matching requests to one route, before the routing mode decides."""

    balancer = models.ForeignKey(Balancer, on_delete=models.CASCADE, related_name="rules")
    name = models.CharField(max_length=RULE_NAME_MAX, validators=[slug_validator])
    order = models.PositiveIntegerField(
        default=1,
        validators=PRIORITY_VALIDATORS,
        help_text="Rules are checked in this order; the first match wins.",
    )
    kind = models.CharField(max_length=20, choices=RuleKind.choices)
    value = models.CharField(
        max_length=500,
        blank=True,
        help_text="The pattern (regex), the keywords (keywords, comma-separated), the value "
        "(metadata, user, tag, api_key) or the type (response_format, optional).",
    )
    metadata_key = models.CharField(
        max_length=64, blank=True, help_text="The metadata key (metadata rules)."
    )
    min_tokens = models.PositiveIntegerField(null=True, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    # RESTRICT, not PROTECT: a route a rule uses cannot be deleted alone, but deleting the
    # balancer deletes both (PROTECT would refuse that too).
    route = models.ForeignKey(
        Route,
        on_delete=models.RESTRICT,
        related_name="rules",
        help_text="The route a matching request goes to.",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["order", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["balancer", "name"], name="rule_unique_name_per_balancer"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.balancer.name}/rule:{self.name}"

    @property
    def in_use_label(self) -> str:
        """How a route's delete refusal names this rule."""
        return f"target of content rule {self.balancer.name}/{self.name}"

    def clean(self) -> None:
        from balancers.validation import rule_field_errors

        routes = {r.name: r.enabled for r in self.balancer.routes.all()} if self.balancer_id else {}
        errors = rule_field_errors(
            rule={
                **{
                    f: getattr(self, f)
                    for f in (
                        "name",
                        "kind",
                        "value",
                        "metadata_key",
                        "min_tokens",
                        "max_tokens",
                        "enabled",
                    )
                },
                "route": self.route.name if self.route_id else "",
            },
            routes=routes,
            workload_kind=self.balancer.workload_kind if self.balancer_id else "chat",
        )
        if self.route_id and self.balancer_id and self.route.balancer_id != self.balancer_id:
            errors["route"] = "The route must belong to this balancer."
        if errors:
            raise ValidationError(errors)


class AuditEntry(models.Model):
    """One operator action: who, when, what, on which object (the live board's actions)."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, help_text="Kept when the user is deleted.")
    action = models.CharField(max_length=40)
    object_label = models.CharField(
        max_length=200, help_text="What was acted on, as the operator saw it."
    )
    balancer = models.ForeignKey(
        Balancer, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_entries"
    )
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.object_label}"
