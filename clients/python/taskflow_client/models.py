"""Typed views of the API's resources.

Each is a dataclass built from the JSON with `from_api()`: timestamps become aware datetimes,
nested resources their dataclasses; fields a newer server adds are kept in `raw`.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")
M = TypeVar("M", bound="Model")

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def parse_datetime(value: str) -> datetime:
    # Python 3.10's fromisoformat does not read a trailing "Z".
    return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        origin = typing.get_origin(hint)
    if hint is datetime:
        return parse_datetime(value)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_convert(item, element) for element in value]
    if isinstance(hint, type) and issubclass(hint, Model):
        return hint.from_api(value)
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@dataclass
class Model:
    @classmethod
    def from_api(cls: type[M], data: dict[str, Any]) -> M:
        hints = _hints(cls)  # type: ignore[arg-type]
        names = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "raw"}
        values = {name: _convert(hints[name], data[name]) for name in names if name in data}
        return cls(**values, raw=dict(data))  # type: ignore[call-arg]

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.name != "raw"}


@dataclass
class TaskFile(Model):
    id: str
    role: str
    name: str
    size: int
    content_type: str
    download_url: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Task(Model):
    """A task. Lists leave out description, payload, result, traceback, files and waiting_for
    (None there). `waiting_for` says which concurrency limit holds a queued task ("waiting for
    a slot: kind files.csv_report limit 2 reached"), or is empty."""

    id: str
    url: str
    owner: str
    kind: str
    title: str
    priority: str
    queue: str
    status: str
    attempts: int
    max_retries: int
    timeout: int
    run_at: datetime | None
    idempotency_key: str | None
    progress: int
    progress_message: str
    error: str
    worker: str
    cancel_requested: bool
    callback_url: str
    trigger: str
    schedule: str | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    description: str | None = None
    payload: Any = None
    result: Any = None
    traceback: str | None = None
    files: list[TaskFile] | None = None
    waiting_for: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass
class TaskEvent(Model):
    """One row of a task's stored history: a state change or a staff/owner action."""

    id: int
    created_at: datetime
    from_status: str | None
    to_status: str
    actor: str | None
    message: str
    worker: str
    attempt: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Kind(Model):
    name: str
    description: str
    queue: str
    max_retries: int
    timeout: int
    payload_schema: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class File(Model):
    id: str
    owner: str
    name: str
    size: int
    content_type: str
    sha256: str
    state: str
    created_at: datetime
    updated_at: datetime
    download_url: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class UploadTarget(Model):
    url: str
    fields: dict[str, str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class PresignedUpload(Model):
    file: File
    upload: UploadTarget
    complete_url: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Schedule(Model):
    id: str
    owner: str
    name: str
    kind: str
    payload: Any
    priority: str
    cron: str
    cron_description: str
    interval_seconds: int | None
    timezone: str
    enabled: bool
    paused_reason: str
    overlap_policy: str
    next_run_at: datetime | None
    last_fired_at: datetime | None
    last_run: dict[str, Any] | None
    skipped_runs: int
    created_at: datetime
    updated_at: datetime
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class SchedulePreview(Model):
    local: str
    utc: str
    flag: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class User(Model):
    id: int
    email: str
    is_staff: bool
    date_joined: datetime
    full_name: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class ApiKey(Model):
    """An API key; `key` is set only in the answer to its creation (it is shown once)."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    key: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Tokens(Model):
    access: str
    refresh: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class WebhookEndpoint(Model):
    """A webhook endpoint; `secret` is set only on creation and on rotation."""

    id: str
    owner: str
    url: str
    description: str
    events: list[str]
    enabled: bool
    disabled_reason: str
    consecutive_failures: int
    created_at: datetime
    updated_at: datetime
    secret: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class DeliveryAttempt(Model):
    number: int
    created_at: datetime
    status_code: int | None
    duration_ms: int | None
    response_snippet: str
    error: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class WebhookDelivery(Model):
    id: str
    owner: str
    endpoint: str | None
    task: str | None
    url: str
    event: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str
    created_at: datetime
    finished_at: datetime | None
    body: Any
    attempt_log: list[DeliveryAttempt]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class CallbackSecret(Model):
    secret: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Page(Generic[T]):
    """One page of a cursor-paginated list; `next`/`previous` are absolute URLs or None."""

    results: list[T]
    next: str | None = None
    previous: str | None = None


@dataclass
class Event:
    """One live event of a task, from the stream or (when the server has none) from polling.

    `type` is the new status (`queued`, `running`, `retrying`, `succeeded`, ...) or `progress`;
    `id` is the position to resume from (`Last-Event-ID`), None for polled progress.
    """

    type: str
    task_id: str
    id: str | None = None
    status: str | None = None
    progress: int | None = None
    message: str = ""
    attempt: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES or self.type in FINAL_STATUSES
