"""The operators' admin for tasks: the list and the read-only task page.

- A task list that stays fast at millions of rows: no full COUNT(*) (EstimatedCountPaginator),
  filters whose choices need no query, each served by an index, heavy columns deferred.
- A read-only task page: transitions happen only through services, behind the buttons of
  pages.py (Retry / Cancel / Hard revoke / Submit a copy), with bulk retry and cancel.
"""

import json
import re
import uuid

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from django.db.models.functions import Substr
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django_celery_results.models import TaskResult

from apps.core.exceptions import InvalidInput
from apps.core.json_contains import contains_filter
from apps.core.pagination import EstimatedCountPaginator

from .. import dashboard, fairness
from ..forms import TaskActionForm
from ..models import CLAIMABLE_STATUSES, RETRYABLE_STATUSES, WAITING_STATUSES, Task, TaskStatus
from .filters import CreatedFilter, HasErrorFilter, KindFilter, OwnerFilter
from .pages import TaskPagesMixin
from .search import describe_error, parse_search

EVENTS_SHOWN = 200
SHORT_ID = re.compile(r"^[0-9a-fA-F]{8}$")


def _pretty_json(value):
    if value is None:
        return "—"
    return format_html('<pre class="tf-pre">{}</pre>', json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def _monospace(text: str):
    return format_html('<pre class="tf-pre">{}</pre>', text) if text else "—"


_STATUS_LABELS = dict(TaskStatus.choices)  # (the enum's own lookups were a tenth of a list page)


def status_badge(status: str, *, cancel_requested: bool = False, title: str = ""):
    label = _STATUS_LABELS.get(status, status)
    if cancel_requested and status == TaskStatus.RUNNING:
        label += " (cancel requested)"
    return format_html('<span class="tf-status tf-status-{}" title="{}">{}</span>', status, title, label)


# The columns the list shows; the rest (payload, result, traceback…) would move megabytes.
LIST_COLUMNS = (
    "id",
    "kind",
    "title",
    "status",
    "priority",
    "attempts",
    "max_retries",
    "progress",
    "cancel_requested",
    "created_at",
    "started_at",
    "finished_at",
    "owner__email",
)


class TaskChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        # The first line of the error becomes the status badge's tooltip; the rest stays on disk.
        return queryset.only(*LIST_COLUMNS).annotate(error_head=Substr("error", 1, 300))

    def get_results(self, request):
        super().get_results(request)
        if isinstance(self.result_list, QuerySet) and not self.result_list.query.is_sliced:
            # Django fetches a list that fits on one page without a LIMIT. With server-side
            # binding that statement may run on a prepared statement's generic plan, which
            # knows neither the filter's value nor that few rows match: for `status = $1`
            # (90 % of the rows succeeded, a few dozen retrying) it sorts the whole table,
            # seconds at 10M rows. With the LIMIT every plan walks the filter's index.
            self.result_list = self.result_list[: max(self.list_per_page, self.list_max_show_all)]


@admin.register(Task)
class TaskAdmin(TaskPagesMixin, admin.ModelAdmin):
    list_display = (
        "short_id",
        "title_and_kind",
        "owner_email",
        "status_column",
        "priority_column",
        "attempts_column",
        "progress_column",
        "queue_wait_column",
        "run_time_column",
        "created_column",
    )
    list_display_links = ("short_id",)
    list_filter = (
        ("status", admin.ChoicesFieldListFilter),
        KindFilter,
        ("priority", admin.ChoicesFieldListFilter),
        OwnerFilter,
        CreatedFilter,
        HasErrorFilter,
    )
    list_select_related = ("owner",)
    # get_search_results reads the term its own way (an id, an email, or title words).
    search_fields = ("title", "owner__email")
    search_help_text = (
        "A task id (whole, or its first 8 characters), words of the title, or an owner's email. "
        'Payload and result: payload.customer=42 or result.status="paid" (values are JSON: 42 is a number, '
        '"42" a string; nested keys with dots: payload.order.id=7; several terms must all match).'
    )
    # Only the creation order has an index behind every filter; other sorts would scan.
    sortable_by = ("created_column",)
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    actions = ["retry_selected", "cancel_selected"]
    action_form = TaskActionForm
    fieldsets = (
        (None, {"fields": ("id", "kind", "title", "description", "owner", "status_column", "priority", "queue")}),
        ("Origin", {"fields": ("trigger", "schedule", "idempotency_key")}),
        (
            "Progress",
            {
                "fields": (
                    "progress_column",
                    "progress_message",
                    "attempts_column",
                    "max_retries",
                    "timeout",
                    "worker",
                    "cancel_requested",
                )
            },
        ),
        (
            "Times",
            {
                "fields": (
                    "created_at",
                    "queued_at",
                    "run_at",
                    "started_at",
                    "finished_at",
                    "queue_wait_column",
                    "run_time_column",
                    "lease_expires_at",
                    "updated_at",
                )
            },
        ),
        ("Payload and result", {"fields": ("payload_json", "result_json")}),
        ("Error", {"fields": ("error_text", "traceback_text")}),
    )
    readonly_fields = (
        "status_column",
        "waiting_for",
        "progress_column",
        "attempts_column",
        "queue_wait_column",
        "run_time_column",
        "payload_json",
        "result_json",
        "error_text",
        "traceback_text",
    )

    class Media:
        css = {"all": ("admin/css/vendor/select2/select2.min.css", "admin/css/autocomplete.css", "tasks/admin.css")}
        js = (
            "admin/js/vendor/jquery/jquery.min.js",
            "admin/js/vendor/select2/select2.full.min.js",
            "admin/js/jquery.init.js",
            "admin/js/autocomplete.js",  # the owner filter (filters.OwnerSelect)
            "tasks/owner_filter.js",
        )

    def get_fieldsets(self, request, obj=None):
        """A waiting task's page says whether a concurrency limit holds it, beside its status."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or obj.status not in CLAIMABLE_STATUSES:
            return fieldsets
        (name, options), *rest = fieldsets
        fields = list(options["fields"])
        fields.insert(fields.index("status_column") + 1, "waiting_for")
        return ((name, {**options, "fields": tuple(fields)}), *rest)

    # --- Permissions: the page is read-only; transitions go through the buttons and actions ---

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # finished tasks are deleted by retention (TASK_RETENTION_DAYS)

    def has_retry_permission(self, request, obj=None):
        return request.user.has_perm("tasks.retry_task")

    def has_cancel_permission(self, request, obj=None):
        return request.user.has_perm("tasks.cancel_task")

    # --- The list ----------------------------------------------------------------------------

    def get_changelist(self, request, **kwargs):
        return TaskChangeList

    def get_search_results(self, request, queryset, search_term):
        """`payload.key=value` and `result.key=value` terms by containment (search.py), the rest as text."""
        try:
            search = parse_search(search_term)
        except InvalidInput as exc:
            self.message_user(request, describe_error(exc), messages.ERROR)
            return queryset.none(), False
        for column, template in search.contains:
            queryset = queryset.filter(contains_filter(column, template))
        return self._text_search(queryset, search.text)

    def _text_search(self, queryset, term: str):
        """An id (whole or short) by primary key, an email by owner, anything else by title or owner."""
        if not term:
            return queryset, False
        try:
            return queryset.filter(pk=uuid.UUID(term)), False
        except ValueError:
            pass
        # Owners are looked up first: a literal id list lets PostgreSQL combine the owner
        # index with the title's trigram index (a subquery inside an OR would scan the table).
        owners = list(get_user_model().objects.filter(email__icontains=term).values_list("pk", flat=True)[:500])
        if "@" in term:
            return queryset.filter(owner_id__in=owners), False
        matches = Q(title__icontains=term) | Q(owner_id__in=owners)
        if SHORT_ID.match(term):
            # The 8 characters the list shows: a range on the primary key.
            prefix = term.lower()
            matches |= Q(pk__gte=uuid.UUID(prefix + "0" * 24), pk__lte=uuid.UUID(prefix + "f" * 24))
        return queryset.filter(matches), False

    @admin.display(description="id")
    def short_id(self, task):
        return format_html('<code title="{}">{}</code>', task.pk, str(task.pk)[:8])

    @admin.display(description="task")
    def title_and_kind(self, task):
        if task.title and task.title != task.kind:
            return format_html('{}<br><span class="tf-kind">{}</span>', task.title, task.kind)
        return format_html('<span class="tf-kind">{}</span>', task.kind)

    @admin.display(description="owner")
    def owner_email(self, task):
        return task.owner.email

    @admin.display(description="status")
    def status_column(self, task):
        head = getattr(task, "error_head", None)
        if head is None and "error" not in task.get_deferred_fields():
            head = task.error[:300]
        return status_badge(task.status, cancel_requested=task.cancel_requested, title=(head or "").split("\n")[0])

    @admin.display(description="waiting for")
    def waiting_for(self, task):
        reason = fairness.waiting_reason(task)
        if reason:
            return reason
        if task.run_at and task.run_at > timezone.now():
            return f"Its time: due at {timezone.localtime(task.run_at):%Y-%m-%d %H:%M:%S}."
        return "No concurrency limit holds it: it waits for a free worker or its turn."

    @admin.display(description="priority")
    def priority_column(self, task):
        return format_html('<span class="tf-priority tf-priority-{}">{}</span>', task.priority, task.priority)

    @admin.display(description="attempts")
    def attempts_column(self, task):
        # Runs so far out of the runs allowed: the first one plus the automatic retries.
        return f"{task.attempts}/{task.max_retries + 1}"

    @admin.display(description="progress")
    def progress_column(self, task):
        return format_html(
            '<progress class="tf-progress" value="{}" max="100" title="{} %">{} %</progress>',
            task.progress,
            task.progress,
            task.progress,
        )

    @admin.display(description="queue wait")
    def queue_wait_column(self, task):
        if task.started_at:
            return dashboard.duration_text(task.started_at - task.created_at)
        if task.status in (TaskStatus.QUEUED, TaskStatus.PENDING, TaskStatus.RETRYING):
            return format_html("<i>{} …</i>", dashboard.duration_text(timezone.now() - task.created_at))
        return "—"

    @admin.display(description="run time")
    def run_time_column(self, task):
        if task.started_at and task.finished_at:
            return dashboard.duration_text(task.finished_at - task.started_at)
        if task.started_at and task.status == TaskStatus.RUNNING:
            return format_html("<i>{} …</i>", dashboard.duration_text(timezone.now() - task.started_at))
        return "—"

    @admin.display(description="created (UTC)", ordering="created_at")
    def created_column(self, task):
        return timezone.localtime(task.created_at).strftime("%Y-%m-%d %H:%M:%S")

    # --- The task page ----------------------------------------------------------------------

    @admin.display(description="payload")
    def payload_json(self, task):
        return _pretty_json(task.payload)

    @admin.display(description="result")
    def result_json(self, task):
        return _pretty_json(task.result)

    @admin.display(description="error")
    def error_text(self, task):
        return _monospace(task.error)

    @admin.display(description="traceback")
    def traceback_text(self, task):
        return _monospace(task.traceback)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        task = self.get_object(request, unquote(object_id))
        if task is None:
            return super().change_view(request, object_id, form_url, extra_context)
        newest = list(task.events.select_related("actor").order_by("-created_at", "-id")[: EVENTS_SHOWN + 1])
        can_retry = self.has_retry_permission(request)
        can_cancel = self.has_cancel_permission(request)
        context = {
            "events": list(reversed(newest[:EVENTS_SHOWN])),
            "events_truncated": len(newest) > EVENTS_SHOWN,
            # The page's live stream (static/tasks/live_task.js) picks up after the newest shown.
            "last_event_id": max((event.pk for event in newest), default=0),
            "show_retry": can_retry and task.status in RETRYABLE_STATUSES,
            "show_cancel": can_cancel
            and (task.status in WAITING_STATUSES or (task.status == TaskStatus.RUNNING and not task.cancel_requested)),
            "show_revoke": can_cancel and task.status == TaskStatus.RUNNING,
            "show_copy": can_retry,
            "celery_result_url": self._celery_result_url(request, task),
            "file_links": list(task.file_links.select_related("file")),
        }
        return super().change_view(request, object_id, form_url, {**context, **(extra_context or {})})

    def _celery_result_url(self, request, task) -> str | None:
        if not request.user.has_perm("django_celery_results.view_taskresult"):
            return None
        result_pk = TaskResult.objects.filter(task_id=str(task.pk)).values_list("pk", flat=True).first()
        if result_pk is None:
            return None
        return reverse("admin:django_celery_results_taskresult_change", args=[result_pk])
