"""Settings for tformance, read from the environment with safe local defaults.

Every setting the README documents is read here and nowhere else.
"""

import os
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet

from apps.integrations.logs import LOG_FORMATS, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _required_secret(name: str, dev_default: str) -> str:
    """A secret that production must set; development may fall back with a warning.

    A missing secret exits with one line rather than an ImproperlyConfigured traceback:
    operators see the fix, not Django's internals.
    """
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if DEBUG:
        warnings.warn(
            f"{name} is not set; using an insecure development default (DEBUG is on)",
            stacklevel=2,
        )
        return dev_default
    sys.exit(f"error: {name} is not set (required when DEBUG is off); see README.md 'Settings'")


DEBUG = _env_bool("DEBUG", default=False)

SECRET_KEY = _required_secret("SECRET_KEY", "django-insecure-development-only-key")

# Comma-separated Fernet keys: the first encrypts, every key decrypts (key rotation).
# The development default is a fixed, public key: never use it for real tokens.
FIELD_ENCRYPTION_KEY = [
    key.strip()
    for key in _required_secret(
        "FIELD_ENCRYPTION_KEY", "ZGV2LW9ubHkta2V5LW5ldmVyLXVzZS1mb3ItcmVhbCE="
    ).split(",")
    if key.strip()
]
# Checked here, not on first use, so a malformed key stops start-up with one line instead of
# failing the first sync with a traceback. The message never echoes the key.
try:
    if not FIELD_ENCRYPTION_KEY:
        raise ValueError
    for _key in FIELD_ENCRYPTION_KEY:
        Fernet(_key.encode())
except (ValueError, TypeError):
    sys.exit(
        "error: FIELD_ENCRYPTION_KEY must be comma-separated Fernet keys "
        "(url-safe base64 of 32 bytes); see README.md 'Settings'"
    )

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
if DEBUG and not ALLOWED_HOSTS:
    ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_dramatiq",
    "apps.teams",
    "apps.integrations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tformance.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "tformance.wsgi.application"
ASGI_APPLICATION = "tformance.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", "").strip() or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (CLI, workers) write the same file: WAL lets readers run beside the
    # writer, the busy timeout waits for a lock instead of failing with "database is locked",
    # and IMMEDIATE transactions take the write lock up front, so two writers never deadlock
    # upgrading read locks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Opening a SQLite connection (Django registers its SQL functions on each) costs about
    # 1.5 ms, as much as a webhook delivery's own work: `make serve` keeps connections
    # (gunicorn.conf.py sets 60); other processes close them after each message or command.
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("DATABASE_CONN_MAX_AGE", "0"))
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A new PostgreSQL connection costs a server process and a few round trips: each worker
    # thread keeps its connection for a while (django-dramatiq closes it between messages
    # only once it is older), and the health check replaces one that the server or a
    # failover dropped meanwhile instead of failing the next message with it.
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("DATABASE_CONN_MAX_AGE", "60"))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # An unreachable server fails a command or message in seconds, not after the operating
    # system's TCP timeout of minutes. A ?connect_timeout= in DATABASE_URL wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", int(os.environ.get("DATABASE_CONNECT_TIMEOUT", "10"))
    )

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
STATIC_ROOT = BASE_DIR / "staticfiles"

REDIS_URL = os.environ.get("REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0"

# Dramatiq on Redis. django-dramatiq installs no middleware unless listed, so the list is
# explicit. Order matters for after-hooks, which run in reverse: Retries is last so it decides
# first (retry or fail), then the sync outcome middleware records that decision, then
# DbConnectionsMiddleware tidies the connection the recording used.
DRAMATIQ_BROKER = {
    "BROKER": "apps.integrations.broker.SyncRedisBroker",
    "OPTIONS": {
        "url": REDIS_URL,
        # How long a silent worker is trusted before its unacked messages are requeued, and
        # how often (1 in N broker commands) that check runs. Lowered by tests.
        "heartbeat_timeout": int(os.environ.get("DRAMATIQ_HEARTBEAT_TIMEOUT_MS", "60000")),
        "maintenance_chance": int(os.environ.get("DRAMATIQ_MAINTENANCE_CHANCE", "1000")),
    },
    "MIDDLEWARE": [
        # Dramatiq's Prometheus middleware, when WORKER_METRICS is on (first: its timing
        # after-hook runs last, around every other middleware).
        "apps.integrations.metrics.WorkerMetrics",
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.ShutdownNotifications",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.CurrentMessage",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
        "apps.integrations.middleware.SyncOutcomeMiddleware",
        "dramatiq.middleware.Retries",
    ],
}
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]
# Worker processes export Dramatiq's and the sync's metrics for Prometheus, one exporter per
# worker group on dramatiq_prom_host:dramatiq_prom_port (Dramatiq's own variables, 0.0.0.0:9191)
# from the files in dramatiq_prom_db. Off by default: the port is the operator's to give.
WORKER_METRICS = _env_bool("WORKER_METRICS", default=False)
# GET /metrics (fleet state and the web process's own metrics): with a token set, only for
# "Authorization: Bearer <METRICS_TOKEN>". Empty: open to whoever reaches the web process.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "").strip()

# One sync per repository: a sync holds a lease on its repository row, renewed as it works.
# A worker killed mid-sync frees it when the lease runs out.
SYNC_LEASE_SECONDS = int(os.environ.get("SYNC_LEASE_SECONDS", "90"))
# Work one message does before it checkpoints and re-enqueues itself (TimeLimit stays far).
SYNC_MESSAGE_TIME_BUDGET_SECONDS = int(os.environ.get("SYNC_MESSAGE_TIME_BUDGET_SECONDS", "300"))
# After how long the sweep takes a repository still "queued" (or "rate_limited" past its retry
# time) for one whose message is lost, and sends another. Above the longest wait the task
# layer schedules itself (a retry's backoff: 10 min) and the time a daily fan-out takes to
# drain; a message merely slower than this gets a duplicate that the lease drops or that
# ends at its first request, a free 304.
SYNC_STUCK_AFTER_SECONDS = int(os.environ.get("SYNC_STUCK_AFTER_SECONDS", "3600"))

# Periodic tasks for `python -m scheduler`: "task" is the dotted path of an actor, "schedule"
# a timedelta or a 5-field crontab string (UTC), "expire_seconds" the message's max age.
SCHEDULED_TASKS = {
    "sync-github-repositories-every-day": {
        "task": "apps.integrations.tasks.sync_all_repositories",
        "schedule": os.environ.get("SYNC_SCHEDULE", "").strip() or "0 3 * * *",
        "expire_seconds": 60 * 60,
    },
    # Statuses nothing will change any more (a lost message, a dead worker, a fan-out that
    # stopped halfway): sent again, or set to what is true. A run not started within its
    # interval is dropped: the next one does the same work.
    "sweep-stuck-repositories": {
        "task": "apps.integrations.tasks.sweep_stuck_repositories",
        "schedule": timedelta(minutes=5),
        "expire_seconds": 5 * 60,
    },
    # GitHub retries no failed webhook delivery: redeliver them while GitHub still can (three
    # days), and sync what cannot be redelivered (services/webhook_recovery.py).
    "recover-webhook-deliveries": {
        "task": "apps.integrations.tasks.recover_webhook_deliveries",
        "schedule": timedelta(minutes=5),
        "expire_seconds": 5 * 60,
    },
    # Delivery GUIDs past WEBHOOK_DELIVERY_RETENTION_DAYS: hourly, so each run deletes an
    # hour's worth in short batches.
    "prune-webhook-deliveries": {
        "task": "apps.integrations.tasks.prune_webhook_deliveries",
        "schedule": timedelta(hours=1),
        "expire_seconds": 60 * 60,
    },
}

# GitHub REST base URL: github.com, a GitHub Enterprise Server ".../api/v3", or an emulator.
GITHUB_API_URL = (os.environ.get("GITHUB_API_URL", "").strip() or "https://api.github.com").rstrip(
    "/"
)
# Seconds before a GitHub request is abandoned (PyGithub insists on an int).
GITHUB_TIMEOUT = int(os.environ.get("GITHUB_TIMEOUT", "30"))
# Minimum spacing of requests made with one token, across all workers (paced through Redis).
# GitHub's secondary limit is about 900 points a minute per endpoint: 70 ms keeps under it.
# 0 disables pacing.
GITHUB_TOKEN_MIN_INTERVAL_MS = int(os.environ.get("GITHUB_TOKEN_MIN_INTERVAL_MS", "70"))
# Random spread (seconds) added to a rate-limit deferral, so repositories sharing a token do
# not all return in the same second after the reset.
GITHUB_RATE_LIMIT_JITTER_SECONDS = float(os.environ.get("GITHUB_RATE_LIMIT_JITTER_SECONDS", "30"))
# Share of each token's hourly budget (REST and GraphQL alike) that bulk syncs (the daily
# fan-out, the sweep, their continuations) leave untouched, so an operator's "sync now" and
# webhooks still find budget; interactive syncs may spend it down to 0.
try:
    GITHUB_RATE_RESERVE_FRACTION = float(os.environ.get("GITHUB_RATE_RESERVE_FRACTION", "0.10"))
except ValueError:
    GITHUB_RATE_RESERVE_FRACTION = -1.0
if not 0 <= GITHUB_RATE_RESERVE_FRACTION < 1:
    sys.exit("error: GITHUB_RATE_RESERVE_FRACTION must be a number from 0 up to (not including) 1")
# Requests (GraphQL: points) one repository sync is assumed to spend, to spread repositories
# deferred to one reset over the windows after it (services.rate_budget). An incremental sync
# with changes costs about 3 (listing, details, the ETag page); an idle one 0 or 1.
try:
    GITHUB_RATE_COST_PER_SYNC = int(os.environ.get("GITHUB_RATE_COST_PER_SYNC", "3"))
except ValueError:
    GITHUB_RATE_COST_PER_SYNC = 0
if GITHUB_RATE_COST_PER_SYNC < 1:
    sys.exit("error: GITHUB_RATE_COST_PER_SYNC must be a whole number of at least 1")
# How a sync fetches the detail fields of changed PRs: "graphql" (up to 100 PRs per query, about
# one rate-limit point) or "rest" (one GET per PR; for servers without GraphQL).
GITHUB_PR_DETAILS = os.environ.get("GITHUB_PR_DETAILS", "graphql").strip().lower()
if GITHUB_PR_DETAILS not in {"graphql", "rest"}:
    sys.exit("error: GITHUB_PR_DETAILS must be 'graphql' or 'rest'")
# How far back a first (full) sync reaches.
GITHUB_SYNC_DAYS_BACK = int(os.environ.get("GITHUB_SYNC_DAYS_BACK", "90"))

# Webhook secrets, comma-separated like FIELD_ENCRYPTION_KEY: the first is given to hooks the
# product registers, every one is accepted on deliveries (rotation: prepend the new secret,
# re-register, drop the old one once no hook uses it). Empty: webhooks are off and every
# delivery is refused (nothing unsigned is trusted).
GITHUB_WEBHOOK_SECRETS = [
    secret.strip()
    for secret in os.environ.get("GITHUB_WEBHOOK_SECRET", "").split(",")
    if secret.strip()
]
# The receiver's public URL, for the admin's "Register webhooks" action and the default of
# `manage.py register_webhooks --url`.
GITHUB_WEBHOOK_URL = os.environ.get("GITHUB_WEBHOOK_URL", "").strip()
# How long delivery GUIDs are kept to recognise a redelivery: GitHub redelivers for 3 days.
WEBHOOK_DELIVERY_RETENTION_DAYS = int(os.environ.get("WEBHOOK_DELIVERY_RETENTION_DAYS", "7"))

# Log lines: "text" for people (default), "json" for a log pipeline (one object per line).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "").strip().lower() or "text"
if LOG_FORMAT not in LOG_FORMATS:
    sys.exit("error: LOG_FORMAT must be 'text' or 'json'")
LOGGING = logging_config(log_format=LOG_FORMAT, level=os.environ.get("LOG_LEVEL", "INFO"))
