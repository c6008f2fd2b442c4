from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from targetgroups import catalogue
from targetgroups.encryption import UnreadableSecret, decrypt, encrypt
from targetgroups.providers import AZURE_API_VERSION, PROVIDERS
from targetgroups.validators import slug_validator, validate_base_url

logger = logging.getLogger(__name__)


class WorkloadKind(models.TextChoices):
    CHAT = "chat", "Chat"
    EMBEDDINGS = "embeddings", "Embeddings"


class Provider(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible"
    ANTHROPIC = "anthropic", "Anthropic"
    SIMULATOR = "simulator", "Simulator (built-in, offline)"
    BUILTIN = "builtin", "Built-in model"
    # The rest of targetgroups.providers.PROVIDERS: their default base URL, key header, error
    # mapping and probe come from that table ("custom" is what "openai" already means here).
    GOOGLE = "google", "Google Gemini"
    MISTRAL = "mistral", "Mistral"
    DEEPSEEK = "deepseek", "DeepSeek"
    XAI = "xai", "xAI"
    GROQ = "groq", "Groq"
    PERPLEXITY = "perplexity", "Perplexity"
    OPENROUTER = "openrouter", "OpenRouter"
    TOGETHER = "together", "Together AI"
    FIREWORKS = "fireworks", "Fireworks AI"
    AZURE = "azure", "Azure OpenAI"
    OLLAMA = "ollama", "Ollama"


# Providers whose instances call an upstream over HTTP (and so need a base URL, their own or the
# provider's default).
HTTP_PROVIDERS = frozenset(set(Provider.values) - {Provider.SIMULATOR, Provider.BUILTIN})


class SelectionPolicy(models.TextChoices):
    WEIGHTED_ROUND_ROBIN = "weighted_round_robin", "Weighted round robin"
    ROUND_ROBIN = "round_robin", "Round robin"
    RANDOM = "random", "Random (weighted)"
    LEAST_LATENCY = "least_latency", "Least latency"
    LEAST_BUSY = "least_busy", "Least busy"
    CAPACITY_FIRST = "capacity_first", "Capacity first"


# Models that run inside the gateway process; provider "builtin" may only name these.
BUILTIN_MODELS = {"intent-classifier": WorkloadKind.CHAT}

# Knobs the simulator provider understands, with their types.
SIMULATOR_OPTIONS = {"latency_ms": int, "error_rate": float, "down": bool, "tokens_per_second": int}


class Pricing(models.TextChoices):
    PER_TOKEN = "per_token", "Per token"
    CAPACITY = "capacity", "Reserved capacity (per hour)"


class CapacityUnit(models.TextChoices):
    CONCURRENT_REQUESTS = "concurrent_requests", "Concurrent requests"
    TOKENS_PER_SECOND = "tokens_per_second", "Tokens per second"


# Azure OpenAI's api-version query value: a date, optionally "-preview".
API_VERSION_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")

WEIGHT_VALIDATORS = [MinValueValidator(0), MaxValueValidator(1000)]
PRIORITY_VALIDATORS = [MinValueValidator(1), MaxValueValidator(1000)]


class EncryptedApiKey:
    """`api_key` read and written in clear over the model's `api_key_encrypted` Fernet token
    (targetgroups/encryption.py). "" when none is stored, or when it cannot be decrypted: that is
    logged, and the caller then calls its upstream without a key and fails over."""

    api_key_encrypted: str

    @property
    def secret_owner(self) -> str:
        raise NotImplementedError

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)

    @property
    def api_key(self) -> str:
        try:
            return decrypt(self.api_key_encrypted)
        except UnreadableSecret as exc:
            logger.error("%s: %s", self.secret_owner, exc)
            return ""

    @api_key.setter
    def api_key(self, value: str) -> None:
        self.api_key_encrypted = encrypt(value or "")


class Instance(EncryptedApiKey, models.Model):
    """One callable model deployment."""

    instance_id = models.CharField(
        max_length=63,
        unique=True,
        validators=[slug_validator],
        help_text="Identifier used in target-group JSON, e.g. inst_a.",
    )
    display_name = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=20, choices=Provider.choices, default=Provider.OPENAI)
    base_url = models.URLField(
        max_length=500, blank=True, help_text="e.g. https://api.openai.com/v1"
    )
    model = models.CharField(max_length=200, help_text="The model name the upstream expects.")
    # The upstream key as a Fernet token (targetgroups/encryption.py); read and set it as `api_key`.
    api_key_encrypted = models.TextField(
        blank=True,
        default="",
        editable=False,
        help_text="The upstream API key, encrypted. Write-only: never shown again.",
    )
    workload_kind = models.CharField(
        max_length=20, choices=WorkloadKind.choices, default=WorkloadKind.CHAT
    )
    input_price_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal("0"),
        validators=[MinValueValidator(0)],
        help_text="USD per 1M input tokens.",
    )
    output_price_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal("0"),
        validators=[MinValueValidator(0)],
        help_text="USD per 1M output tokens.",
    )
    pricing = models.CharField(
        max_length=20,
        choices=Pricing.choices,
        default=Pricing.PER_TOKEN,
        help_text="Per token (the prices above), or reserved capacity paid by the hour.",
    )
    capacity_price_per_hour = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal("0"),
        validators=[MinValueValidator(0)],
        help_text="USD per hour of reserved capacity; spread over the hour's requests by tokens.",
    )
    capacity_unit = models.CharField(
        max_length=20,
        choices=CapacityUnit.choices,
        default=CapacityUnit.CONCURRENT_REQUESTS,
        help_text="What the hour buys: concurrent requests or tokens per second.",
    )
    capacity = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(10_000_000)],
        help_text="How many concurrent requests (or tokens per second) the hour buys.",
    )
    capacity_since = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When reserved-capacity pricing began; its hours are paid from that hour on.",
    )
    quality_tier = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(5)],
        help_text="1 (basic) to 5 (frontier); used by auto routing.",
    )
    # Capabilities: empty (None) takes the model catalogue's default (targetgroups/catalogue.py);
    # a value set here always wins over it.
    cached_input_price_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="USD per 1M cached input tokens. Empty: the catalogue's price.",
    )
    context_window = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100_000_000)],
        help_text="Tokens (prompt and answer). Empty: the catalogue's; unknown is never checked.",
    )
    max_output_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100_000_000)],
        help_text="Largest answer in tokens. Empty: the catalogue's; unknown is never checked.",
    )
    supports_tools = models.BooleanField(
        null=True, blank=True, default=None, help_text="Takes `tools`. Empty: the catalogue's."
    )
    supports_vision = models.BooleanField(
        null=True, blank=True, default=None, help_text="Takes images. Empty: the catalogue's."
    )
    supports_json_mode = models.BooleanField(
        null=True,
        blank=True,
        default=None,
        help_text="Takes response_format json_object / json_schema. Empty: the catalogue's.",
    )
    supports_streaming = models.BooleanField(
        null=True, blank=True, default=None, help_text="Streams answers. Empty: the catalogue's."
    )
    strengths = models.JSONField(
        null=True,
        blank=True,
        default=None,
        help_text="What the model is good at: code, reasoning, multilingual, vision, "
        "long-context... Empty: the catalogue's.",
    )
    connect_timeout = models.FloatField(
        default=5.0, validators=[MinValueValidator(0.05), MaxValueValidator(600)]
    )
    first_byte_timeout = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(0.05), MaxValueValidator(3600)],
        help_text="Seconds until the upstream's first byte.",
    )
    request_timeout = models.FloatField(
        default=300.0, validators=[MinValueValidator(0.05), MaxValueValidator(3600)]
    )
    # The routes' range (balancers.models.LATENCY_THRESHOLD_*: a layer up, so not imported).
    latency_threshold_ms = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(10), MaxValueValidator(600_000)],
        help_text="Time to first byte (ms) after which the next target is tried, when the route "
        "sets none; empty: no threshold.",
    )
    options = models.JSONField(
        default=dict,
        blank=True,
        help_text="Simulator knobs: latency_ms, error_rate, down, tokens_per_second. Azure OpenAI: "
        "api_version.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["instance_id"]

    def __str__(self) -> str:
        return self.display_name or self.instance_id

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The paid hours of reserved capacity start when the pricing is switched on, and stop
        # when it is switched back to per token (the hours already spread keep their rows).
        if self.pricing == Pricing.CAPACITY and self.capacity_since is None:
            self.capacity_since = timezone.now()
        elif self.pricing != Pricing.CAPACITY:
            self.capacity_since = None
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "pricing" in update_fields:
            kwargs["update_fields"] = {*update_fields, "capacity_since"}
        super().save(*args, **kwargs)

    @property
    def capacity_priced(self) -> bool:
        return self.pricing == Pricing.CAPACITY

    @property
    def secret_owner(self) -> str:
        return f"instance {self.instance_id}"

    @property
    def catalogue_entry(self) -> catalogue.CatalogueModel | None:
        """The catalogue's entry for this instance's model name (None: not in the catalogue)."""
        if self.provider == Provider.BUILTIN:
            return None
        return catalogue.lookup(self.model)

    def capabilities(self) -> Capabilities:
        """What routing reads: the instance's own values, else the catalogue's, else unknown."""
        return resolve_capabilities(self, self.catalogue_entry)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.strengths is not None:
            message = check_strengths(self.strengths)
            if message:
                errors["strengths"] = message
        facts = PROVIDERS.get(self.provider)
        # "openai" and "anthropic" instances name their server (any OpenAI-compatible one, an
        # Anthropic proxy); the other providers default to their public API.
        default = facts.base_url if facts and self.provider not in ("openai", "anthropic") else ""
        if self.provider in HTTP_PROVIDERS and not self.base_url and not default:
            errors["base_url"] = "A base URL is required for this provider."
        elif self.base_url:
            try:
                validate_base_url(self.base_url)
            except ValidationError as exc:
                errors["base_url"] = exc.messages[0]
        if self.workload_kind != WorkloadKind.CHAT and facts is not None and not facts.embeddings:
            errors["workload_kind"] = f"{facts.label} instances serve chat only."
        if self.provider == Provider.BUILTIN:
            kind = BUILTIN_MODELS.get(self.model)
            if kind is None:
                errors["model"] = f"Built-in models: {', '.join(sorted(BUILTIN_MODELS))}."
            elif kind != self.workload_kind:
                errors["workload_kind"] = f"The built-in model {self.model} is a {kind} model."
        if self.pricing == Pricing.CAPACITY and not self.capacity:
            errors["capacity"] = (
                "Reserved capacity needs its size: how many concurrent requests (or tokens per "
                "second) the hour buys."
            )
        if not isinstance(self.options, dict):
            errors["options"] = "Options must be a JSON object."
        elif self.provider == Provider.AZURE:
            unknown = sorted(set(self.options) - {"api_version"})
            version = self.options.get("api_version", AZURE_API_VERSION)
            if unknown:
                errors["options"] = (
                    f"Azure OpenAI takes one option, api_version; not {unknown[0]!r}."
                )
            elif not isinstance(version, str) or not API_VERSION_PATTERN.match(version):
                errors["options"] = "api_version must look like 2024-10-21 or 2025-04-01-preview."
        elif self.provider == Provider.SIMULATOR:
            for key, value in self.options.items():
                expected = SIMULATOR_OPTIONS.get(key)
                if expected is None:
                    errors["options"] = (
                        f"Unknown simulator option {key!r}; known: {', '.join(SIMULATOR_OPTIONS)}."
                    )
                    break
                ok = (
                    isinstance(value, bool)
                    if expected is bool
                    else (isinstance(value, (int, float)) and not isinstance(value, bool))
                )
                if not ok or (expected is not bool and value < 0):
                    errors["options"] = (
                        f"Simulator option {key!r} must be a non-negative {expected.__name__}."
                    )
                    break
                if key == "error_rate" and value > 1:
                    errors["options"] = "Simulator option 'error_rate' must be between 0 and 1."
                    break
        if errors:
            raise ValidationError(errors)


MAX_STRENGTHS = 10


def check_strengths(value: Any) -> str:
    """ "" when `value` is a valid strengths list, else what is wrong with it."""
    if not isinstance(value, list) or len(value) > MAX_STRENGTHS:
        return f'Strengths are a list of at most {MAX_STRENGTHS} words, e.g. ["code", "reasoning"].'
    for item in value:
        if not isinstance(item, str) or not STRENGTH_WORD.match(item):
            return (
                f"{str(item)[:40]!r} is not a strength: lower-case letters, digits and '-' "
                f"(known: {', '.join(catalogue.STRENGTHS)})."
            )
    return ""


STRENGTH_WORD = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """An instance's effective capabilities; None where neither the operator nor the catalogue says.

    `source` names where each value came from ("instance" or "catalogue") for the pages.
    """

    context_window: int | None
    max_output_tokens: int | None
    supports_tools: bool | None
    supports_vision: bool | None
    supports_json_mode: bool | None
    supports_streaming: bool | None
    strengths: tuple[str, ...]
    cached_input_price_per_million: Decimal | None
    source: dict[str, str]


CAPABILITY_FIELDS = (
    "context_window",
    "max_output_tokens",
    "supports_tools",
    "supports_vision",
    "supports_json_mode",
    "supports_streaming",
    "cached_input_price_per_million",
)


def resolve_capabilities(
    instance: Instance, entry: catalogue.CatalogueModel | None
) -> Capabilities:
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name in CAPABILITY_FIELDS:
        own = getattr(instance, name)
        if own is not None:
            values[name], source[name] = own, "instance"
        elif entry is not None and getattr(entry, name) is not None:
            values[name], source[name] = getattr(entry, name), "catalogue"
        else:
            values[name] = None
    if instance.strengths is not None:
        strengths, source["strengths"] = tuple(instance.strengths), "instance"
    elif entry is not None:
        strengths, source["strengths"] = entry.strengths, "catalogue"
    else:
        strengths = ()
    return Capabilities(strengths=strengths, source=source, **values)


def catalogue_defaults(model: str, provider: str) -> dict[str, Any]:
    """The stored fields a new instance of `model` takes from the catalogue when not given:
    its prices and quality tier (the capability fields stay empty and follow the catalogue)."""
    if provider == Provider.BUILTIN:
        return {}
    entry = catalogue.lookup(model)
    if entry is None:
        return {}
    found: dict[str, Any] = {"quality_tier": entry.quality_tier}
    for name in ("input_price_per_million", "output_price_per_million"):
        price = getattr(entry, name)
        if price is not None:  # the field keeps 6 decimal places
            found[name] = price.quantize(PRICE_PLACES)
    return found


PRICE_PLACES = Decimal("0.000001")


class TargetGroup(models.Model):
    """A named pool of instances."""

    name = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    workload_kind = models.CharField(
        max_length=20, choices=WorkloadKind.choices, default=WorkloadKind.CHAT
    )
    selection_policy = models.CharField(
        max_length=30, choices=SelectionPolicy.choices, default=SelectionPolicy.WEIGHTED_ROUND_ROBIN
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.display_name or self.name


class TargetGroupMember(models.Model):
    group = models.ForeignKey(TargetGroup, on_delete=models.CASCADE, related_name="members")
    instance = models.ForeignKey(Instance, on_delete=models.PROTECT, related_name="memberships")
    weight = models.PositiveIntegerField(
        default=100, validators=WEIGHT_VALIDATORS, help_text="0 drains the member."
    )
    priority = models.PositiveIntegerField(
        default=1, validators=PRIORITY_VALIDATORS, help_text="Lower tiers are tried first."
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["group", "instance"], name="member_unique_instance_per_group"
            ),
            models.CheckConstraint(
                condition=models.Q(weight__lte=1000), name="member_weight_max_1000"
            ),
            models.CheckConstraint(
                condition=models.Q(priority__gte=1), name="member_priority_min_1"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.group.name}/{self.instance.instance_id}"

    @property
    def in_use_label(self) -> str:
        return f"member of target group {self.group.name}"

    def clean(self) -> None:
        if (
            self.group_id
            and self.instance_id
            and self.instance.workload_kind != self.group.workload_kind
        ):
            raise ValidationError(
                {
                    "instance": f"{self.instance.instance_id} is a {self.instance.workload_kind} "
                    "instance; "
                    f"this group serves {self.group.workload_kind}."
                }
            )


CREDENTIAL_PROVIDERS = [(code, facts.label) for code, facts in PROVIDERS.items()]


class ProviderCredential(EncryptedApiKey, models.Model):
    """One key per provider, for calling any model of that provider by its own name
    (`model="claude-sonnet-4-5"`; docs/providers.md). Encrypted like instance keys."""

    provider = models.CharField(max_length=20, choices=CREDENTIAL_PROVIDERS, unique=True)
    base_url = models.URLField(
        max_length=500,
        blank=True,
        help_text="Empty: the provider's own (required for Azure OpenAI and a custom server).",
    )
    api_key_encrypted = models.TextField(
        blank=True,
        default="",
        editable=False,
        help_text="The provider API key, encrypted. Write-only: never shown again.",
    )
    api_version = models.CharField(
        max_length=40,
        blank=True,
        help_text=f"Azure OpenAI only: the api-version query value; empty: {AZURE_API_VERSION}.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider"]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        facts = PROVIDERS.get(self.provider)
        return facts.label if facts else self.provider

    @property
    def effective_base_url(self) -> str:
        facts = PROVIDERS.get(self.provider)
        return (self.base_url or (facts.base_url if facts else "")).rstrip("/")

    @property
    def secret_owner(self) -> str:
        return f"provider credential {self.provider}"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        facts = PROVIDERS.get(self.provider)
        if facts is None:
            raise ValidationError({"provider": "Unknown provider."})
        if self.base_url:
            try:
                validate_base_url(self.base_url)
            except ValidationError as exc:
                errors["base_url"] = exc.messages[0]
        elif not facts.base_url:
            errors["base_url"] = f"{facts.label} has no common base URL: give yours."
        if self.api_version:
            if self.provider != "azure":
                errors["api_version"] = "Only Azure OpenAI takes an api-version."
            elif not API_VERSION_PATTERN.match(self.api_version):
                errors["api_version"] = "Use a date such as 2024-10-21, or one with -preview."
        if facts.key_required and not self.api_key_encrypted:
            errors["api_key"] = f"{facts.label} needs an API key."
        if errors:
            raise ValidationError(errors)
