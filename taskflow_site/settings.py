"""TaskFlow settings.

Everything comes from the environment (see `.env.example`). With nothing set TaskFlow
runs embedded: SQLite, local media, kombu's filesystem broker and a local-memory cache,
all under `var/`. Setting DATABASE_URL, REDIS_URL and the S3 variables switches to the
real stack. Bad values fail loudly at start-up (ImproperlyConfigured), never later.
"""

import logging
import re
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from apps.core.logging import configure_structlog, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.str(name, default=default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def env_positive_int(name: str, default: int) -> int:
    try:
        value = env.int(name, default=default)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a whole number: {exc}") from None
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be positive; got {value}")
    return value


def env_non_negative_int(name: str, default: int) -> int:
    try:
        value = env.int(name, default=default)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a whole number: {exc}") from None
    if value < 0:
        raise ImproperlyConfigured(f"{name} must be 0 or more; got {value}")
    return value


def env_rate(name: str, default: str) -> str:
    """A rate limit such as "600/min": a count per s, min, hour or day."""
    value = env.str(name, default=default).strip()
    if not re.fullmatch(r"[1-9]\d*/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(f"{name} must look like 600/min (a count per s, min, hour or day); got {value!r}")
    return value


# Local files of this installation (the embedded mode's database, media and broker, beat's
# lock). Settings only name folders; apps/core/apps.py creates them when Django starts.
VAR_DIR = Path(env.str("TASKFLOW_VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off")
    SECRET_KEY = "dev-only-insecure-key-never-use-in-production-0123456789abcdef"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "django_celery_beat",
    "storages",
    "django_structlog",
    "apps.core",
    "apps.accounts",
    "apps.tasks",
    "apps.files",
    "apps.webhooks",
]

MIDDLEWARE = [
    # First: one observation per request, by view, method and status (apps/core/metrics.py).
    "apps.core.middleware.RequestMetricsMiddleware",
    # A request id for every response, static files included; see apps/core/middleware.py.
    "apps.core.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's session, authentication and messages middlewares, run for every request but
    # /api/ calls that carry an Authorization header (apps/core/browser_middleware.py).
    "apps.core.browser_middleware.SessionMiddleware",
    # /api/ paths answer without their trailing slash too, never with a redirect.
    "apps.core.middleware.ApiTrailingSlashMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "apps.core.browser_middleware.AuthenticationMiddleware",
    # Binds request_id and user_id for every log line of the request; logs request_finished.
    "django_structlog.middlewares.RequestMiddleware",
    # NUL in a query parameter is a 400 for every view, API and admin: apps/core/middleware.py.
    "apps.core.middleware.UnstorableQueryMiddleware",
    "apps.core.browser_middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "taskflow_site.urls"
WSGI_APPLICATION = "taskflow_site.wsgi.application"
ASGI_APPLICATION = "taskflow_site.asgi.application"

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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'taskflow.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one SQLite file in the embedded mode: WAL lets readers
    # and one writer overlap, IMMEDIATE takes the write lock up front (no deadlocking
    # upgrade from a read lock) and the timeout waits for it instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    # Keep connections between requests and tasks; check them before reuse.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Parameters bound on the server, and a statement run a few times on one connection is
# prepared there (psycopg's prepare_threshold): the hot path's submit, claim and finish are
# then only executed, not parsed and planned again. Turn off behind a connection pooler in
# transaction mode that does not keep prepared statements (PgBouncer before 1.21): then
# Django's defaults, client-side binding and nothing prepared.
DATABASE_PREPARED_STATEMENTS = env.bool("DATABASE_PREPARED_STATEMENTS", default=True)
if DATABASE_PREPARED_STATEMENTS and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
# Django's own backends: no per-statement metric (django-prometheus' backend wrapper made a
# labelled update, a file write in multiprocess mode, for every statement of the hot paths).
# Slow statements are PostgreSQL's to report (log_min_duration_statement, pg_stat_statements).
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, broker and rate-limit store -------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "taskflow",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Files ------------------------------------------------------------------------------
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="") or None
AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="")
AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="")
AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="us-east-1")
MEDIA_ROOT = VAR_DIR / "media"
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
if AWS_STORAGE_BUCKET_NAME:
    default_storage = {
        # S3Storage that keeps objects' bytes as uploaded (no Content-Encoding guessed from names).
        "BACKEND": "apps.files.s3.ObjectStorage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": AWS_S3_ENDPOINT_URL,
            "access_key": AWS_ACCESS_KEY_ID,
            "secret_key": AWS_SECRET_ACCESS_KEY,
            "region_name": AWS_S3_REGION_NAME,
            "addressing_style": env_choice("AWS_S3_ADDRESSING_STYLE", "path", ("path", "virtual", "auto")),
            "signature_version": "s3v4",
            # Keys are generated by TaskFlow and unique; never silently rename or overwrite.
            "file_overwrite": False,
            "querystring_expire": env_positive_int("FILES_URL_EXPIRE_SECONDS", 300),
            "default_acl": None,
        },
    }
else:
    default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": default_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Auth -------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # simplejwt's, and API keys; both remember active users and keys per process for
        # AUTH_CACHE_SECONDS (apps/accounts/authentication.py).
        "apps.accounts.authentication.JWTAuthentication",
        "apps.accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        # DRF's, refusing JSON nested past apps.core.parsers.MAX_JSON_DEPTH levels and text
        # PostgreSQL cannot store (NUL, lone surrogates) with a 400 naming the field.
        "apps.core.parsers.JSONParser",
        "apps.core.parsers.MultiPartParser",
        "apps.core.parsers.FormParser",
    ],
    # django-filter, with `?status=` (an empty value) a 400 rather than no filter at all.
    "DEFAULT_FILTER_BACKENDS": ["apps.core.filters.FilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.CreatedCursorPagination",
    "PAGE_SIZE": 20,
    # drf-spectacular's, plus the error responses every operation can give (apps/core/schema.py).
    "DEFAULT_SCHEMA_CLASS": "apps.core.schema.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.api_errors.api_exception_handler",
    # Rates per bucket: RATE_LIMITS below. register/token/token refresh use AuthRateThrottle.
    "DEFAULT_THROTTLE_CLASSES": ["apps.core.throttling.ApiRateThrottle"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# A web process remembers the users and API keys it authenticated for this long (seconds): a
# key revoked or a user deactivated elsewhere keeps working in it for at most this delay
# (at once in the process that did it). 0: every API call looks its credential up.
AUTH_CACHE_SECONDS = env_non_negative_int("AUTH_CACHE_SECONDS", 5)

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_positive_int("JWT_ACCESS_MINUTES", 15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_positive_int("JWT_REFRESH_DAYS", 7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "USER_ID_FIELD": "id",
    "AUTH_HEADER_TYPES": ("Bearer",),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "TaskFlow API",
    "DESCRIPTION": "Submit, track, retry and cancel background tasks; upload and download files.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # One named enum per choice set, whichever fields use it.
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "apps.tasks.models.TaskStatus",
        "TaskPriorityEnum": "apps.tasks.models.TaskPriority",
        "DeliveryStatusEnum": "apps.webhooks.models.DeliveryStatus",
        "WebhookEventEnum": "apps.webhooks.models.WebhookEvent",
    },
}

# --- Celery -----------------------------------------------------------------------------
# Longest time limit any task kind may ask for; the visibility timeout stays above it.
TASK_MAX_TIMEOUT = 3600
# Every non-default below serves "no accepted task is lost"; see taskflow_site/celery.py.
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    if REDIS_URL.startswith("redis://"):
        # kombu's Redis transport, keeping its client instead of making one per command.
        CELERY_BROKER_TRANSPORT = "taskflow_site.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Redis re-delivers an unacked message after this long: above the longest task
        # time limit, so a slow task is never handed to a second worker.
        "visibility_timeout": 2 * TASK_MAX_TIMEOUT,
    }
else:
    broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(broker_dir / "queue"),
        "data_folder_out": str(broker_dir / "queue"),
        "processed_folder": str(broker_dir / "processed"),
        "control_folder": str(broker_dir / "control"),
        "store_processed": False,
        # The transport lists the queue folder, then sleeps this long whenever it got nothing,
        # including while every pool slot is busy: at kombu's default of 1 s each slot ran one
        # task a second however many were waiting. A folder listing costs next to nothing.
        "polling_interval": 0.1,
    }
# Unacked messages a worker holds per pool process (Celery's default, 4): the next wake-up is
# already in hand when a run ends. A message stranded in the buffer of a worker that dies is
# not lost: unacked, Redis gives it back after the visibility timeout, and the reaper publishes
# its still-queued task again after TASK_REDISPATCH_AFTER; the claim keeps the run single
# (docs/reliability.md, "Prefetch"). 1 gives each message to the first free process.
CELERY_WORKER_PREFETCH_MULTIPLIER = env_positive_int("WORKER_PREFETCH_MULTIPLIER", 4)
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TIMEZONE = "UTC"
# django-celery-beat's database scheduler behind a lock: a second beat stands by.
CELERY_BEAT_SCHEDULER = "apps.tasks.beat:SingleBeatScheduler"
CELERY_TASK_DEFAULT_QUEUE = "default"

# --- Task engine (apps/tasks) -------------------------------------------------------------
TASK_MAX_PAYLOAD_BYTES = env_positive_int("TASK_MAX_PAYLOAD_BYTES", 256 * 1024)
TASK_BULK_MAX = env_positive_int("TASK_BULK_MAX", 1000)
# A running task holds a lease, renewed every third of it; an expired lease is a lost run.
TASK_LEASE_SECONDS = env_positive_int("TASK_LEASE_SECONDS", 30)
# A wake-up claims the fairest claimable task of its queue, round-robin across owners
# (apps/tasks/fairness.py); false claims the task it names, in the order the broker hands
# them out (the concurrency limits hold either way). For comparison in the bench.
TASK_FAIR_CLAIM = env.bool("TASK_FAIR_CLAIM", default=True)
# A queued task not claimed this long after its wake-up is published again if the broker lost it.
TASK_REDISPATCH_AFTER = env_positive_int("TASK_REDISPATCH_AFTER", 60)
# Waits shorter than this go to the broker as ETA messages; longer ones wait in the database.
TASK_DISPATCH_LOOKAHEAD = env_positive_int("TASK_DISPATCH_LOOKAHEAD", 60)
TASK_REAPER_INTERVAL = env_positive_int("TASK_REAPER_INTERVAL", 30)
TASK_DISPATCH_INTERVAL = env_positive_int("TASK_DISPATCH_INTERVAL", 10)
TASK_RETENTION_DAYS = env_positive_int("TASK_RETENTION_DAYS", 30)
# The dashboard's rollups of finished tasks (apps/tasks/rollups.py): refreshed every INTERVAL
# seconds, re-aggregating the last LAG seconds each time (finishes committed late); minute
# rows kept MINUTE_DAYS, hour rows HOUR_DAYS (beyond TASK_RETENTION_DAYS: history stays).
TASK_ROLLUP_INTERVAL = env_positive_int("TASK_ROLLUP_INTERVAL", 10)
TASK_ROLLUP_LAG_SECONDS = env_positive_int("TASK_ROLLUP_LAG_SECONDS", 120)
TASK_ROLLUP_MINUTE_DAYS = env_positive_int("TASK_ROLLUP_MINUTE_DAYS", 2)
TASK_ROLLUP_HOUR_DAYS = env_positive_int("TASK_ROLLUP_HOUR_DAYS", 400)
# A schedule run that beat has not fired this long after it was due is fired by the sweep.
SCHEDULE_CATCH_UP_AFTER = env_positive_int("SCHEDULE_CATCH_UP_AFTER", 30)
CELERY_BEAT_SCHEDULE = {
    "taskflow-fire-due-schedules": {
        "task": "taskflow.fire_due_schedules",
        "schedule": 15,
        "options": {"expires": 15},
    },
    "taskflow-reap-stale-tasks": {
        "task": "taskflow.reap_stale_tasks",
        "schedule": TASK_REAPER_INTERVAL,
        "options": {"expires": TASK_REAPER_INTERVAL},
    },
    "taskflow-dispatch-due-tasks": {
        "task": "taskflow.dispatch_due_tasks",
        "schedule": TASK_DISPATCH_INTERVAL,
        "options": {"expires": TASK_DISPATCH_INTERVAL},
    },
    "taskflow-refresh-task-rollups": {
        "task": "taskflow.refresh_task_rollups",
        "schedule": TASK_ROLLUP_INTERVAL,
        "options": {"expires": TASK_ROLLUP_INTERVAL},
    },
    "taskflow-delete-old-tasks": {
        "task": "taskflow.delete_old_tasks",
        "schedule": 24 * 3600,
        "options": {"expires": 3600},
    },
    "taskflow-delete-stale-pending-uploads": {
        "task": "taskflow.delete_stale_pending_uploads",
        "schedule": 24 * 3600,
        "options": {"expires": 3600},
    },
    "taskflow-send-due-webhooks": {
        "task": "taskflow.send_due_webhooks",
        "schedule": 30,
        "options": {"expires": 30},
    },
    "taskflow-flush-expired-tokens": {
        "task": "taskflow.flush_expired_tokens",
        "schedule": 24 * 3600,
        "options": {"expires": 3600},
    },
}

# --- Webhooks (apps/webhooks) -------------------------------------------------------------
# Hosts (or host:port) a webhook may reach although they resolve to private or loopback
# addresses; for local development and tests only.
WEBHOOK_ALLOWED_HOSTS = env.list("WEBHOOK_ALLOWED_HOSTS", default=[])
WEBHOOK_TIMEOUT = env.float("WEBHOOK_TIMEOUT", default=5.0)
# 14 attempts with a 10 s base and a 6 h cap spread over about a day.
WEBHOOK_MAX_ATTEMPTS = env_positive_int("WEBHOOK_MAX_ATTEMPTS", 14)
WEBHOOK_RETRY_BASE = env.float("WEBHOOK_RETRY_BASE", default=10.0)
WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES = env_positive_int("WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES", 5)

# --- Email ------------------------------------------------------------------------------
# smtp://user:password@host:587/?tls=True, consolemail://, or filemail://var/mail (a path
# relative to the project; filemail:////abs/path for an absolute one).
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
if EMAIL_CONFIG.get("EMAIL_FILE_PATH"):
    EMAIL_CONFIG["EMAIL_FILE_PATH"] = str(BASE_DIR / EMAIL_CONFIG["EMAIL_FILE_PATH"])
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="TaskFlow <taskflow@localhost>")

# --- Security (strict whenever DEBUG is off) ---------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
# Health probes come over plain HTTP from the orchestrator; never redirect them.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

# --- Internationalisation ---------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging ----------------------------------------------------------------------------
# structlog renders every line (see apps/core/logging.py): JSON objects or console lines,
# with request_id/user_id during requests and task_id/task_kind/request_id in workers.
LOG_FORMAT = env_choice("LOG_FORMAT", "console" if DEBUG else "json", ("console", "json"))
LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
configure_structlog()
# apps.core.middleware.RequestIdMiddleware vets X-Request-ID before django-structlog reads it.
DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = True
# One line per request at INFO: request_finished (with the duration and user agent, see
# apps.core.logging.describe_finished_request); request_started comes back with LOG_LEVEL=debug.
DJANGO_STRUCTLOG_STATUS_START_LOG_LEVEL = logging.DEBUG
# The client IP is bound by RequestIdMiddleware, with the same NUM_PROXIES rule as rate limits.
DJANGO_STRUCTLOG_IP_LOGGING_ENABLED = False
# Publishing a Celery task copies the bound context (request_id, user_id) into its headers.
DJANGO_STRUCTLOG_CELERY_ENABLED = True
# One line per task run at INFO, the executor's `task_run_finished` with TaskFlow's status
# (Celery's "task_succeeded" would also say so of a run that failed the task: the executor
# records failures itself). A run's start and each wake-up published are in the task's
# history; LOG_LEVEL=debug logs them too ("task_started", "task_enqueued": a bulk submission
# would otherwise write a line per task).
DJANGO_STRUCTLOG_CELERY_TASK_START_LOG_LEVEL = logging.DEBUG
DJANGO_STRUCTLOG_CELERY_TASK_SUCCESS_LOG_LEVEL = logging.DEBUG

# --- Metrics (Prometheus) -----------------------------------------------------------------
# Web: /metrics on the web port. Worker: its own endpoint on this port (0: none).
WORKER_METRICS_PORT = env_non_negative_int("WORKER_METRICS_PORT", 9808)
if WORKER_METRICS_PORT > 65535:
    raise ImproperlyConfigured(f"WORKER_METRICS_PORT must be a TCP port; got {WORKER_METRICS_PORT}")
# Set for services with several processes (gunicorn workers, Celery children): each process
# writes its metrics there and a scrape sums them. gunicorn and the worker empty it at start
# and use a directory of their own when it is unset; see apps/core/metrics.py.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
PROMETHEUS_EXPORT_MIGRATIONS = False
# Set: the web's /metrics answers only `Authorization: Bearer <token>` (401 otherwise).
# Unset: open, as for a scrape from inside the cluster. The worker's port is never
# protected: keep it on the cluster network (see docs/operating.md "Metrics").
METRICS_TOKEN = env.str("METRICS_TOKEN", default="").strip()

# --- Readiness ------------------------------------------------------------------------------
# /readyz asks the object store at most this often per process (0: on every call).
READYZ_STORAGE_CHECK_SECONDS = env_non_negative_int("READYZ_STORAGE_CHECK_SECONDS", 10)

# --- Rate limits (apps/core/throttling.py) ------------------------------------------------
# Per user for authenticated calls, per client IP for anonymous ones, and a stricter bucket
# per client IP for register, token and token refresh. GCRA: a full bucket allows the count
# at once, then one request every period/count.
RATE_LIMITS = {
    "user": env_rate("RATE_LIMIT_USER", "600/min"),
    "anon": env_rate("RATE_LIMIT_ANON", "60/min"),
    "auth": env_rate("RATE_LIMIT_AUTH", "10/min"),
}
# Reverse proxies in front of TaskFlow that append to X-Forwarded-For. 0: the client is the
# connection's address (REMOTE_ADDR); behind one ingress or load balancer: 1.
NUM_PROXIES = env_non_negative_int("NUM_PROXIES", 0)

# --- Live task events (apps/tasks/streams.py) -----------------------------------------------
# Server-sent event streams one user may hold open at once, across every process.
STREAMS_PER_USER = env_positive_int("STREAMS_PER_USER", 10)

# --- Quotas (apps/accounts/services.py) ------------------------------------------------------
# What one owner may hold, unless staff set the user's own figure in the admin (Quotas):
# tasks not yet final (over it: 429 on submit), schedules and webhook endpoints (over it: 400),
# and the shortest time between a schedule's runs for a user who is not staff.
QUOTAS = {
    "tasks_not_final": env_positive_int("QUOTA_TASKS_NOT_FINAL", 100_000),
    "schedules": env_positive_int("QUOTA_SCHEDULES", 100),
    "schedule_min_interval_seconds": env_non_negative_int("QUOTA_SCHEDULE_MIN_INTERVAL_SECONDS", 60),
    "webhook_endpoints": env_positive_int("QUOTA_WEBHOOK_ENDPOINTS", 10),
}

# --- TaskFlow ---------------------------------------------------------------------------
TASKFLOW_DEMO_EMAIL = env.str("TASKFLOW_DEMO_EMAIL", default="admin@taskflow.local")
TASKFLOW_DEMO_PASSWORD = env.str("TASKFLOW_DEMO_PASSWORD", default="taskflow-admin")

# --- Files (apps/files) ---------------------------------------------------------------
# Multipart uploads through TaskFlow (POST /api/files/); anything larger is a 413.
FILES_MAX_UPLOAD_BYTES = env_positive_int("FILES_MAX_UPLOAD_BYTES", 100 * 1024 * 1024)
# Presigned uploads go straight to the object store: 5 GiB is S3's limit for one POST.
FILES_MAX_PRESIGNED_UPLOAD_BYTES = env_positive_int("FILES_MAX_PRESIGNED_UPLOAD_BYTES", 5 * 1024**3)
FILES_PRESIGN_EXPIRE_SECONDS = env_positive_int("FILES_PRESIGN_EXPIRE_SECONDS", 300)
# `complete` hashes uploads up to this size itself; larger ones get a files.checksum task.
FILES_INLINE_HASH_MAX_BYTES = env_positive_int("FILES_INLINE_HASH_MAX_BYTES", 64 * 1024 * 1024)
# Presigned uploads never completed are deleted (object and row) by a daily job after this.
FILES_PENDING_UPLOAD_MAX_AGE_SECONDS = env_positive_int("FILES_PENDING_UPLOAD_MAX_AGE_SECONDS", 24 * 3600)
if FILES_PENDING_UPLOAD_MAX_AGE_SECONDS <= FILES_PRESIGN_EXPIRE_SECONDS:
    raise ImproperlyConfigured(
        "FILES_PENDING_UPLOAD_MAX_AGE_SECONDS must be longer than FILES_PRESIGN_EXPIRE_SECONDS, "
        "or the clean-up deletes uploads that are still allowed to arrive"
    )
# The S3 endpoint as API clients reach it, when that differs from AWS_S3_ENDPOINT_URL (in
# docker-compose MinIO is http://minio:9000 inside, http://localhost:9000 outside).
# Presigned URLs are signed for this host.
FILES_S3_PUBLIC_ENDPOINT_URL = env.str("FILES_S3_PUBLIC_ENDPOINT_URL", default="") or None
# JSON bodies and non-file form fields are held in memory up to this size (bulk task
# submissions included); file parts do not count against it.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# Uploaded files above this are spooled to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# The daily clean-up of pending uploads is "taskflow-delete-stale-pending-uploads" in
# CELERY_BEAT_SCHEDULE above.
