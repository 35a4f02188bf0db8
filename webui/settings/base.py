"""Settings every deployment shares: apps, middleware, templates, REST framework, Celery names.

Read by Django at start-up in the web process, the Celery worker and the ``postern`` CLI.
Reads ``POSTERN_STATE`` (the state directory, as every daemon does through
``mta.common.paths.StateDir``). Trusts its environment; nothing here comes from a user.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from mta.common.paths import StateDir

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # webui/

# webui/templates is a symlink to the top-level templates/ (DESIGN.md layout) so that a
# non-editable ``pip install .`` ships the templates as package data of webui.
TEMPLATE_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"

STATE = StateDir.from_arg(os.environ.get("POSTERN_STATE"))
# Where the publisher writes (tests point it at a tmp_path); status.sock and the delivery log
# are read from the same state directory.
POSTERN_CONTROL_DIR = STATE.control
POSTERN_STATUS_SOCKET = STATE.status_socket
POSTERN_LOG_DIR = STATE.log


def secret_key_from_state(state: StateDir) -> str:
    """The embedded secret key: generated once into ``<state>/secret_key`` (mode 0600)."""
    path = state.root / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


DEBUG = False
ALLOWED_HOSTS = [h for h in os.environ.get("POSTERN_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
                 .split(",") if h]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "webui.core",
    "webui.accounts",
    "webui.domains",
    "webui.mailboxes",
    "webui.aliases",
    "webui.relay",
    "webui.access",
    "webui.control",
    "webui.publish",
    "webui.queue",
    "webui.audit",
    "webui.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "webui.accounts.middleware.SecondFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webui.urls"
WSGI_APPLICATION = "webui.wsgi.application"

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [TEMPLATE_DIR],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
        "webui.core.context.publish_status",
    ]},
}]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": 8}},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [STATIC_DIR]
STATIC_ROOT = str(STATE.root / "static")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Login throttling (webui/accounts/throttle.py): this many failures per username or per
# client address within the window lock further attempts until the window passes.
LOGIN_MAX_FAILURES = 5
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "webui.api.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["webui.api.permissions.TokenScopePermission"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "webui.api.pagination.StrictLimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Postern provisioning API",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "webui.api.schema.add_error_responses"],
}

# Celery (webui/celery.py reads every CELERY_* name). Tasks are idempotent; acks_late is set
# per task where a rerun changes nothing.
# Each node consumes its own queue (DESIGN.md "Beyond one machine"); POSTERN_NODE names it.
POSTERN_NODE = os.environ.get("POSTERN_NODE", "local")
CELERY_TASK_DEFAULT_QUEUE = f"postern.{POSTERN_NODE}"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE = {
    "sample-queue-summary": {"task": "webui.queue.tasks.sample_queue_summary",
                             "schedule": 60.0},
    "publish-if-stale": {"task": "webui.publish.tasks.publish_if_stale", "schedule": 60.0},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {"postern": {"level": "INFO"}},
}
