"""Live task events as server-sent events.

    GET /api/tasks/{id}/events/stream/          one task: its stored history, then live, until final
    GET /api/tasks/events/stream/?status=&kind= the caller's own tasks, from now on
    GET /api/tasks/counts/stream/               staff: the dashboard's counts by status, as they change

Each entry of a task's history is an `event: task` with `id: <event id>`; a client that
reconnects with `Last-Event-ID` gets every entry after that one from the stored history, then
the live ones, so it misses nothing. Progress (`event: progress`, no id: it is not history) is
sent as it changes and once on connect; `event: end` closes a task's stream once it is final.
A comment line every HEARTBEAT_SECONDS keeps proxies from closing an idle stream, and a
stream ends after MAX_SECONDS (clients reconnect with Last-Event-ID and a fresh token).

The owner's stream reads history across tasks, whose ids may commit out of order by a few
milliseconds: it looks back LATE_COMMIT_SECONDS for such entries, and after a reconnect may
repeat one (ids are unique: skip what you have).

The counts stream sends `event: counts` (the admin dashboard's status table, no id: it is a
state, not history) on connect and whenever it changes: any task's change wakes it, and it
reads at most once every COUNTS_SECONDS, so a busy system costs one read a second per stream
(and one query a second for all of them: the figures are cached).

Authentication, permissions, the rate limit and errors are the API's (a DRF view); the body
is a generator the server streams. Under ASGI (uvicorn, see docs) a stream costs a coroutine;
under WSGI it holds a thread, so a WSGI process serves at most WSGI_STREAMS_PER_PROCESS.
"""

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import InterfaceError, OperationalError, connection
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers
from rest_framework.exceptions import NotFound, Throttled, ValidationError
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.exceptions import ServiceUnavailable

from . import dashboard
from .live import ANY, HEARTBEAT_SECONDS, SyncListener, hub, slots
from .models import FINAL_STATUSES, Task, TaskEvent, TaskStatus
from .serializers import TaskEventSerializer

MAX_SECONDS = 15 * 60
# How often a stream reads the table without a wake-up: each transition that writes history
# or progress publishes one after its commit (live.py), so this only bounds the delay when
# one is lost, or in the first second of a stream (publishers look for open streams once a
# second). Without Redis there are no wake-ups: the table is read every second.
POLL_SECONDS = 5.0 if settings.REDIS_URL else 1.0
LATE_COMMIT_SECONDS = 10
BATCH = 500
WSGI_STREAMS_PER_PROCESS = 2

_wsgi_streams = threading.BoundedSemaphore(WSGI_STREAMS_PER_PROCESS)


def frame(event: str, data: dict, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


class EventStreamRenderer(renderers.BaseRenderer):
    """Lets `Accept: text/event-stream` through content negotiation; errors still go out as JSON."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data).encode() if data is not None else b""


def _reading(read):
    """A stream's read: on a database error, leave no broken connection behind."""
    try:
        return read()
    except (OperationalError, InterfaceError):
        # A stream's reads may run on a thread no request cycle ever resets: leave no
        # broken connection there for the next stream (this one ends; its client resumes).
        connection.close()
        raise


class Stream:
    """What one stream has sent, and what to send next; every read is one query or two."""

    min_interval = 0.0  # every wake-up is read at once

    def __init__(self, *, task: Task | None = None, owner=None, status=None, kind=None, after: int | None = None):
        self.task, self.owner, self.status, self.kind = task, owner, status, kind
        self.after = after or 0  # the newest entry sent
        # Owner stream: entries at or below `settled` are sent or given up; those sent in the
        # last LATE_COMMIT_SECONDS are in `recent` (id: when), so a late commit below them is
        # still found and none is sent twice.
        self.settled = self.after
        self.recent: dict[int, float] = {}
        self.progress: dict = {}
        self.finished = False

    @property
    def keys(self) -> list[str]:
        return [f"task:{self.task.pk}"] if self.task else [f"owner:{self.owner.pk}"]

    def start(self) -> list[str]:
        if self.task is None:
            if not self.after:  # from now on
                self.after = TaskEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
                self.settled = self.after
            else:  # a reconnect: look back for entries that committed after the last one sent
                last = TaskEvent.objects.filter(id__lte=self.after).order_by("-id").values("created_at").first()
                if last is not None:
                    horizon = last["created_at"] - timedelta(seconds=LATE_COMMIT_SECONDS)
                    older = TaskEvent.objects.filter(id__lte=self.after, created_at__lt=horizon).order_by("-id")
                    self.settled = older.values_list("id", flat=True).first() or 0
        frames = [f"retry: {int(POLL_SECONDS * 1000)}\n\n"]
        return frames + self.read()

    def read(self) -> list[str]:
        return _reading(lambda: self._history() + self._progress())

    def _history(self) -> list[str]:
        events = TaskEvent.objects.select_related("actor", "task").order_by("id")
        if self.task is not None:
            events = events.filter(task=self.task, id__gt=self.after)
        else:
            now = time.monotonic()
            for event_id, sent in list(self.recent.items()):
                if sent < now - LATE_COMMIT_SECONDS:
                    self.settled = max(self.settled, event_id)
                    del self.recent[event_id]
            events = events.filter(task__owner=self.owner, id__gt=self.settled)
            events = events.filter(task__kind=self.kind) if self.kind else events
            events = events.filter(to_status=self.status) if self.status else events
        frames = []
        for event in events[:BATCH]:
            if event.pk in self.recent:
                continue
            frames.append(frame("task", self._entry(event), event.pk))
            self.after = max(self.after, event.pk)
            if self.task is None:
                self.recent[event.pk] = time.monotonic()
        return frames

    def _entry(self, event: TaskEvent) -> dict:
        data = {"task": str(event.task_id), "kind": event.task.kind, **TaskEventSerializer(event).data}
        if event.to_status == TaskStatus.SUCCEEDED:
            data["result"] = event.task.result
        elif event.to_status in (TaskStatus.FAILED, TaskStatus.RETRYING, TaskStatus.CANCELLED):
            data["error"] = event.task.error
        return data

    def _progress(self) -> list[str]:
        if self.status not in (None, TaskStatus.RUNNING):
            return []
        columns = ("id", "status", "progress", "progress_message")
        if self.task is not None:
            rows = Task.objects.filter(pk=self.task.pk).values(*columns)
        else:
            rows = Task.objects.filter(owner=self.owner, status=TaskStatus.RUNNING).values(*columns)
            rows = rows.filter(kind=self.kind) if self.kind else rows
        frames, rows = [], list(rows[:BATCH])
        for row in rows:
            if self.task is not None and row["status"] in FINAL_STATUSES and self._caught_up():
                self.finished = True
            shown = (row["progress"], row["progress_message"])
            if row["status"] == TaskStatus.RUNNING and self.progress.get(row["id"]) != shown:
                self.progress[row["id"]] = shown
                data = {"task": str(row["id"]), "progress": shown[0], "progress_message": shown[1]}
                frames.append(frame("progress", data))
        if self.finished:
            frames.append(frame("end", {"task": str(self.task.pk), "status": rows[0]["status"]}))
        return frames

    def _caught_up(self) -> bool:
        return not TaskEvent.objects.filter(task=self.task, id__gt=self.after).exists()


class CountsStream:
    """The dashboard's status table, sent when it changes; read at most once every COUNTS_SECONDS."""

    keys = [ANY]
    min_interval = float(dashboard.COUNTS_SECONDS)
    finished = False

    def __init__(self):
        self.sent: dict | None = None

    def start(self) -> list[str]:
        return [f"retry: {int(POLL_SECONDS * 1000)}\n\n", *self.read()]

    def read(self) -> list[str]:
        counts = _reading(dashboard.status_counts)
        if counts["statuses"] == self.sent:
            return []
        self.sent = counts["statuses"]
        return [frame("counts", counts)]


class _Body:
    """The response's content: the stream's frames, and its slot given back when the server
    closes the response (always, whether the client left or the stream ended)."""

    def __init__(self, stream: Stream | CountsStream, user_id, slot: str, *, asgi: bool):
        self.stream, self.user_id, self.slot, self.asgi = stream, user_id, slot, asgi
        self._frames = self._async_frames() if asgi else self._sync_frames()
        self._open = True

    def __iter__(self):
        if self.asgi:
            raise TypeError("an asynchronous stream")  # Django then iterates it with `async for`
        return self._frames

    def __aiter__(self):
        return self._frames

    def close(self) -> None:
        if self._open:
            self._open = False
            slots.release(self.user_id, self.slot)
            if not self.asgi:
                self._frames.close()
                _wsgi_streams.release()

    def _sync_frames(self) -> Iterator[str]:
        stream, listener = self.stream, SyncListener(self.stream.keys)
        try:
            yield from stream.start()
            started = beat = read_at = time.monotonic()
            while not stream.finished and time.monotonic() - started < MAX_SECONDS:
                listener.wait(POLL_SECONDS)
                time.sleep(max(read_at + stream.min_interval - time.monotonic(), 0))
                read_at = time.monotonic()
                yield from stream.read()
                if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                    beat = time.monotonic()
                    slots.renew(self.user_id, self.slot)
                    yield ": keep-alive\n\n"
        finally:
            listener.close()

    async def _async_frames(self) -> AsyncIterator[str]:
        stream, read = self.stream, sync_to_async(self.stream.read)
        for chunk in await sync_to_async(stream.start)():
            yield chunk
        started = beat = read_at = time.monotonic()
        while not stream.finished and time.monotonic() - started < MAX_SECONDS:
            await hub.wait(stream.keys, POLL_SECONDS)
            # Debounced: changes that come while it waits are read together.
            await asyncio.sleep(max(read_at + stream.min_interval - time.monotonic(), 0))
            read_at = time.monotonic()
            for chunk in await read():
                yield chunk
            if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                beat = time.monotonic()
                await sync_to_async(slots.renew)(self.user_id, self.slot)
                yield ": keep-alive\n\n"


class _StreamView(APIView):
    renderer_classes = [renderers.JSONRenderer, EventStreamRenderer]

    def finalize_response(self, request, response, *args, **kwargs):
        # An error is the API's JSON, whatever the client accepts (a stream is not a Response).
        if isinstance(response, Response):
            request.accepted_renderer, request.accepted_media_type = renderers.JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    def respond(self, request, stream: Stream | CountsStream) -> StreamingHttpResponse:
        asgi = isinstance(request._request, ASGIRequest)
        if not asgi and not _wsgi_streams.acquire(blocking=False):
            raise ServiceUnavailable(
                "This process serves no more streams: live events are served by the ASGI process (see the docs)."
            )
        slot = slots.acquire(request.user.pk, settings.STREAMS_PER_USER)
        if slot is None:
            if not asgi:
                _wsgi_streams.release()
            raise Throttled(detail=f"At most {settings.STREAMS_PER_USER} open streams per user; close one first.")
        response = StreamingHttpResponse(
            _Body(stream, request.user.pk, slot, asgi=asgi), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx and friends: pass events on at once
        return response

    @staticmethod
    def last_event_id(request) -> int | None:
        raw = request.headers.get("Last-Event-ID") or request.query_params.get("last_event_id")
        if raw in (None, ""):
            return None
        if not raw.isdigit() or len(raw) > 18:
            raise ValidationError({"Last-Event-ID": ["An event id (a whole number) from this stream."]})
        return int(raw)


class TaskEventStreamView(_StreamView):
    @extend_schema(
        operation_id="tasks_events_stream",
        summary="One task's events, live (server-sent events)",
        responses={(200, "text/event-stream"): str},
    )
    def get(self, request, pk):
        task = Task.objects.visible_to(request.user).filter(pk=pk).first()
        if task is None:
            raise NotFound()
        return self.respond(request, Stream(task=task, after=self.last_event_id(request)))


class OwnerEventStreamView(_StreamView):
    @extend_schema(
        operation_id="tasks_events_stream_all",
        summary="Your tasks' events from now on, live (server-sent events)",
        parameters=[
            OpenApiParameter("status", enum=TaskStatus.values, description="only entries moving to this status"),
            OpenApiParameter("kind", str, description="only tasks of this kind"),
        ],
        responses={(200, "text/event-stream"): str},
    )
    def get(self, request):
        status, kind = request.query_params.get("status"), request.query_params.get("kind")
        if status is not None and status not in TaskStatus.values:
            raise ValidationError({"status": [f"One of {', '.join(TaskStatus.values)}."]})
        if kind is not None and not 0 < len(kind) <= 100:
            raise ValidationError({"kind": ["A kind's name."]})
        stream = Stream(owner=request.user, status=status, kind=kind, after=self.last_event_id(request))
        return self.respond(request, stream)


class SeesEveryTask(BasePermission):
    """Staff who may open the admin's task pages, as the admin dashboard requires."""

    message = "Only staff with the tasks.view_task permission see every task's counts."

    def has_permission(self, request, view):
        user = request.user
        return bool(
            user.is_active
            and user.is_staff
            and (user.has_perm("tasks.view_task") or user.has_perm("tasks.change_task"))
        )


class CountsStreamView(_StreamView):
    permission_classes = [IsAuthenticated, SeesEveryTask]

    @extend_schema(
        operation_id="tasks_counts_stream",
        summary="Staff: every task's counts by status, live (server-sent events)",
        description="`event: counts` on connect and whenever a count changes, at most once a second: "
        "for each status `live` (tasks in it now; waiting and running states), `hour`, `day` and `week`.",
        responses={(200, "text/event-stream"): str},
    )
    def get(self, request):
        return self.respond(request, CountsStream())
