"""Structured logs through structlog, for TaskFlow's own lines and every library's.

One line per event: JSON objects (`LOG_FORMAT=json`, the default when DEBUG is off) or
readable console lines. Whatever is bound with `structlog.contextvars` is added to every
line, including lines written through the standard `logging` module: `request_id`, `ip`
and `user_id` during a request (apps.core.middleware and django-structlog), and in a Celery
worker `task_id`, `task_kind` and the `request_id` of the request that submitted the task
(django-structlog carries it in the message headers).
"""

import sys
import time

import structlog

# Run on every event, from structlog loggers and from standard `logging` records alike.
_SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def describe_finished_request(request, log_kwargs, **kwargs) -> None:
    """request_finished, the one line a request writes at INFO, says what an access log would:
    with the method, path, status, client IP, user and request id, also how long the request
    took (from RequestMetricsMiddleware, first in MIDDLEWARE) and the client's user agent."""
    started = getattr(request, "started_at", None)
    if started is not None:
        log_kwargs["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
    log_kwargs["user_agent"] = request.META.get("HTTP_USER_AGENT", "")


def configure_structlog() -> None:
    """Route structlog loggers through the standard `logging` handlers set up by LOGGING."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED_PROCESSORS,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _at_least_warning(level: str) -> str:
    """Celery's per-task lines: shown at DEBUG, hidden at INFO, as configured above that."""
    return "WARNING" if level == "INFO" else level


def logging_config(*, log_format: str, level: str) -> dict:
    """The LOGGING dict: one handler on stderr whose formatter renders JSON or console lines."""
    if log_format == "json":
        renderer = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                # Standard `logging` records: keep their `extra=` fields as keys.
                "foreign_pre_chain": [*_SHARED_PROCESSORS, structlog.stdlib.ExtraAdder()],
                "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
            },
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "structured"},
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            "celery": {"level": level},
            # One line per task run at INFO: the executor's task_run_finished, with TaskFlow's
            # own status, the task's id, kind, attempt, duration and the submitting request's id.
            # Celery's own "received" and "succeeded in" lines repeat it; they come back with debug.
            "celery.worker.strategy": {"level": _at_least_warning(level)},
            "celery.app.trace": {"level": _at_least_warning(level)},
        },
    }
