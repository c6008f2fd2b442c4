from __future__ import annotations

import hashlib
import secrets
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from balancers.models import Balancer

KEY_PREFIX = "sb-"


def hash_api_key(secret: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


# A use-case tag: what a request is for ("support-chat", "nightly-summaries"). Set on a key, or by a
# request (the x-balancer-use-case header or metadata.use_case; docs/cost.md).
USE_CASE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$"
use_case_validator = RegexValidator(
    USE_CASE_PATTERN,
    "A use case is 1 to 63 letters, digits, '_', '.', ':' or '-', starting with a letter or digit.",
)


class Team(models.Model):
    """Who pays: API keys belong to a team, and spend is broken down and budgeted by team."""

    name = models.SlugField(max_length=63, unique=True)
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A gateway API key. Only its hash is stored; the secret is shown once."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(
        max_length=16, help_text="The first characters, to recognise the key."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    balancers = models.ManyToManyField(
        Balancer, blank=True, related_name="api_keys", help_text="Empty: every balancer."
    )
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Requests per minute; empty: unlimited.",
    )
    allow_route_override = models.BooleanField(
        default=False,
        verbose_name="may choose the route",
        help_text="Requests with this key may force an enabled route with the X-Balancer-Route "
        "header.",
    )
    team = models.ForeignKey(
        Team,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="api_keys",
        help_text="The team its spend is counted to; empty: no team.",
    )
    use_case = models.CharField(
        max_length=63,
        blank=True,
        validators=[use_case_validator],
        help_text="The use-case tag of its requests, unless a request names its own.",
    )
    allow_direct_models = models.BooleanField(
        default=False,
        verbose_name="may call models by name",
        help_text="Requests with this key may name any model of a provider with a stored "
        "credential "
        '(model="claude-sonnet-4-5", "groq/llama-3.3-70b-versatile"), not only balancers.',
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.enabled and self.revoked_at is None


class ConfigState(models.Model):
    """A single row whose version is bumped on every configuration write."""

    version = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"config version {self.version}"


class UsageEvent(models.Model):
    """One client request through the gateway, recorded off the hot path."""

    created_at = models.DateTimeField(db_index=True)
    request_id = models.CharField(max_length=64, db_index=True)
    endpoint = models.CharField(max_length=20)  # chat | embeddings
    # No database constraints on these references: the event log is written in bulk
    # off the hot path and must never wait on (or deadlock with) configuration tables.
    api_key = models.ForeignKey(
        ApiKey,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
    )
    balancer = models.ForeignKey(
        Balancer,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="usage_events",
        db_constraint=False,
    )
    serving_name = models.CharField(max_length=128, blank=True)
    team = models.ForeignKey(
        Team,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
        help_text="The key's team when the request was made.",
    )
    use_case = models.CharField(max_length=63, blank=True)
    route = models.CharField(max_length=63, blank=True)
    instance = models.CharField(max_length=63, blank=True, help_text="instance_id that answered")
    model = models.CharField(max_length=200, blank=True)
    decision_reason = models.CharField(max_length=40, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    classifier_ms = models.FloatField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True)
    status_code = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=60, blank=True)
    stream = models.BooleanField(default=False)
    latency_ms = models.FloatField()
    ttfb_ms = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=10, default=0)
    usage_note = models.CharField(
        max_length=200,
        blank=True,
        help_text="Why an upstream-reported token count was dropped for the gateway's estimate.",
    )
    cache_hit = models.BooleanField(
        default=False, help_text="Answered from the response cache (no upstream call)."
    )
    prompt_text = models.TextField(
        blank=True,
        help_text="The last user message, kept only when the balancer keeps prompts "
        "(Balancer.log_prompts).",
    )
    savings_usd = models.DecimalField(
        max_digits=16,
        decimal_places=10,
        default=0,
        help_text="Upstream cost avoided: a cache hit's original cost (its cost_usd is 0).",
    )
    decided_route = models.CharField(
        max_length=63,
        blank=True,
        help_text="The route the routing decision named, before any failover (route: the one that "
        "answered).",
    )
    spilled = models.BooleanField(
        default=False,
        help_text="Capacity first: served by a token-billed member because the reserved capacity "
        "was saturated.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["balancer", "created_at"])]

    def __str__(self) -> str:
        return f"{self.request_id} {self.serving_name} {self.status_code}"


class UsageDeadLetter(models.Model):
    """A usage event the database refused for its values, kept aside with the reason.

    Written by the usage writer (gateway.hotpath.usage) instead of the event, so that one bad
    row never holds up the others; read in the admin. Kept as long as raw usage events
    (GATEWAY_USAGE_RETENTION_DAYS).
    """

    created_at = models.DateTimeField(
        auto_now_add=True, db_index=True, help_text="When it was set aside."
    )
    request_id = models.CharField(max_length=64, blank=True)
    reason = models.CharField(max_length=500, help_text="The database's error.")
    record = models.TextField(
        help_text="The event as the gateway recorded it (JSON when it can be)."
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "usage dead letter"

    def __str__(self) -> str:
        return f"{self.request_id}: {self.reason[:80]}"


class UsageHourly(models.Model):
    """Usage events summed per UTC hour and per balancer, route, instance, model, API key, team
    and use case.

    Written only by gateway.reporting.rollups.rollup_usage; the usage page reads these rows,
    and they outlive the raw events (GATEWAY_USAGE_RETENTION_DAYS).
    """

    hour = models.DateTimeField(db_index=True, help_text="Start of the hour, UTC.")
    # Unconstrained, like the events they sum: a deleted balancer or key leaves its history.
    balancer = models.ForeignKey(
        Balancer,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
    )
    serving_name = models.CharField(max_length=128, blank=True)
    route = models.CharField(max_length=63, blank=True)
    instance = models.CharField(max_length=63, blank=True)
    model = models.CharField(max_length=200, blank=True)
    api_key = models.ForeignKey(
        ApiKey,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
    )
    team = models.ForeignKey(
        Team,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
    )
    use_case = models.CharField(max_length=63, blank=True)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(
        default=0, help_text="Requests answered with a status of 400 or more."
    )
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=10, default=0)
    latency_ms_sum = models.FloatField(default=0, help_text="Divide by requests for the mean.")
    streamed = models.PositiveIntegerField(default=0)
    cache_hits = models.PositiveIntegerField(default=0)
    savings_usd = models.DecimalField(
        max_digits=16,
        decimal_places=10,
        default=0,
        help_text="Upstream cost avoided by the response cache.",
    )

    class Meta:
        ordering = ["-hour"]
        verbose_name = "usage hour"

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} {self.serving_name} {self.route} {self.requests}"


class UsageRollupState(models.Model):
    """The rollup's one row: the highest usage event id already summed into UsageHourly.

    Locked (SELECT ... FOR UPDATE) by every rollup run, so runs take turns.
    """

    last_event_id = models.BigIntegerField(default=0)
    pruned_before = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Raw events before this hour were deleted; their rollups are kept.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"usage rolled up to event {self.last_event_id}"


class CapacityHour(models.Model):
    """One closed UTC hour of an instance priced as reserved capacity, and how its price was spread.

    Written only by gateway.reporting.capacity.allocate_capacity (run with the usage rollup): the
    hour's price is spread over the usage events the instance served in it, in proportion to their
    tokens, and written on those events as their cost; an hour without tokens keeps its price here
    as idle capacity.
    """

    instance = models.CharField(max_length=63, help_text="instance_id")
    hour = models.DateTimeField(help_text="Start of the hour, UTC.")
    price_usd = models.DecimalField(
        max_digits=16, decimal_places=10, help_text="What the hour cost (its price per hour)."
    )
    unit = models.CharField(max_length=20, help_text="concurrent_requests | tokens_per_second")
    capacity = models.PositiveIntegerField(help_text="The capacity the hour bought, in `unit`.")
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    busy_seconds = models.FloatField(
        default=0, help_text="The served requests' latencies summed: their concurrency x 3600."
    )
    spread_usd = models.DecimalField(
        max_digits=16,
        decimal_places=10,
        default=0,
        help_text="The part of the price written on the hour's usage events (all of it, or 0 when "
        "idle).",
    )
    event_mark = models.BigIntegerField(
        default=0,
        help_text="The highest usage event id when the hour was spread (late events re-spread it).",
    )

    class Meta:
        ordering = ["-hour", "instance"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "hour"], name="capacity_hour_unique")
        ]

    def __str__(self) -> str:
        return f"{self.instance} {self.hour:%Y-%m-%d %H:00}"

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class HealthStatus(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    HEALTHY = "healthy", "Healthy"
    DEGRADED = "degraded", "Degraded"
    UNAVAILABLE = "unavailable", "Unavailable"


class InstanceHealth(models.Model):
    """An instance's active-health state after its probes so far (not configuration: no
    config-version bump). `status` follows runs of probes (gateway/engine/probing.py);
    latency and detail are the last probe's."""

    instance = models.OneToOneField(
        "targetgroups.Instance", on_delete=models.CASCADE, related_name="probe"
    )
    status = models.CharField(
        max_length=20, choices=HealthStatus.choices, default=HealthStatus.UNKNOWN
    )
    latency_ms = models.FloatField(null=True, blank=True)
    detail = models.CharField(max_length=300, blank=True)
    checked_at = models.DateTimeField()
    consecutive_failures = models.PositiveIntegerField(default=0)
    consecutive_successes = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.instance_id}: {self.status}"


class StoredResponse(models.Model):
    """A /v1/responses answer kept for `previous_response_id` and GET /v1/responses/{id}
    (GATEWAY_RESPONSES_RETENTION_DAYS), visible only to the key that made it."""

    id = models.CharField(primary_key=True, max_length=64)
    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    response = models.JSONField(help_text="The Responses object as answered.")
    conversation = models.JSONField(
        help_text="The turns up to and including this answer, as chat messages (without the "
        "instructions)."
    )
    input_items = models.JSONField(
        default=list,
        blank=True,
        help_text="The request's own input, as GET /v1/responses/{id}/input_items lists it.",
    )

    def __str__(self) -> str:
        return self.id


class ProbeRecord(models.Model):
    """One probe of one instance, for the pages' short history. Pruned to the newest
    GATEWAY_PROBE_HISTORY per instance after every probe run."""

    instance = models.ForeignKey(
        "targetgroups.Instance", on_delete=models.CASCADE, related_name="probe_records"
    )
    checked_at = models.DateTimeField()
    verdict = models.CharField(
        max_length=20,
        choices=HealthStatus.choices,
        help_text="What this probe alone said (healthy, degraded or unavailable).",
    )
    status = models.CharField(
        max_length=20,
        choices=HealthStatus.choices,
        help_text="The instance's state after this probe (with hysteresis).",
    )
    latency_ms = models.FloatField(null=True, blank=True)
    detail = models.CharField(max_length=300, blank=True)

    class Meta:
        indexes = [models.Index(fields=["instance", "-id"], name="probe_record_instance_recent")]

    def __str__(self) -> str:
        return f"{self.instance_id} at {self.checked_at:%H:%M:%S}: {self.verdict}"


class Budget(models.Model):
    """A daily or monthly spend limit on one team, API key or balancer (docs/cost.md).

    Counted on the request path in Redis (gateway.hotpath.budgets), made exact from the usage
    events by gateway.budgets.budgets_reconcile. At `warn_share` of the limit the pages and the
    webhook say so; at the limit `action` applies.
    """

    class Period(models.TextChoices):
        DAILY = "daily", "Daily (UTC day)"
        MONTHLY = "monthly", "Monthly (UTC calendar month)"

    class Action(models.TextChoices):
        REFUSE = "refuse", "Refuse (429 insufficient_quota)"
        DOWNGRADE = "downgrade", "Downgrade to the cheapest route"

    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    balancer = models.ForeignKey(
        Balancer, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    period = models.CharField(max_length=10, choices=Period.choices, default=Period.MONTHLY)
    limit_usd = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        validators=[MinValueValidator(Decimal("0.0001"))],
        help_text="Spend allowed in the period, in US dollars.",
    )
    warn_share = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.8"),
        validators=[MinValueValidator(Decimal("0.01")), MaxValueValidator(Decimal(1))],
        help_text="Warn at this share of the limit (0.01 to 1).",
    )
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.REFUSE)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["period", "pk"]
        constraints = [
            models.CheckConstraint(
                name="budget_one_subject",
                condition=(
                    models.Q(team__isnull=False, api_key__isnull=True, balancer__isnull=True)
                    | models.Q(team__isnull=True, api_key__isnull=False, balancer__isnull=True)
                    | models.Q(team__isnull=True, api_key__isnull=True, balancer__isnull=False)
                ),
            ),
            models.UniqueConstraint(
                fields=["team", "period"],
                condition=models.Q(team__isnull=False),
                name="budget_unique_team_period",
                violation_error_message="This team already has a budget for that period.",
            ),
            models.UniqueConstraint(
                fields=["api_key", "period"],
                condition=models.Q(api_key__isnull=False),
                name="budget_unique_key_period",
                violation_error_message="This API key already has a budget for that period.",
            ),
            models.UniqueConstraint(
                fields=["balancer", "period"],
                condition=models.Q(balancer__isnull=False),
                name="budget_unique_balancer_period",
                violation_error_message="This balancer already has a budget for that period.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.period} budget of {self.subject_label}: ${self.limit_usd}"

    def clean(self) -> None:
        subjects = [s for s in (self.team_id, self.api_key_id, self.balancer_id) if s is not None]
        if len(subjects) != 1:
            raise ValidationError("A budget is for exactly one team, API key or balancer.")

    @property
    def scope(self) -> str:
        return "team" if self.team_id else "api_key" if self.api_key_id else "balancer"

    @property
    def subject_id(self) -> int:
        return self.team_id or self.api_key_id or self.balancer_id or 0

    @property
    def subject_label(self) -> str:
        if self.team is not None:
            return f"team {self.team.name}"
        if self.api_key is not None:
            return f"API key {self.api_key.name}"
        return f"balancer {self.balancer.name}" if self.balancer is not None else "?"


class CostAlert(models.Model):
    """A budget warning, a budget reached, or a cost anomaly: shown on the usage page and sent to
    the webhook (GATEWAY_ALERT_WEBHOOK_URL) by gateway.alerts.alerts_deliver, off the request path.

    One row per subject, period (or anomaly hour), kind and metric: a job that runs twice
    raises nothing twice.
    """

    class Kind(models.TextChoices):
        BUDGET_WARNING = "budget_warning", "Budget warning"
        BUDGET_REACHED = "budget_reached", "Budget reached"
        ANOMALY = "anomaly", "Cost anomaly"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    scope = models.CharField(max_length=10, help_text="team, api_key or balancer")
    subject_id = models.BigIntegerField()
    subject = models.CharField(max_length=200, help_text="Its name when the alert was raised.")
    period_start = models.DateTimeField(
        db_index=True, help_text="The budget's period, or the anomaly's hour (UTC)."
    )
    metric = models.CharField(max_length=20, default="spend", help_text="spend or requests")
    value = models.DecimalField(max_digits=20, decimal_places=10)
    threshold = models.DecimalField(
        max_digits=20,
        decimal_places=10,
        help_text="The budget's warning level or limit, or the anomaly's upper bound.",
    )
    baseline = models.DecimalField(
        max_digits=20,
        decimal_places=10,
        null=True,
        blank=True,
        help_text="Anomalies: the median of the baseline hours.",
    )
    message = models.CharField(max_length=500)
    budget = models.ForeignKey(
        Budget, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Webhook delivery (gateway.alerts): claimed with a conditional update, retried with back-off.
    delivered_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "scope", "subject_id", "period_start", "metric"],
                name="cost_alert_once",
            )
        ]

    def __str__(self) -> str:
        return self.message


class RoutingCorrection(models.Model):
    """An operator said a routing decision was wrong: the prompt became an example of the right
    route.

    Written only by gateway.corrections.correction_apply. `accuracy_before` / `accuracy_after` are
    the built-in router's accuracy on the balancer's corrected examples (this one included) fitted
    without and with this example, so the page can say what the correction changed.
    """

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    balancer = models.ForeignKey(Balancer, on_delete=models.CASCADE, related_name="corrections")
    user = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, help_text="Kept when the user is deleted.")
    request_id = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=20, help_text="board, usage or playground")
    prompt = models.TextField()
    decided_route = models.CharField(max_length=63, help_text="Where the router sent it.")
    decision_reason = models.CharField(max_length=40, blank=True)
    route = models.CharField(max_length=63, help_text="Where the operator says it belongs.")
    corrected_examples = models.PositiveIntegerField(
        default=0, help_text="How many corrected examples the accuracies are measured on."
    )
    accuracy_before = models.FloatField(null=True, blank=True)
    accuracy_after = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.balancer_id}: {self.decided_route} -> {self.route}"
