"""The task admin's pages beyond a ModelAdmin's own: the dashboard, the task page's buttons
(Retry / Cancel / Hard revoke / Submit a copy, each checked again on POST), bulk retry and
cancel (selected, or everything that matches the filter, through apps/tasks/bulk.py) and the
owner filter's autocomplete. TaskAdmin (task.py) mixes them in; every write is `audited`.
"""

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from apps.core.admin_errors import errors_on_form
from apps.core.exceptions import Conflict
from apps.core.services import audited

from .. import bulk, dashboard, services
from ..forms import ReasonForm, TaskCopyForm
from ..models import RETRYABLE_STATUSES, Task, TaskTrigger
from .filters import CreatedFilter, OwnerAutocompleteView, OwnerFilter


class TaskPagesMixin:
    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        owners = OwnerAutocompleteView.as_view(admin_site=self.admin_site, task_admin=self)
        return [
            path("dashboard/", wrap(self.dashboard_view), name="tasks_dashboard"),
            path("dashboard/workers/", wrap(self.dashboard_workers_view), name="tasks_dashboard_workers"),
            path("owners/", wrap(owners), name="tasks_task_owners"),
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

    # --- The task page's buttons ------------------------------------------------------------

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
            with audited(user=request.user, action=f"task.{action}", reason=reason, object_type="tasks.task") as audit:
                task = run(task, reason)
                audit.update(object_ids=[task.pk], details={"status": task.status})
        except Conflict as exc:
            self.message_user(request, exc.message, messages.ERROR)
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
            # Errors of the submission (kind, payload, size) go next to the form's fields.
            with (
                errors_on_form(form, field="payload"),
                audited(
                    user=request.user, action="task.copy", reason=data["reason"], object_type="tasks.task"
                ) as audit,
            ):
                copy, _ = services.task_submit(
                    owner=source.owner, spec=spec, trigger=TaskTrigger.ADMIN, actor=request.user
                )
                audit.update(
                    object_ids=[source.pk, copy.pk],
                    details={"source": str(source.pk), "copy": str(copy.pk), "kind": copy.kind},
                )
            if not form.errors:
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
            "inline_max": bulk.INLINE_MAX,
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
