import functools

from django.db.models import Prefetch, prefetch_related_objects
from django.utils.decorators import method_decorator
from django.views.decorators.http import condition
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.caching import cached
from apps.core.serializers import ReasonSerializer
from apps.core.viewsets import OwnedObjectViewSetMixin

from . import schedule_services, services
from .etags import task_detail_etag
from .filters import TaskFilter
from .models import Schedule, Task, TaskFile
from .payload_schema import serializer_schema
from .registry import kinds_for
from .schedule_services import ScheduleSpec
from .serializers import (
    KindSerializer,
    ScheduleInputSerializer,
    SchedulePreviewSerializer,
    ScheduleSerializer,
    TaskActionSerializer,
    TaskBulkResultSerializer,
    TaskBulkSubmitSerializer,
    TaskCancelSerializer,
    TaskDetailSerializer,
    TaskEventSerializer,
    TaskListSerializer,
    TaskSerializer,
    TaskSubmitSerializer,
)


class TaskViewSet(OwnedObjectViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Tasks: owners see their own, staff see all. Another user's task is a 404."""

    serializer_class = TaskSerializer
    filterset_class = TaskFilter
    staff_permissions = {"retry": "tasks.retry_task", "cancel": "tasks.cancel_task"}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Task.objects.none()
        queryset = Task.objects.visible_to(self.request.user)
        if self.action == "list":
            return queryset  # read as rows by list()
        return queryset.select_related("owner")

    def get_serializer_class(self):
        if self.action == "list":
            return TaskListSerializer
        return TaskDetailSerializer

    def list(self, request, *args, **kwargs):
        """The page is read as rows of the list's columns (QuerySet.values()) and rendered by
        TaskListSerializer.render_rows: the JSON of the serializer, without building a model
        instance for every row and owner (a quarter of a list request's CPU)."""
        serializer = self.get_serializer()
        rows = self.filter_queryset(_list_rows().all().visible_to(request.user))
        page = self.paginate_queryset(rows)
        if page is None:
            return Response(serializer.render_rows(rows))
        return self.get_paginated_response(serializer.render_rows(page))

    def get_object(self):
        task = super().get_object()
        if self.action == "retrieve":
            prefetch_related_objects([task], Prefetch("file_links", TaskFile.objects.select_related("file")))
        return task

    @method_decorator(condition(etag_func=task_detail_etag))
    def retrieve(self, request, *args, **kwargs):
        """One task. Send its ETag back in If-None-Match: 304 while the task is unchanged."""
        return super().retrieve(request, *args, **kwargs)

    def _created(self, task: Task, created: bool) -> Response:
        data = TaskSerializer(task, context=self.get_serializer_context()).data
        headers = {"Location": data["url"]}
        return Response(data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK, headers=headers)

    @extend_schema(request=TaskSubmitSerializer, responses={201: TaskSerializer, 200: TaskSerializer})
    def create(self, request):
        """Submit a task. The same idempotency_key again returns the first task (200)."""
        spec = TaskSubmitSerializer.spec_from(request.data)
        task, created = services.task_submit(owner=request.user, spec=spec)
        return self._created(task, created)

    @extend_schema(request=TaskBulkSubmitSerializer, responses={201: TaskBulkResultSerializer})
    @action(detail=False, methods=["post"])
    def bulk(self, request):
        """Submit up to TASK_BULK_MAX (1,000) tasks at once; all are validated first, all or nothing."""
        data = TaskBulkSubmitSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tasks = services.task_submit_bulk(owner=request.user, specs=data.to_specs())
        body = TaskBulkResultSerializer({"tasks": tasks}, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=TaskActionSerializer, responses=TaskSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        data = TaskActionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        task = self.get_object()
        task = self.audited(
            task,
            action="task.retry",
            reason=data.validated_data["reason"],
            write=lambda: services.task_retry(task=task, actor=request.user, **data.validated_data),
        )
        return Response(TaskSerializer(task, context=self.get_serializer_context()).data)

    @extend_schema(request=TaskCancelSerializer, responses=TaskSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        data = TaskCancelSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["hard"] and not request.user.has_perm("tasks.cancel_task"):
            raise PermissionDenied("Only operators can hard-revoke a running task.")
        task = self.get_object()
        task = self.audited(
            task,
            action="task.hard_revoke" if data.validated_data["hard"] else "task.cancel",
            reason=data.validated_data["reason"],
            write=lambda: services.task_cancel(task=task, actor=request.user, **data.validated_data),
        )
        return Response(TaskSerializer(task, context=self.get_serializer_context()).data)

    @extend_schema(responses=TaskEventSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def events(self, request, pk=None):
        task = self.get_object()
        events = task.events.select_related("actor")
        return Response(TaskEventSerializer(events, many=True).data)


@functools.cache
def _list_rows():
    """The list's values() query, set up once per process (a tenth of a list request's CPU
    went to choosing the columns); every request works on a copy (`.all()`)."""
    return Task.objects.values(*TaskListSerializer.row_plan()[0])


# GET /api/kinds/ is cached this long (seconds): one entry for staff, one for everyone else.
KINDS_CACHE_SECONDS = 60


class KindListView(APIView):
    """The task kinds you may submit, with the JSON schema of their payloads."""

    @extend_schema(responses=KindSerializer(many=True))
    def get(self, request):
        # Kinds change only with a deploy, and staff see the staff-only ones too: two variants.
        variant = "staff" if request.user.is_staff else "user"
        body = cached(
            f"tasks:kinds:{variant}",
            timeout=KINDS_CACHE_SECONDS,
            build=lambda: self._kinds(request.user),
        )
        return Response(body)

    @staticmethod
    def _kinds(user) -> list[dict]:
        kinds = [
            {
                "name": kind.name,
                "description": kind.description,
                "queue": kind.queue,
                "max_retries": kind.max_retries,
                "timeout": kind.timeout,
                "payload_schema": serializer_schema(kind.payload, extra_keys=kind.extra_keys),
            }
            for kind in kinds_for(user)
        ]
        return [dict(item) for item in KindSerializer(kinds, many=True).data]


class ScheduleViewSet(OwnedObjectViewSetMixin, viewsets.ModelViewSet):
    """Recurring submissions. Owners manage their own; another user's schedule is a 404."""

    serializer_class = ScheduleSerializer
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]
    staff_permissions = {
        "update": "tasks.change_schedule",
        "partial_update": "tasks.change_schedule",
        "destroy": "tasks.delete_schedule",
        "run": "tasks.run_schedule",
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Schedule.objects.none()
        return Schedule.objects.visible_to(self.request.user).select_related("owner", "last_run_task")

    def _input(self, instance=None, partial=False) -> ScheduleSpec:
        initial = {}
        if instance is not None:
            initial = {
                name: getattr(instance, name) for name in ScheduleInputSerializer().fields if hasattr(instance, name)
            }
        data = ScheduleInputSerializer(data={**initial, **self.request.data} if partial else self.request.data)
        data.is_valid(raise_exception=True)
        return data.to_spec()

    @extend_schema(request=ScheduleInputSerializer, responses={201: ScheduleSerializer})
    def create(self, request):
        schedule = schedule_services.schedule_create(owner=request.user, spec=self._input())
        return Response(
            ScheduleSerializer(schedule, context=self.get_serializer_context()).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=ScheduleInputSerializer, responses=ScheduleSerializer)
    def update(self, request, pk=None, partial=False):
        schedule = self.get_object()
        spec = self._input(instance=schedule, partial=partial)
        schedule = self.audited(
            schedule,
            action="schedule.change",
            write=lambda: schedule_services.schedule_update(schedule=schedule, spec=spec),
        )
        return Response(ScheduleSerializer(schedule, context=self.get_serializer_context()).data)

    @extend_schema(request=ScheduleInputSerializer, responses=ScheduleSerializer)
    def partial_update(self, request, pk=None):
        return self.update(request, pk=pk, partial=True)

    def perform_destroy(self, instance):
        self.audited(
            instance,
            action="schedule.delete",
            write=lambda: schedule_services.schedule_delete(schedule=instance),
        )

    @extend_schema(request=ReasonSerializer, responses={201: TaskSerializer})
    @action(detail=True, methods=["post"])
    def run(self, request, pk=None):
        """Run now: one task at once, linked to the schedule and marked as run now."""
        task = self.reasoned_action(
            action="schedule.run_now",
            write=lambda schedule: schedule_services.schedule_run_now(schedule=schedule, actor=request.user),
        )
        data = TaskSerializer(task, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED, headers={"Location": data["url"]})

    @extend_schema(
        parameters=[OpenApiParameter("count", int, description="How many runs (1-100, default 10).")],
        responses=SchedulePreviewSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def preview(self, request, pk=None):
        """The next runs in the schedule's time zone and in UTC; flags gap/repeated at DST edges."""
        try:
            count = int(request.query_params.get("count", 10))
        except ValueError:
            count = 0
        if not 1 <= count <= 100:
            raise ValidationError({"count": ["A whole number from 1 to 100."]})
        runs = schedule_services.schedule_preview(schedule=self.get_object(), count=count)
        return Response(SchedulePreviewSerializer(runs, many=True).data)
