from django.conf import settings
from django.urls import reverse
from rest_framework import serializers

from apps.core.api_errors import field_validator
from apps.core.serializers import CachedFieldsMixin, StrictSerializer, absolute_url, validated_data
from apps.webhooks.services import validate_url

from . import cron, fairness
from .models import OverlapPolicy, Schedule, Task, TaskEvent, TaskPriority
from .schedule_services import ScheduleSpec
from .services import TaskSpec

# The bulky fields the task list leaves out (the detail has them).
TASK_LIST_OMITS = ("payload", "result", "traceback", "description")
_URL_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"


class TaskSubmitSerializer(StrictSerializer):
    kind = serializers.CharField(max_length=100)
    payload = serializers.JSONField(required=False, default=dict)
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    description = serializers.CharField(max_length=10000, required=False, allow_blank=True, default="")
    priority = serializers.ChoiceField(choices=TaskPriority.choices, default=TaskPriority.NORMAL)
    max_retries = serializers.IntegerField(min_value=0, max_value=25, required=False)
    timeout = serializers.IntegerField(min_value=1, max_value=settings.TASK_MAX_TIMEOUT, required=False)
    run_at = serializers.DateTimeField(required=False, allow_null=True)
    idempotency_key = serializers.CharField(max_length=200, required=False, allow_blank=True)
    callback_url = serializers.URLField(
        max_length=2000,
        required=False,
        allow_blank=True,
        default="",
        validators=[field_validator(validate_url)],
        help_text="POSTed once, signed, when the task finishes (see the webhooks docs).",
    )

    @classmethod
    def spec_from(cls, data) -> TaskSpec:
        """The spec of one submission, validated by this thread's one instance (validated_data)."""
        return TaskSpec(**validated_data(cls, data))


class TaskBulkSubmitSerializer(StrictSerializer):
    tasks = serializers.ListField(child=serializers.DictField(), allow_empty=False, max_length=settings.TASK_BULK_MAX)

    def to_specs(self) -> list[TaskSpec]:
        """Validate every item; errors are keyed by the item's index."""
        specs, errors = [], {}
        # One serializer for every item: building a serializer's fields (a deepcopy of each
        # declared field) costs more than validating an item, a fifth of a 1,000-task request.
        for index, item in enumerate(self.validated_data["tasks"]):
            try:
                specs.append(TaskSubmitSerializer.spec_from(item))
            except serializers.ValidationError as exc:
                errors[str(index)] = exc.detail
        if errors:
            raise serializers.ValidationError({"tasks": errors})
        return specs


class TaskActionSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class TaskCancelSerializer(TaskActionSerializer):
    hard = serializers.BooleanField(
        default=False, help_text="Staff only: stop a running task now instead of asking it to stop."
    )


class TaskSerializer(CachedFieldsMixin, serializers.ModelSerializer):
    owner = serializers.EmailField(source="owner.email", read_only=True)
    url = serializers.SerializerMethodField()
    schedule = serializers.UUIDField(source="schedule_id", read_only=True, allow_null=True)

    class Meta:
        model = Task
        fields = [
            "id",
            "url",
            "owner",
            "kind",
            "title",
            "description",
            "payload",
            "priority",
            "queue",
            "status",
            "attempts",
            "max_retries",
            "timeout",
            "run_at",
            "idempotency_key",
            "progress",
            "progress_message",
            "result",
            "error",
            "traceback",
            "worker",
            "cancel_requested",
            "callback_url",
            "trigger",
            "schedule",
            "created_at",
            "queued_at",
            "started_at",
            "finished_at",
            "updated_at",
        ]
        read_only_fields = fields

    # The list reads rows, not instances (TaskViewSet.list): `url` is made from the id.
    row_columns = ("id",)

    def get_url(self, task) -> str:
        return self._url_of(task.pk)

    def get_url_from_row(self, row) -> str:
        return self._url_of(row["id"])

    def _url_of(self, pk) -> str:
        # reverse() for every row was a tenth of a list request: resolve once per serializer
        # (one instance serves every row of a list), then put each id into that URL.
        template = self.__dict__.get("_url_template")
        if template is None:
            template = absolute_url(self.context, reverse("tasks:task-detail", args=[_URL_PLACEHOLDER]))
            self._url_template = template
        return template.replace(_URL_PLACEHOLDER, str(pk))


class TaskFileSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="file.pk")
    role = serializers.CharField()
    name = serializers.CharField(source="file.original_name")
    size = serializers.IntegerField(source="file.size")
    content_type = serializers.CharField(source="file.content_type")
    download_url = serializers.SerializerMethodField()

    def get_download_url(self, link) -> str:
        return absolute_url(self.context, reverse("files:file-download", kwargs={"pk": link.file_id}))


class TaskDetailSerializer(TaskSerializer):
    files = TaskFileSerializer(source="file_links", many=True, read_only=True)
    waiting_for = serializers.SerializerMethodField(
        help_text="Why a queued or retrying task is not running yet when a concurrency limit holds it "
        '("waiting for a slot: kind files.csv_report limit 2 reached"); empty otherwise. Only in the detail.'
    )

    class Meta(TaskSerializer.Meta):
        fields = [*TaskSerializer.Meta.fields, "files", "waiting_for"]
        read_only_fields = fields

    def get_waiting_for(self, task) -> str:
        return fairness.waiting_reason(task)


class TaskListSerializer(TaskSerializer):
    """The list leaves out the bulky fields; the detail has them."""

    class Meta(TaskSerializer.Meta):
        fields = [f for f in TaskSerializer.Meta.fields if f not in TASK_LIST_OMITS]
        read_only_fields = fields


class TaskBulkResultSerializer(serializers.Serializer):
    tasks = TaskListSerializer(many=True)


class TaskEventSerializer(CachedFieldsMixin, serializers.ModelSerializer):
    actor = serializers.EmailField(source="actor.email", read_only=True, default=None)

    class Meta:
        model = TaskEvent
        fields = ["id", "created_at", "from_status", "to_status", "actor", "message", "worker", "attempt"]
        read_only_fields = fields


class KindSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    queue = serializers.CharField()
    max_retries = serializers.IntegerField()
    timeout = serializers.IntegerField()
    payload_schema = serializers.DictField()


class ScheduleInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    kind = serializers.CharField(max_length=100)
    payload = serializers.JSONField(required=False, default=dict)
    cron = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    interval_seconds = serializers.IntegerField(min_value=1, max_value=366 * 24 * 3600, required=False, allow_null=True)
    timezone = serializers.CharField(max_length=64, default="UTC")
    priority = serializers.ChoiceField(choices=TaskPriority.choices, default=TaskPriority.NORMAL)
    enabled = serializers.BooleanField(default=True)
    overlap_policy = serializers.ChoiceField(choices=OverlapPolicy.choices, default=OverlapPolicy.ALLOW)

    def to_spec(self) -> ScheduleSpec:
        data = dict(self.validated_data)
        data["cron"] = " ".join(data["cron"].split())
        return ScheduleSpec(**data)


class ScheduleSerializer(serializers.ModelSerializer):
    owner = serializers.EmailField(source="owner.email", read_only=True)
    cron_description = serializers.SerializerMethodField()
    last_run = serializers.SerializerMethodField()

    class Meta:
        model = Schedule
        fields = [
            "id",
            "owner",
            "name",
            "kind",
            "payload",
            "priority",
            "cron",
            "cron_description",
            "interval_seconds",
            "timezone",
            "enabled",
            "paused_reason",
            "overlap_policy",
            "next_run_at",
            "last_fired_at",
            "last_run",
            "skipped_runs",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_cron_description(self, schedule) -> str:
        return cron.describe(schedule.cron) if schedule.cron else f"Every {schedule.interval_seconds} seconds"

    def get_last_run(self, schedule) -> dict | None:
        task = schedule.last_run_task
        if task is None:
            return None
        url = absolute_url(self.context, reverse("tasks:task-detail", args=[task.pk]))
        return {"id": str(task.pk), "status": task.status, "url": url}


class ScheduleActionSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class SchedulePreviewSerializer(serializers.Serializer):
    local = serializers.CharField()
    utc = serializers.CharField()
    flag = serializers.ChoiceField(choices=["", "gap", "repeated"])
