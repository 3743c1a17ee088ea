"""A task's live events: read from the server-sent event stream, or made by polling.

The stream (`GET /api/tasks/{id}/events/stream/`) sends one SSE message per event of the
task's history, with an `id:` line; a client that reconnects sends `Last-Event-ID` and the
server replays what came after it. Each message's `data:` is a JSON object: `event: task` is an
entry of the history (its type is the state it moved to, `to_status`), `event: progress` a
progress report (`progress`, `progress_message`), and `event: end` marks the close after the
task became final (not yielded).

A server without the stream answers 404 (or 405/501, or not `text/event-stream`): the client
then polls `GET /api/tasks/{id}/` with `If-None-Match` (an unchanged task is a bodiless 304)
and reads new rows of `GET /api/tasks/{id}/events/` whenever the task changed. Both ways the
caller sees the same `Event`s and the same ids, so a polled id resumes a stream and back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx

from ._calls import ident
from .models import Event, Task, TaskEvent

STREAM_CONTENT_TYPE = "text/event-stream"
# Answers that mean "this server has no stream": fall back to polling.
NO_STREAM_STATUSES = frozenset({404, 405, 406, 501})


def stream_path(task: object) -> str:
    return f"/api/tasks/{ident(task)}/events/stream/"


def has_stream(response: httpx.Response) -> bool:
    content_type = response.headers.get("Content-Type", "")
    return response.status_code == 200 and content_type.split(";")[0].strip() == STREAM_CONTENT_TYPE


def event_from_sse(task_id: str, name: str, data: str, event_id: str | None) -> Event | None:
    """An Event from one SSE message; None for comments, heartbeats and data that is not an object."""
    try:
        body = json.loads(data) if data else None
    except ValueError:
        return None
    if not isinstance(body, dict) or name == "end":  # `end` only marks the stream's close
        return None
    status = body.get("to_status") or body.get("status")
    # `event: task` is an entry of the history: its type is the state it moved to.
    kind = name if name and name not in ("message", "task") else str(body.get("type") or status or "message")
    if kind == "progress":
        # Progress is not history: it has no id of its own (an SSE reader repeats the last one).
        event_id = None
    return Event(
        type=kind,
        task_id=str(body.get("task") or body.get("task_id") or task_id),
        id=event_id or (str(body["id"]) if body.get("id") is not None else None),
        status=status,
        progress=body.get("progress"),
        message=str(body.get("message") or body.get("progress_message") or ""),
        attempt=body.get("attempt"),
        data=body,
    )


def event_from_row(task_id: str, row: TaskEvent) -> Event:
    return Event(
        type=row.to_status,
        task_id=task_id,
        id=str(row.id),
        status=row.to_status,
        message=row.message,
        attempt=row.attempt,
        data=row.raw,
    )


@dataclass
class PollState:
    """What polling has already handed out, so each event is yielded once."""

    task_id: str
    last_event_id: int = 0
    etag: str | None = None
    progress: tuple[int, str] | None = None
    interval: float = 0.25
    min_interval: float = 0.25
    max_interval: float = 2.0
    pending: list[Event] = field(default_factory=list)

    @classmethod
    def resume(cls, task_id: str, last_event_id: str | None, *, min_interval: float, max_interval: float) -> PollState:
        last = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
        return cls(task_id, last, interval=min_interval, min_interval=min_interval, max_interval=max_interval)

    def headers(self) -> dict[str, str]:
        return {"If-None-Match": self.etag} if self.etag else {}

    def unchanged(self) -> None:
        """A 304: poll a little less often while nothing moves."""
        self.interval = min(self.max_interval, self.interval * 1.5)

    def changed(self, response: httpx.Response) -> Task:
        self.etag = response.headers.get("ETag")
        self.interval = self.min_interval
        return Task.from_api(response.json())

    def events(self, task: Task, rows: list[TaskEvent]) -> list[Event]:
        """New history rows in order (a replay may hold an earlier run's final event), then the progress
        if it moved; when the task is final, the list ends with its final event."""
        new_rows = sorted((row for row in rows if row.id > self.last_event_id), key=lambda row: row.id)
        out = [event_from_row(self.task_id, row) for row in new_rows]
        if out:
            self.last_event_id = max(int(event.id or 0) for event in out)
        if task.is_final and not (out and out[-1].is_final):
            # The final row is written with the finish, so it should be here; never hang on it.
            out.append(Event(task.status, self.task_id, status=task.status, message=task.error, attempt=task.attempts))
        progress = (task.progress, task.progress_message)
        if task.status == "running" and progress != self.progress:
            out.append(Event("progress", self.task_id, status=task.status, progress=task.progress,
                             message=task.progress_message, attempt=task.attempts))  # fmt: skip
        self.progress = progress
        return out
