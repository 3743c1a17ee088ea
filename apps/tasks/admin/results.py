"""django-celery-results' admin for the system jobs' results, with a retry.

Retry re-sends a result's task with the arguments django-celery-results stored, when they
were stored whole and as literals (Celery keeps a repr, cut at ARGUMENTS_REPR_MAX).
"""

import ast
import json

from celery import current_app as celery_app
from django.contrib import admin, messages
from django_celery_results.admin import TaskResultAdmin as CeleryTaskResultAdmin
from django_celery_results.models import TaskResult

from apps.core.services import audited

# Celery's argsrepr_maxsize / kwargsrepr_maxsize default.
ARGUMENTS_REPR_MAX = 1024


def _has_ellipsis(value) -> bool:
    if value is Ellipsis:
        return True
    if isinstance(value, list | tuple | set):
        return any(_has_ellipsis(item) for item in value)
    if isinstance(value, dict):
        return any(_has_ellipsis(key) or _has_ellipsis(item) for key, item in value.items())
    return False


def _stored_arguments(result: TaskResult) -> tuple[list, dict]:
    """The args and kwargs django-celery-results stored (JSON of Celery's repr). ValueError if unusable."""

    def decode(raw, empty):
        if raw in (None, ""):
            return empty
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if isinstance(value, str):
            # Celery stores a repr cut at ARGUMENTS_REPR_MAX characters, ending in "...".
            if len(value) >= ARGUMENTS_REPR_MAX:
                raise ValueError("its arguments were stored truncated")
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ValueError("its arguments were stored truncated or not as literals") from None
            if _has_ellipsis(value):
                raise ValueError("its arguments were stored truncated")
        return value

    args, kwargs = decode(result.task_args, ()), decode(result.task_kwargs, {})
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise ValueError("its stored arguments are not a list and a mapping")
    return list(args), kwargs


def _send_again(results) -> tuple[list[dict], list[str]]:
    """Send each result's task again: (what was sent, why the others were not)."""
    sent, failed = [], []
    for result in results:
        if not result.task_name:
            failed.append(f"{result.task_id}: no task name was stored")
            continue
        try:
            args, kwargs = _stored_arguments(result)
        except ValueError as exc:
            failed.append(f"{result.task_id}: {exc}")
            continue
        new = celery_app.send_task(result.task_name, args=args, kwargs=kwargs)
        sent.append({"from": result.task_id, "to": new.id, "name": result.task_name})
    return sent, failed


if admin.site.is_registered(TaskResult):
    admin.site.unregister(TaskResult)


@admin.register(TaskResult)
class TaskResultAdmin(CeleryTaskResultAdmin):
    """The stock results admin, plus a retry that re-sends the task with its stored arguments."""

    actions = ["retry_results"]
    show_full_result_count = False
    list_per_page = 100

    def has_retry_permission(self, request, obj=None):
        return request.user.has_perm("tasks.retry_task")

    @admin.action(description="Retry selected (send again with the stored arguments)", permissions=["retry"])
    def retry_results(self, request, queryset):
        with audited(user=request.user, action="result.retry", object_type="django_celery_results.taskresult") as audit:
            sent, failed = _send_again(queryset)
            if sent:
                audit.update(object_ids=[item["from"] for item in sent], details={"sent": sent})
            else:
                audit.discard()
        if sent:
            self.message_user(request, f"Sent {len(sent)} task(s) again.", messages.SUCCESS)
        for problem in failed:
            self.message_user(request, f"Not retried: {problem}", messages.WARNING)
