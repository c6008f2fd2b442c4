"""Settings for Smart Balancers, read from the environment.

Embedded mode (no variables set): SQLite under var/, no Redis, health probes and
rollups on an in-process schedule. Production: DATABASE_URL, REDIS_URL,
SECRET_KEY, ALLOWED_HOSTS, and a Celery worker + beat.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    envbool,
    envfernetkeys,
    envfloat,
    envint,
    envlist,
    envproxyheader,
    envsecret,
    envstr,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(envstr("VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = envsecret("SECRET_KEY", fallback_file=VAR_DIR / "secret_key")
# Upstream API keys are stored encrypted (Fernet): the first key encrypts, every one decrypts.
GATEWAY_ENCRYPTION_KEYS = envfernetkeys(
    "GATEWAY_ENCRYPTION_KEYS", fallback_file=VAR_DIR / "encryption_keys"
)
DEBUG = envbool("DEBUG", False)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "template_partials",
    "accounts",
    "targetgroups",
    "balancers",
    "gateway",
    "playground",
    "axes",  # login throttling; last, as its docs ask
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # async-capable; turns a lockout into the 429 page
]

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.roles.role_context",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

_default_db = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
try:
    # Health checks: a kept connection is pinged before its first query in each unit of work
    # (request, or gateway.db.unit_of_work), so one that died with a database restart is replaced.
    DATABASES = {
        "default": dj_database_url.parse(
            envstr("DATABASE_URL", _default_db), conn_max_age=60, conn_health_checks=True
        )
    }
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}

REDIS_URL = envstr("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

# Login throttling (django-axes), on the login page and the admin's alike: after
# LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that pair is
# locked out for LOGIN_LOCKOUT_MINUTES (429); a successful login resets the count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=envfloat("LOGIN_LOCKOUT_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "balancer-list"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so a missing or bad token is a 401 rather than a 403.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Viewers read, operators and staff write (accounts/roles.py).
    "DEFAULT_PERMISSION_CLASSES": ["accounts.roles.ApiRolePermission"],
    "DEFAULT_SCHEMA_CLASS": "config.api_schema.ManagementAutoSchema",
    "EXCEPTION_HANDLER": "config.api_errors.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Smart Balancers management API",
    "DESCRIPTION": "Instances, target groups, balancers with routes, gateway API keys, teams, "
    "budgets, and usage and cost.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Request bodies get components of their own (`...Request`): a serializer used both ways
    # can then state what it accepts (non-blank strings) apart from what it returns.
    "COMPONENT_SPLIT_REQUEST": True,
    # Two models have a `kind` with choices (content rules, cost alerts): each enum its own name.
    "ENUM_NAME_OVERRIDES": {
        "CostAlertKindEnum": "gateway.models.CostAlert.Kind",
        "RuleKindEnum": "balancers.models.RuleKind",
    },
    # Every refusal (400/401/403/404/415) is in the schema too: config/api_schema.py.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.api_schema.declare_error_responses",
    ],
}

# HTTPS hardening, on by default in production (DEBUG off and not embedded, i.e. not SQLite);
# GATEWAY_HTTPS=0 turns every piece off for a deployment served over plain HTTP, and each
# one has its own variable. Behind a proxy that terminates TLS, set SECURE_PROXY_SSL_HEADER
# (e.g. "X-Forwarded-Proto: https"), or the redirect to HTTPS never ends.
EMBEDDED = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
GATEWAY_HTTPS = envbool("GATEWAY_HTTPS", not DEBUG and not EMBEDDED)
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", GATEWAY_HTTPS)
# Only browsers are redirected (pages, admin; HSTS keeps them on HTTPS after that). Probes and
# API clients are not: a redirected POST loses its body, and the credential a client sent over
# HTTP has been sent already.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$", r"^v1/", r"^api/"]
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", GATEWAY_HTTPS)
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", GATEWAY_HTTPS)
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31_536_000 if GATEWAY_HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", GATEWAY_HTTPS)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", GATEWAY_HTTPS)
SECURE_PROXY_SSL_HEADER = envproxyheader("SECURE_PROXY_SSL_HEADER")

CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", REDIS_URL or "memory://")
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL and envbool("CELERY_TASK_ALWAYS_EAGER", True)
CELERY_TASK_IGNORE_RESULT = True

# Gateway
GATEWAY_MAX_BODY_BYTES = envint("GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024)
GATEWAY_CONFIG_POLL_SECONDS = envfloat("GATEWAY_CONFIG_POLL_SECONDS", 0.5, minimum=0.05)
GATEWAY_USAGE_BUFFER_MAX = envint("GATEWAY_USAGE_BUFFER_MAX", 50_000, minimum=100)
GATEWAY_USAGE_FLUSH_SECONDS = envfloat("GATEWAY_USAGE_FLUSH_SECONDS", 1.0, minimum=0.05)
# The live board (gateway/board_feed.py): requests are published per worker in batches this far
# apart; each watched balancer's lanes are re-rendered this often while a board is open.
GATEWAY_BOARD_PUBLISH_SECONDS = envfloat("GATEWAY_BOARD_PUBLISH_SECONDS", 0.25, minimum=0.05)
GATEWAY_BOARD_STATE_SECONDS = envfloat("GATEWAY_BOARD_STATE_SECONDS", 1.0, minimum=0.2)
GATEWAY_UPSTREAM_MAX_CONNECTIONS = envint("GATEWAY_UPSTREAM_MAX_CONNECTIONS", 1000, minimum=1)
GATEWAY_BASE_URL = envstr("GATEWAY_BASE_URL", "")
# Hostile upstreams (docs/reliability.md): an answer past these bounds is an upstream failure and
# its connection is dropped. Whole bodies as sent and once decompressed; streamed answers per SSE
# event.
GATEWAY_UPSTREAM_MAX_HEADER_BYTES = envint(
    "GATEWAY_UPSTREAM_MAX_HEADER_BYTES", 64 * 1024, minimum=1024
)
GATEWAY_UPSTREAM_MAX_BODY_BYTES = envint(
    "GATEWAY_UPSTREAM_MAX_BODY_BYTES", 32 * 1024 * 1024, minimum=1024
)
GATEWAY_UPSTREAM_MAX_DECOMPRESSED_BYTES = envint(
    "GATEWAY_UPSTREAM_MAX_DECOMPRESSED_BYTES", 32 * 1024 * 1024, minimum=1024
)
GATEWAY_UPSTREAM_MAX_EVENT_BYTES = envint(
    "GATEWAY_UPSTREAM_MAX_EVENT_BYTES", 8 * 1024 * 1024, minimum=1024
)
# Egress policy (targetgroups/egress.py): link-local and cloud metadata addresses are always
# refused;
# loopback and private networks only with this on. On by default in embedded mode (SQLite: `make
# run`,
# where the simulator and local model servers live); in production, a deliberate choice.
GATEWAY_EGRESS_ALLOW_PRIVATE = envbool(
    "GATEWAY_EGRESS_ALLOW_PRIVATE", DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
)
GATEWAY_PROBE_SECONDS = envfloat("GATEWAY_PROBE_SECONDS", 30.0, minimum=1.0)
# Probe hysteresis (gateway/engine/probing.py): this many failed probes in a row make an instance
# unavailable, this many passing ones bring it back; the pages keep this many probes per instance.
GATEWAY_PROBE_DOWN_AFTER = envint("GATEWAY_PROBE_DOWN_AFTER", 2, minimum=1)
GATEWAY_PROBE_UP_AFTER = envint("GATEWAY_PROBE_UP_AFTER", 2, minimum=1)
GATEWAY_PROBE_HISTORY = envint("GATEWAY_PROBE_HISTORY", 20, minimum=1)
# Redis outages and hangs (docs/reliability.md): a request waits for Redis at most this long;
# after a failure Redis is skipped (local state used) for GATEWAY_REDIS_RETRY_SECONDS.
GATEWAY_REDIS_TIMEOUT_SECONDS = envfloat("GATEWAY_REDIS_TIMEOUT_SECONDS", 0.05, minimum=0.001)
GATEWAY_REDIS_RETRY_SECONDS = envfloat("GATEWAY_REDIS_RETRY_SECONDS", 2.0, minimum=0.1)
GATEWAY_REDIS_LOG_SUMMARY_SECONDS = envfloat("GATEWAY_REDIS_LOG_SUMMARY_SECONDS", 60.0, minimum=1.0)
# Reserved capacity shared through Redis (gateway/hotpath/capacity_slots.py): an instance found
# full counts as saturated in this process at least this long (throughput: until its window has
# room, if longer). Below the floor nearly every request that spills asks Redis first.
GATEWAY_CAPACITY_FULL_SECONDS = envfloat("GATEWAY_CAPACITY_FULL_SECONDS", 0.1, minimum=0.01)
# The response cache (gateway/hotpath/cache.py; on per balancer): answers larger than this are not
# cached; the semantic index keeps this many prompts per balancer and key in each process; each
# process keeps the answers it stored or read last (at most this many, and this many bytes) in
# front of Redis, or instead of it in embedded mode. A cache look-up waits for Redis up to
# GATEWAY_REDIS_TIMEOUT_SECONDS plus the event loop's current lag, at most this much lag.
GATEWAY_CACHE_MAX_ENTRY_BYTES = envint("GATEWAY_CACHE_MAX_ENTRY_BYTES", 256 * 1024, minimum=1024)
GATEWAY_CACHE_SEMANTIC_ENTRIES = envint("GATEWAY_CACHE_SEMANTIC_ENTRIES", 512, minimum=1)
GATEWAY_CACHE_LOCAL_ENTRIES = envint("GATEWAY_CACHE_LOCAL_ENTRIES", 1000, minimum=1)
GATEWAY_CACHE_LOCAL_BYTES = envint("GATEWAY_CACHE_LOCAL_BYTES", 32 * 1024 * 1024, minimum=0)
GATEWAY_CACHE_LAG_ALLOWANCE_SECONDS = envfloat(
    "GATEWAY_CACHE_LAG_ALLOWANCE_SECONDS", 0.5, minimum=0.0
)
# /readyz: the dependencies checked (beside the routing snapshot) must answer within this bound;
# a verdict is kept this long. docs/deploy.md says when to check fewer.
GATEWAY_READY_TIMEOUT_SECONDS = envfloat("GATEWAY_READY_TIMEOUT_SECONDS", 0.5, minimum=0.01)
GATEWAY_READY_CACHE_SECONDS = envfloat("GATEWAY_READY_CACHE_SECONDS", 1.0, minimum=0.0)
GATEWAY_READY_CHECKS = envlist("GATEWAY_READY_CHECKS", ["database", "redis"])
if not set(GATEWAY_READY_CHECKS) <= {"database", "redis"}:
    raise ImproperlyConfigured(
        f"GATEWAY_READY_CHECKS may name database and redis, got {GATEWAY_READY_CHECKS!r}"
    )
# Usage rollups: hourly sums for the usage page, every GATEWAY_ROLLUP_SECONDS (Celery beat in
# production, the gateway's tick in embedded mode); raw events are kept this many days (0: forever).
GATEWAY_ROLLUP_SECONDS = envfloat("GATEWAY_ROLLUP_SECONDS", 60.0, minimum=1.0)
GATEWAY_USAGE_RETENTION_DAYS = envint("GATEWAY_USAGE_RETENTION_DAYS", 30, minimum=0)
# /v1/responses: answers made with store (OpenAI's default) are kept this many days for
# previous_response_id and GET /v1/responses/{id}, scoped to their key; 0 turns storing off.
GATEWAY_RESPONSES_RETENTION_DAYS = envint("GATEWAY_RESPONSES_RETENTION_DAYS", 30, minimum=0)
# An upstream-reported token count above this (or negative, or fractional) is dropped for the
# gateway's own estimate, noted on the usage event (gateway/upstream/answers.py).
GATEWAY_MAX_REPORTED_TOKENS = envint("GATEWAY_MAX_REPORTED_TOKENS", 10_000_000, minimum=1000)

# Budgets and cost anomalies (docs/cost.md). Budget counters are made exact from the usage
# events every GATEWAY_BUDGET_RECONCILE_SECONDS; budget warnings, budgets reached and cost
# anomalies are POSTed as JSON to GATEWAY_ALERT_WEBHOOK_URL (empty: shown on the pages only),
# each POST bounded by GATEWAY_ALERT_WEBHOOK_TIMEOUT_SECONDS and retried with back-off.
GATEWAY_BUDGET_RECONCILE_SECONDS = envfloat("GATEWAY_BUDGET_RECONCILE_SECONDS", 60.0, minimum=1.0)
GATEWAY_ALERT_WEBHOOK_URL = envstr("GATEWAY_ALERT_WEBHOOK_URL", "")
GATEWAY_ALERT_WEBHOOK_TIMEOUT_SECONDS = envfloat(
    "GATEWAY_ALERT_WEBHOOK_TIMEOUT_SECONDS", 5.0, minimum=0.1
)
GATEWAY_ALERT_DELIVERY_SECONDS = envfloat("GATEWAY_ALERT_DELIVERY_SECONDS", 30.0, minimum=1.0)
# The hourly anomaly job: an hour is an anomaly above median + max(k x 1.4826 x MAD, minimum
# excess) of its own baseline (up to GATEWAY_ANOMALY_BASELINE_HOURS before it, at least
# GATEWAY_ANOMALY_MIN_HISTORY_HOURS of them).
GATEWAY_ANOMALY_SECONDS = 3600.0  # embedded mode's interval; Celery beat runs it at :02
GATEWAY_ANOMALY_K = envfloat("GATEWAY_ANOMALY_K", 3.5, minimum=0.5)
GATEWAY_ANOMALY_BASELINE_HOURS = envint("GATEWAY_ANOMALY_BASELINE_HOURS", 168, minimum=2)
GATEWAY_ANOMALY_MIN_HISTORY_HOURS = envint("GATEWAY_ANOMALY_MIN_HISTORY_HOURS", 24, minimum=1)
GATEWAY_ANOMALY_MIN_SPEND_USD = envfloat("GATEWAY_ANOMALY_MIN_SPEND_USD", 0.5, minimum=0.0)
GATEWAY_ANOMALY_MIN_REQUESTS = envint("GATEWAY_ANOMALY_MIN_REQUESTS", 50, minimum=0)

# Observability (docs/deploy.md "Observability"). Logs: one JSON object a line (`json`, the default
# outside embedded mode) or plain text (`text`, the default in `make run`); one line per /v1 request
# unless GATEWAY_REQUEST_LOG is off. /metrics: the bearer token, or a client in the networks
# (loopback
# only when neither is set).
GATEWAY_LOG_FORMAT = envstr(
    "GATEWAY_LOG_FORMAT",
    "text" if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3" else "json",
)
if GATEWAY_LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(
        f"GATEWAY_LOG_FORMAT must be json or text, got {GATEWAY_LOG_FORMAT!r}"
    )
GATEWAY_REQUEST_LOG = envbool("GATEWAY_REQUEST_LOG", True)
GATEWAY_METRICS = envbool(
    "GATEWAY_METRICS", True
)  # off: /metrics answers 404 and nothing is counted
GATEWAY_METRICS_TOKEN = envstr("GATEWAY_METRICS_TOKEN", "")
GATEWAY_METRICS_ALLOW_NETWORKS = envlist("GATEWAY_METRICS_ALLOW_NETWORKS", [])
for _network in GATEWAY_METRICS_ALLOW_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as exc:
        raise ImproperlyConfigured(f"GATEWAY_METRICS_ALLOW_NETWORKS: {exc}") from None

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.orjson.OrjsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    # Every record leaves with the upstream API keys scrubbed out (gateway/hotpath/scrub.py).
    "filters": {"scrub_secrets": {"()": "gateway.hotpath.scrub.SecretFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if GATEWAY_LOG_FORMAT == "json" else "plain",
            "filters": ["scrub_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    # axes: lockouts and repeated failures are warnings; its start banner and each login are not
    # news.
    "loggers": {"django.request": {"level": "ERROR"}, "axes": {"level": "WARNING"}},
}
# The gateway reads request bodies itself and answers 413 past GATEWAY_MAX_BODY_BYTES.
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY_MAX_BODY_BYTES
# Lets concurrent test runs on one machine use separate test databases.
if envstr("TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": envstr("TEST_DATABASE_NAME")}
