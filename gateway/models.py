from __future__ import annotations

import hashlib
import secrets

from django.core.validators import MinValueValidator
from django.db import models

from balancers.models import Balancer

KEY_PREFIX = "sb-"


def hash_api_key(secret: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


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
        help_text="Requests with this key may force an enabled route with the X-Balancer-Route header.",
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
    savings_usd = models.DecimalField(
        max_digits=16,
        decimal_places=10,
        default=0,
        help_text="Upstream cost avoided: a cache hit's original cost (its cost_usd is 0).",
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
    """Usage events summed per UTC hour and per balancer, route, instance, model and API key.

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
        help_text="The turns up to and including this answer, as chat messages (without the instructions)."
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
