"""Every API operation as a `Call`: what to send and how to read the answer, with no I/O.

The sync and async clients run the same calls through their transports, so an operation is
written once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from .models import (
    ApiKey,
    CallbackSecret,
    File,
    Kind,
    Model,
    Page,
    PresignedUpload,
    Schedule,
    SchedulePreview,
    Task,
    TaskEvent,
    Tokens,
    User,
    WebhookDelivery,
    WebhookEndpoint,
)

T = TypeVar("T")
M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str  # under the base URL, or an absolute URL (a `next` link)
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | list[tuple[str, Any]] | None = None
    json: Any = None
    files: Any = None  # multipart parts, as httpx takes them
    data: Any = None  # form fields sent with `files`
    # None: decided by the method (GET, PUT, DELETE are); a keyed submit says True.
    idempotent: bool | None = None
    authenticated: bool = True


def one(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.from_api(response.json())


def many(model: type[M]) -> Callable[[httpx.Response], list[M]]:
    return lambda response: [model.from_api(item) for item in response.json()]


def page(model: type[M]) -> Callable[[httpx.Response], Page[M]]:
    def parse(response: httpx.Response) -> Page[M]:
        body = response.json()
        if isinstance(body, list):  # an unpaginated list (schedule previews, whatever the schema says)
            return Page([model.from_api(item) for item in body])
        return Page([model.from_api(item) for item in body["results"]], body.get("next"), body.get("previous"))

    return parse


def nothing(response: httpx.Response) -> None:
    return None


def next_page(call: Call[Page[T]], current: Page[T]) -> Call[Page[T]] | None:
    if not current.next:
        return None
    return Call("GET", current.next, call.parse)


def ident(obj: Any) -> str:
    """An object's id for a URL path: the object itself (anything with `.id`) or its id."""
    value = str(getattr(obj, "id", obj))
    if not value:
        raise ValueError("an id is required")
    return quote(value, safe="")


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


# --- auth -----------------------------------------------------------------------------------
def token_obtain(email: str, password: str) -> Call[Tokens]:
    return Call("POST", "/api/auth/token/", one(Tokens), json={"email": email, "password": password},
                idempotent=True, authenticated=False)  # fmt: skip


def token_refresh(refresh: str) -> Call[Tokens]:
    # Not idempotent: the server blacklists the old refresh token on first use.
    return Call("POST", "/api/auth/token/refresh/", one(Tokens), json={"refresh": refresh}, authenticated=False)


def register(email: str, password: str, full_name: str = "") -> Call[User]:
    body = {"email": email, "password": password, "full_name": full_name}
    return Call("POST", "/api/auth/register/", one(User), json=body, authenticated=False)


def logout(refresh: str) -> Call[None]:
    return Call("POST", "/api/auth/logout/", nothing, json={"refresh": refresh})


def me() -> Call[User]:
    return Call("GET", "/api/auth/me/", one(User))


def update_me(**fields: Any) -> Call[User]:
    return Call("PATCH", "/api/auth/me/", one(User), json=fields)


def api_keys_list() -> Call[Page[ApiKey]]:
    return Call("GET", "/api/auth/api-keys/", page(ApiKey))


def api_key_create(name: str) -> Call[ApiKey]:
    return Call("POST", "/api/auth/api-keys/", one(ApiKey), json={"name": name})


def api_key_get(key: Any) -> Call[ApiKey]:
    return Call("GET", f"/api/auth/api-keys/{ident(key)}/", one(ApiKey))


def api_key_revoke(key: Any) -> Call[None]:
    return Call("DELETE", f"/api/auth/api-keys/{ident(key)}/", nothing)


# --- tasks ----------------------------------------------------------------------------------
def task_spec(kind: str, payload: Mapping[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """One task's submission body; an idempotency key is generated when none is given."""
    options["run_at"] = _iso(options.get("run_at"))
    body = {"kind": kind, "payload": dict(payload or {}), **_drop_none(options)}
    body.setdefault("idempotency_key", str(uuid.uuid4()))
    return body


def task_submit(body: dict[str, Any]) -> Call[Task]:
    # The key makes a repeat return the first task: safe to send again after a lost answer.
    return Call("POST", "/api/tasks/", one(Task), json=body, idempotent=bool(body.get("idempotency_key")))


def task_bulk(bodies: list[dict[str, Any]]) -> Call[list[Task]]:
    keyed = all(body.get("idempotency_key") for body in bodies)
    parse = lambda response: [Task.from_api(item) for item in response.json()["tasks"]]  # noqa: E731
    return Call("POST", "/api/tasks/bulk/", parse, json={"tasks": bodies}, idempotent=keyed)


def tasks_list(
    *,
    status: str | Iterable[str] | None = None,
    kind: str | None = None,
    priority: str | None = None,
    search: str | None = None,
    owner: str | None = None,
    created_after: datetime | str | None = None,
    created_before: datetime | str | None = None,
    page_size: int | None = None,
) -> Call[Page[Task]]:
    params: list[tuple[str, Any]] = [("status", s) for s in ([status] if isinstance(status, str) else status or ())]
    params += _drop_none({
        "kind": kind, "priority": priority, "search": search, "owner": owner, "page_size": page_size,
        "created_after": _iso(created_after), "created_before": _iso(created_before),
    }).items()  # fmt: skip
    return Call("GET", "/api/tasks/", page(Task), params=params)


def task_get(task: Any) -> Call[Task]:
    return Call("GET", f"/api/tasks/{ident(task)}/", one(Task))


def task_events(task: Any) -> Call[list[TaskEvent]]:
    return Call("GET", f"/api/tasks/{ident(task)}/events/", many(TaskEvent))


def task_retry(task: Any, reason: str = "") -> Call[Task]:
    return Call("POST", f"/api/tasks/{ident(task)}/retry/", one(Task), json={"reason": reason})


def task_cancel(task: Any, reason: str = "", hard: bool = False) -> Call[Task]:
    return Call("POST", f"/api/tasks/{ident(task)}/cancel/", one(Task), json={"reason": reason, "hard": hard})


def kinds_list() -> Call[list[Kind]]:
    return Call("GET", "/api/kinds/", many(Kind))


# --- files ----------------------------------------------------------------------------------
def files_list(*, state: str | None = None, page_size: int | None = None) -> Call[Page[File]]:
    return Call("GET", "/api/files/", page(File), params=_drop_none({"state": state, "page_size": page_size}))


def file_get(file: Any) -> Call[File]:
    return Call("GET", f"/api/files/{ident(file)}/", one(File))


def file_delete(file: Any) -> Call[None]:
    return Call("DELETE", f"/api/files/{ident(file)}/", nothing)


def file_presign(name: str, size: int, content_type: str) -> Call[PresignedUpload]:
    body = {"name": name, "size": size, "content_type": content_type}
    return Call("POST", "/api/files/presign/", one(PresignedUpload), json=body)


def file_complete(file: Any) -> Call[File]:
    # Idempotent: completing a ready file again verifies the same object.
    return Call("POST", f"/api/files/{ident(file)}/complete/", one(File), json={}, idempotent=True)


def file_download_path(file: Any) -> str:
    return f"/api/files/{ident(file)}/download/"


# --- schedules ------------------------------------------------------------------------------
def schedules_list(*, page_size: int | None = None) -> Call[Page[Schedule]]:
    return Call("GET", "/api/schedules/", page(Schedule), params=_drop_none({"page_size": page_size}))


def schedule_create(**fields: Any) -> Call[Schedule]:
    return Call("POST", "/api/schedules/", one(Schedule), json=_drop_none(fields))


def schedule_get(schedule: Any) -> Call[Schedule]:
    return Call("GET", f"/api/schedules/{ident(schedule)}/", one(Schedule))


def schedule_replace(schedule: Any, **fields: Any) -> Call[Schedule]:
    return Call("PUT", f"/api/schedules/{ident(schedule)}/", one(Schedule), json=_drop_none(fields))


def schedule_update(schedule: Any, **fields: Any) -> Call[Schedule]:
    return Call("PATCH", f"/api/schedules/{ident(schedule)}/", one(Schedule), json=fields)


def schedule_delete(schedule: Any) -> Call[None]:
    return Call("DELETE", f"/api/schedules/{ident(schedule)}/", nothing)


def schedule_preview(schedule: Any, count: int = 5) -> Call[Page[SchedulePreview]]:
    return Call("GET", f"/api/schedules/{ident(schedule)}/preview/", page(SchedulePreview), params={"count": count})


def schedule_run(schedule: Any, reason: str = "") -> Call[Task]:
    return Call("POST", f"/api/schedules/{ident(schedule)}/run/", one(Task), json={"reason": reason})


# --- webhooks -------------------------------------------------------------------------------
def webhooks_list() -> Call[Page[WebhookEndpoint]]:
    return Call("GET", "/api/webhooks/", page(WebhookEndpoint))


def webhook_create(url: str, **fields: Any) -> Call[WebhookEndpoint]:
    return Call("POST", "/api/webhooks/", one(WebhookEndpoint), json={"url": url, **_drop_none(fields)})


def webhook_get(endpoint: Any) -> Call[WebhookEndpoint]:
    return Call("GET", f"/api/webhooks/{ident(endpoint)}/", one(WebhookEndpoint))


def webhook_update(endpoint: Any, **fields: Any) -> Call[WebhookEndpoint]:
    return Call("PATCH", f"/api/webhooks/{ident(endpoint)}/", one(WebhookEndpoint), json=fields)


def webhook_delete(endpoint: Any) -> Call[None]:
    return Call("DELETE", f"/api/webhooks/{ident(endpoint)}/", nothing)


def webhook_rotate_secret(endpoint: Any) -> Call[WebhookEndpoint]:
    return Call("POST", f"/api/webhooks/{ident(endpoint)}/rotate-secret/", one(WebhookEndpoint), json={})


def webhook_deliveries(endpoint: Any | None = None) -> Call[Page[WebhookDelivery]]:
    path = f"/api/webhooks/{ident(endpoint)}/deliveries/" if endpoint is not None else "/api/webhook-deliveries/"
    return Call("GET", path, page(WebhookDelivery))


def webhook_delivery_get(delivery: Any) -> Call[WebhookDelivery]:
    return Call("GET", f"/api/webhook-deliveries/{ident(delivery)}/", one(WebhookDelivery))


def webhook_redeliver(delivery: Any) -> Call[WebhookDelivery]:
    return Call("POST", f"/api/webhook-deliveries/{ident(delivery)}/redeliver/", one(WebhookDelivery), json={})


def callback_secret(rotate: bool = False) -> Call[CallbackSecret]:
    return Call("POST" if rotate else "GET", "/api/webhooks/callback-secret/", one(CallbackSecret),
                json={} if rotate else None)  # fmt: skip
