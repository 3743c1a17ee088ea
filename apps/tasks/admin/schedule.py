"""The admin for user schedules: run now, pause with a reason, resume, preview, their runs.

Edits go through schedule_services (validation, the celery-beat mirror) like the API's; the
stock django-celery-beat admin stays for the system jobs.
"""

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from apps.core.admin_errors import errors_on_form
from apps.core.admin_widgets import KeyCheckingAutocompleteMixin
from apps.core.services import audited

from .. import cron, schedule_services
from ..forms import TaskActionForm
from ..models import Schedule
from ..schedule_services import ScheduleSpec

RUNS_SHOWN = 20
PREVIEW_COUNT = 10
SPEC_FIELDS = (
    "name",
    "kind",
    "payload",
    "cron",
    "interval_seconds",
    "timezone",
    "priority",
    "enabled",
    "overlap_policy",
)


class ScheduleForm(forms.ModelForm):
    payload = forms.JSONField(required=False, initial=dict, widget=forms.Textarea(attrs={"rows": 6, "cols": 80}))

    class Meta:
        model = Schedule
        fields = ["owner", *SPEC_FIELDS]

    def spec(self) -> ScheduleSpec:
        data = {name: self.cleaned_data.get(name) for name in SPEC_FIELDS}
        data["payload"] = data["payload"] or {}
        data["cron"] = " ".join((data["cron"] or "").split())
        return ScheduleSpec(**data)

    def clean(self):
        cleaned = super().clean()
        owner = cleaned.get("owner") or getattr(self.instance, "owner", None)
        if self.errors or owner is None:
            return cleaned
        with errors_on_form(self):
            schedule_services.schedule_clean(owner=owner, spec=self.spec(), exclude_pk=self.instance.pk)
        return cleaned

    def validate_unique(self):
        pass  # the service checks the per-owner name with a clearer message


@admin.register(Schedule)
class ScheduleAdmin(KeyCheckingAutocompleteMixin, admin.ModelAdmin):
    form = ScheduleForm
    action_form = TaskActionForm
    list_display = ("name", "owner", "kind", "timing", "timezone", "next_run_at", "last_run_status", "enabled")
    list_filter = ("enabled", "kind", "overlap_policy")
    search_fields = ("name", "owner__email", "kind")
    list_select_related = ("owner", "last_run_task")
    autocomplete_fields = ("owner",)
    readonly_fields = ("next_run_at", "last_fired_at", "skipped_runs", "paused_reason", "preview", "runs")
    actions = ["run_now", "pause", "resume"]

    def get_fields(self, request, obj=None):
        fields = ["owner", *SPEC_FIELDS]
        if obj is not None:
            fields += ["paused_reason", "next_run_at", "last_fired_at", "skipped_runs", "preview", "runs"]
        return fields

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "owner") if obj is not None else self.readonly_fields

    @admin.display(description="timing")
    def timing(self, schedule):
        if schedule.cron:
            return format_html("{}<br><code>{}</code>", cron.describe(schedule.cron), schedule.cron)
        return f"Every {schedule.interval_seconds} s"

    @admin.display(description="last run")
    def last_run_status(self, schedule):
        task = schedule.last_run_task
        if task is None:
            return "—"
        return format_html('<a href="../task/{}/change/">{}</a>', task.pk, task.get_status_display())

    @admin.display(description="next runs")
    def preview(self, schedule):
        try:
            runs = schedule_services.schedule_preview(schedule=schedule, count=PREVIEW_COUNT)
        except cron.CronError as exc:
            return str(exc)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((run["local"], run["utc"], run["flag"] or "") for run in runs),
        )
        return format_html("<table><tr><th>local</th><th>UTC</th><th>daylight saving</th></tr>{}</table>", rows)

    @admin.display(description="runs")
    def runs(self, schedule):
        tasks = schedule.tasks.order_by("-created_at")[:RUNS_SHOWN]
        if not tasks:
            return "No runs yet."
        return format_html_join(
            mark_safe("<br>"),
            '<a href="../../task/{}/change/">{}</a> {} ({})',
            (
                (task.pk, task.created_at.strftime("%Y-%m-%d %H:%M:%S"), task.get_status_display(), task.trigger)
                for task in tasks
            ),
        )

    def save_model(self, request, obj, form, change):
        spec = form.spec()
        with audited(
            user=request.user,
            action="schedule.change" if change else "schedule.create",
            object_type="tasks.schedule",
            details={"changed": form.changed_data},
        ) as audit:
            if change:
                schedule = schedule_services.schedule_update(schedule=obj, spec=spec)
            else:
                schedule = schedule_services.schedule_create(owner=form.cleaned_data["owner"], spec=spec)
                obj.pk = schedule.pk
            audit.update(object_ids=[schedule.pk])

    def delete_model(self, request, obj):
        with audited(
            user=request.user, action="schedule.delete", object_type="tasks.schedule", object_ids=[obj.pk]
        ) as audit:
            audit.record()  # before the delete, while the schedule's id is still its own
            schedule_services.schedule_delete(schedule=obj)

    def delete_queryset(self, request, queryset):
        for schedule in queryset:
            self.delete_model(request, schedule)

    def has_run_permission(self, request, obj=None):
        return request.user.has_perm("tasks.run_schedule")

    def _reason(self, request) -> str:
        return (request.POST.get("reason") or "").strip()[:500]

    def _audited(self, request, queryset, *, action: str, reason: str):
        return audited(
            user=request.user,
            action=action,
            reason=reason,
            object_type="tasks.schedule",
            object_ids=queryset.values_list("pk", flat=True),
        )

    @admin.action(description="Run selected schedules now", permissions=["run"])
    def run_now(self, request, queryset):
        with self._audited(request, queryset, action="schedule.run_now", reason=self._reason(request)) as audit:
            tasks = [schedule_services.schedule_run_now(schedule=s, actor=request.user) for s in queryset]
            audit.update(details={"tasks": [str(task.pk) for task in tasks]})
        self.message_user(request, f"Submitted {len(tasks)} run(s).", messages.SUCCESS)

    @admin.action(description="Pause selected schedules (give a reason)", permissions=["run"])
    def pause(self, request, queryset):
        reason = self._reason(request) or f"Paused by {request.user}"
        with self._audited(request, queryset, action="schedule.pause", reason=reason):
            for schedule in queryset:
                schedule_services.schedule_pause(schedule=schedule, reason=reason)
        self.message_user(request, f"Paused {queryset.count()} schedule(s).", messages.SUCCESS)

    @admin.action(description="Resume selected schedules", permissions=["run"])
    def resume(self, request, queryset):
        with self._audited(request, queryset, action="schedule.resume", reason=self._reason(request)):
            for schedule in queryset:
                schedule_services.schedule_resume(schedule=schedule)
        self.message_user(request, f"Resumed {queryset.count()} schedule(s).", messages.SUCCESS)
