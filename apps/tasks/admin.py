"""The operators' admin for tasks.

- A task list that stays fast at millions of rows: no full COUNT(*) (EstimatedCountPaginator),
  filters whose choices need no query, each served by an index, heavy columns deferred.
- A read-only task page: transitions happen only through services, behind the buttons
  Retry / Cancel / Hard revoke / Submit a copy, each checked again on POST.
- Bulk retry and cancel (selected, or everything that matches the filter) through apps/tasks/bulk.py.
- The dashboard (apps/tasks/dashboard.py) and retry for django-celery-results' rows.

Every staff action writes an AuditEntry (apps/core).
"""

import ast
import json
import re
import uuid

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Substr
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django_celery_results.admin import TaskResultAdmin as CeleryTaskResultAdmin
from django_celery_results.models import TaskResult
from rest_framework import serializers

from apps.core.exceptions import Conflict, PayloadTooLarge
from apps.core.pagination import EstimatedCountPaginator
from apps.core.services import audit_record
from taskflow_site.celery import app as celery_app

from . import (
    admin_schedules,  # noqa: F401 (registers ScheduleAdmin)
    bulk,
    dashboard,
    services,
)
from .admin_filters import CreatedFilter, HasErrorFilter, KindFilter, OwnerFilter
from .forms import ReasonForm, TaskActionForm, TaskCopyForm
from .models import RETRYABLE_STATUSES, WAITING_STATUSES, Task, TaskStatus, TaskTrigger

EVENTS_SHOWN = 200
SHORT_ID = re.compile(r"^[0-9a-fA-F]{8}$")
CANCELLABLE_STATUSES = (*WAITING_STATUSES, TaskStatus.RUNNING)


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


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
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
    search_help_text = "A task id (whole, or its first 8 characters), words of the title, or an owner's email."
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
            "tasks/owner_filter.js",
        )

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
        """An id (whole or short) by primary key, an email by owner, anything else by title or owner."""
        term = search_term.strip()
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

    # --- Extra views ------------------------------------------------------------------------

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        return [
            path("dashboard/", wrap(self.dashboard_view), name="tasks_dashboard"),
            path("dashboard/workers/", wrap(self.dashboard_workers_view), name="tasks_dashboard_workers"),
            path("owners/", wrap(self.owner_autocomplete_view), name="tasks_task_owners"),
            path("retry-matching/", wrap(self.retry_matching_view), name="tasks_task_retry_matching"),
            path("<path:object_id>/retry/", wrap(self.retry_view), name="tasks_task_retry"),
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name="tasks_task_cancel"),
            path("<path:object_id>/revoke/", wrap(self.revoke_view), name="tasks_task_revoke"),
            path("<path:object_id>/copy/", wrap(self.copy_view), name="tasks_task_copy"),
            *super().get_urls(),
        ]

    def _require_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied

    def dashboard_view(self, request):
        self._require_view(request)
        return dashboard.dashboard_view(request, self)

    def dashboard_workers_view(self, request):
        self._require_view(request)
        return dashboard.dashboard_workers_view(request, self)

    def owner_autocomplete_view(self, request):
        """select2's JSON for the owner filter: users whose email or name contains the term."""
        self._require_view(request)
        term = request.GET.get("term", "").strip()
        page = int(request.GET["page"]) if request.GET.get("page", "").isdigit() else 1
        page = max(page, 1)
        users = get_user_model().objects.order_by("email")
        if term:
            users = users.filter(Q(email__icontains=term) | Q(full_name__icontains=term))
        size = 20
        rows = list(users.values_list("pk", "email")[(page - 1) * size : page * size + 1])
        return JsonResponse(
            {
                "results": [{"id": str(pk), "text": email} for pk, email in rows[:size]],
                "pagination": {"more": len(rows) > size},
            }
        )

    def _task_or_404(self, request, object_id) -> Task:
        task = self.get_object(request, unquote(object_id))
        if task is None:
            raise Http404("No such task.")
        return task

    def _single_action(self, request, object_id, *, permitted: bool, action: str, run) -> HttpResponseRedirect:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not permitted:
            raise PermissionDenied
        task = self._task_or_404(request, object_id)
        form = ReasonForm(request.POST)
        reason = form.cleaned_data["reason"].strip() if form.is_valid() else ""
        try:
            with transaction.atomic():
                task = run(task, reason)
                audit_record(
                    user=request.user,
                    action=f"task.{action}",
                    reason=reason,
                    object_type="tasks.task",
                    object_ids=[task.pk],
                    details={"status": task.status},
                )
        except Conflict as exc:
            self.message_user(request, str(exc.detail), messages.ERROR)
        else:
            label = action.replace("_", " ").capitalize()
            self.message_user(request, f"{label}: task {str(task.pk)[:8]} is now {task.status}.", messages.SUCCESS)
        return redirect("admin:tasks_task_change", task.pk)

    def retry_view(self, request, object_id):
        return self._single_action(
            request,
            object_id,
            permitted=self.has_retry_permission(request),
            action="retry",
            run=lambda task, reason: services.task_retry(task=task, actor=request.user, reason=reason),
        )

    def cancel_view(self, request, object_id):
        return self._single_action(
            request,
            object_id,
            permitted=self.has_cancel_permission(request),
            action="cancel",
            run=lambda task, reason: services.task_cancel(task=task, actor=request.user, reason=reason),
        )

    def revoke_view(self, request, object_id):
        return self._single_action(
            request,
            object_id,
            permitted=self.has_cancel_permission(request),
            action="hard_revoke",
            run=lambda task, reason: services.task_cancel(task=task, actor=request.user, reason=reason, hard=True),
        )

    def copy_view(self, request, object_id):
        """Submit a new task from this one's kind and payload, edited first.

        The copy belongs to the original owner: it runs with the owner's rights (their input
        files, their kinds) and shows up in the owner's API. The staff member is recorded as
        the actor of its first TaskEvent, in its description and in the audit trail.
        """
        if not self.has_retry_permission(request):
            raise PermissionDenied
        source = self._task_or_404(request, object_id)
        initial = {
            "kind": source.kind,
            "title": source.title,
            "priority": source.priority,
            "max_retries": source.max_retries,
            "payload": source.payload,
        }
        form = TaskCopyForm(request.POST or None, initial=initial, owner=source.owner)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            spec = services.TaskSpec(
                kind=data["kind"],
                payload=data["payload"],
                title=data["title"],
                description=f"Copy of task {source.pk}, submitted by {request.user.email}"
                + (f": {data['reason']}" if data["reason"] else ""),
                priority=data["priority"],
                max_retries=data["max_retries"],
            )
            try:
                with transaction.atomic():
                    copy, _ = services.task_submit(
                        owner=source.owner, spec=spec, trigger=TaskTrigger.ADMIN, actor=request.user
                    )
                    audit_record(
                        user=request.user,
                        action="task.copy",
                        reason=data["reason"],
                        object_type="tasks.task",
                        object_ids=[source.pk, copy.pk],
                        details={"source": str(source.pk), "copy": str(copy.pk), "kind": copy.kind},
                    )
            except serializers.ValidationError as exc:
                for field, errors in (exc.detail if isinstance(exc.detail, dict) else {None: exc.detail}).items():
                    target = field if field in form.fields else None
                    form.add_error(target, _flatten_errors(errors))
            except PayloadTooLarge as exc:
                form.add_error("payload", str(exc.detail))
            else:
                self.message_user(
                    request, f"Submitted task {str(copy.pk)[:8]}, a copy of {str(source.pk)[:8]}.", messages.SUCCESS
                )
                return redirect("admin:tasks_task_change", copy.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Submit a copy of {source}",
            "opts": self.opts,
            "original": source,
            "form": form,
        }
        return TemplateResponse(request, "admin/tasks/task/copy.html", context)

    # --- Bulk actions -----------------------------------------------------------------------

    def _run_bulk(self, request, queryset, *, action: str, reason: str, source: str):
        outcome = bulk.tasks_bulk_action(
            action=action, queryset=queryset, actor=request.user, reason=reason, source=source
        )
        verb = "retried" if action == bulk.RETRY else "cancelled"
        if outcome.in_background:
            self.message_user(
                request,
                f"{outcome.eligible:,} tasks will be {verb} in the background, in batches; "
                "the audit trail records each batch when it is done.",
                messages.INFO,
            )
        elif outcome.eligible == 0:
            self.message_user(request, f"None of these tasks can be {verb}.", messages.WARNING)
        else:
            skipped = f" ({outcome.skipped} skipped: their state had changed)" if outcome.skipped else ""
            self.message_user(request, f"{outcome.done:,} tasks {verb}{skipped}.", messages.SUCCESS)

    @admin.action(description="Retry selected tasks (failed or cancelled)", permissions=["retry"])
    def retry_selected(self, request, queryset):
        self._run_bulk(
            request, queryset, action=bulk.RETRY, reason=request.POST.get("reason", "").strip(), source="selected"
        )

    @admin.action(description="Cancel selected tasks (waiting; running ones are asked to stop)", permissions=["cancel"])
    def cancel_selected(self, request, queryset):
        self._run_bulk(
            request, queryset, action=bulk.CANCEL, reason=request.POST.get("reason", "").strip(), source="selected"
        )

    def retry_matching_view(self, request):
        """Retry every failed or cancelled task matching the list's current filters and search."""
        if not self.has_retry_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            self.message_user(request, "Those filters are not valid.", messages.ERROR)
            return redirect("admin:tasks_task_changelist")
        queryset = changelist.get_queryset(request)
        query = changelist.get_query_string(remove=["p"]).lstrip("?")
        back = reverse("admin:tasks_task_changelist") + (f"?{query}" if query else "")
        form = ReasonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            self._run_bulk(
                request,
                queryset,
                action=bulk.RETRY,
                reason=form.cleaned_data["reason"].strip(),
                source=f"filter: {query or 'all tasks'}",
            )
            return HttpResponseRedirect(back)
        context = {
            **self.admin_site.each_context(request),
            "title": "Retry all matching tasks",
            "opts": self.opts,
            "form": form,
            "count": queryset.filter(status__in=RETRYABLE_STATUSES).count(),
            "filters": _describe_filters(changelist),
            "search": changelist.query,
            "query": query,
            "back": back,
            "inline_max": settings.TASK_ADMIN_BULK_INLINE_MAX,
        }
        return TemplateResponse(request, "admin/tasks/task/retry_matching.html", context)

    def changelist_view(self, request, extra_context=None):
        # Django quietly ignores an action the user may not run ("No action selected"); a
        # forged POST of one of ours is refused outright, like the task page's buttons.
        posted = request.POST.get("action") if request.method == "POST" else None
        if posted in self.actions and posted not in self.get_actions(request):
            raise PermissionDenied
        params = request.GET.copy()
        params.pop("p", None)
        query = params.urlencode()
        context = {
            "retry_matching_url": reverse("admin:tasks_task_retry_matching") + (f"?{query}" if query else ""),
            "show_retry_matching": self.has_retry_permission(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)


def _flatten_errors(errors) -> list[str]:
    if isinstance(errors, dict):
        return [f"{key}: {message}" for key, value in errors.items() for message in _flatten_errors(value)]
    if isinstance(errors, list):
        return [message for item in errors for message in _flatten_errors(item)]
    return [str(errors)]


def _describe_filters(changelist) -> list[tuple[str, str]]:
    """(filter title, chosen value) for each filter in use, for the confirmation page."""
    described = []
    for spec in changelist.filter_specs:
        if not spec.used_parameters:
            continue
        chosen = [str(choice["display"]) for choice in spec.choices(changelist) if choice.get("selected")]
        if isinstance(spec, CreatedFilter) and (spec.date_from or spec.date_to):
            chosen = [f"from {spec.date_from or 'the start'} to {spec.date_to or 'today'}"]
        if isinstance(spec, OwnerFilter):
            chosen = [spec.selected.email if spec.selected else spec.value]
        described.append((str(spec.title), ", ".join(chosen)))
    return described


# --- django-celery-results: system jobs, with a retry -----------------------------------------


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
        sent, failed = [], []
        for result in queryset:
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
        if sent:
            audit_record(
                user=request.user,
                action="result.retry",
                object_type="django_celery_results.taskresult",
                object_ids=[item["from"] for item in sent],
                details={"sent": sent},
            )
            self.message_user(request, f"Sent {len(sent)} task(s) again.", messages.SUCCESS)
        for problem in failed:
            self.message_user(request, f"Not retried: {problem}", messages.WARNING)
