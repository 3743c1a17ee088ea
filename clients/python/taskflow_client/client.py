"""`TaskFlow`: the synchronous client."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from httpx_sse import EventSource

from . import _calls as calls
from ._common import DOWNLOAD_TIMEOUT, remaining, resolve_settings, stream_timeout, task_id_of
from ._events import NO_STREAM_STATUSES, PollState, event_from_sse, has_stream, stream_path
from ._files import PRESIGN_ABOVE_BYTES, Progress, Source, download_name, is_redirect
from ._retry import RetryPolicy
from ._transport import Credentials, SyncTransport
from .errors import NotSupported, TaskFlowError, TransportError
from .models import (
    ApiKey,
    CallbackSecret,
    Event,
    File,
    Kind,
    Page,
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


class _Resource:
    def __init__(self, transport: SyncTransport):
        self._t = transport

    def _iterate(self, call: calls.Call[Page[T]], limit: int | None = None) -> Iterator[T]:
        """Every item across the pages (following `next`), or the first `limit`."""
        count = 0
        next_call: calls.Call[Page[T]] | None = call
        while next_call is not None:
            current = self._t.call(next_call)
            for item in current.results:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield item
            next_call = calls.next_page(call, current)


class Auth(_Resource):
    def login(self, email: str | None = None, password: str | None = None) -> Tokens:
        """Obtain a JWT pair (with the client's own email and password when none are given)."""
        if email is not None:
            credentials = self._t.credentials
            credentials.api_key, credentials.email, credentials.password = None, email, password
        self._t.login()
        return Tokens(access=self._t.credentials.access or "", refresh=self._t.credentials.refresh or "")

    def refresh(self) -> Tokens:
        self._t.refresh_tokens(self._t.credentials.access)
        return Tokens(access=self._t.credentials.access or "", refresh=self._t.credentials.refresh or "")

    def logout(self) -> None:
        if self._t.credentials.refresh:
            self._t.call(calls.logout(self._t.credentials.refresh))
        self._t.credentials.access = self._t.credentials.refresh = None

    def register(self, email: str, password: str, full_name: str = "") -> User:
        return self._t.call(calls.register(email, password, full_name))

    def me(self) -> User:
        return self._t.call(calls.me())

    def update_me(self, *, full_name: str) -> User:
        return self._t.call(calls.update_me(full_name=full_name))

    def api_keys(self) -> Iterator[ApiKey]:
        return self._iterate(calls.api_keys_list())

    def create_api_key(self, name: str) -> ApiKey:
        return self._t.call(calls.api_key_create(name))

    def get_api_key(self, key: Any) -> ApiKey:
        return self._t.call(calls.api_key_get(key))

    def revoke_api_key(self, key: Any) -> None:
        self._t.call(calls.api_key_revoke(key))


class Tasks(_Resource):
    def submit(self, kind: str, payload: Mapping[str, Any] | None = None, **options: Any) -> Task:
        """Submit a task. Options: title, description, priority, max_retries, timeout, run_at,
        callback_url, idempotency_key (a uuid4 by default, kept across this call's retries)."""
        return self._t.call(calls.task_submit(calls.task_spec(kind, payload, **options)))

    def bulk(self, tasks: Iterable[Mapping[str, Any]]) -> builtins.list[Task]:
        """Submit many at once (all or nothing); each item is `{kind, payload, ...}` as for submit()."""
        bodies = [calls.task_spec(**dict(item)) for item in tasks]
        return self._t.call(calls.task_bulk(bodies))

    def list(self, *, limit: int | None = None, **filters: Any) -> Iterator[Task]:
        """Every task matching the filters (status, kind, priority, search, owner, created_after/before)."""
        return self._iterate(calls.tasks_list(**filters), limit)

    def page(self, **filters: Any) -> Page[Task]:
        return self._t.call(calls.tasks_list(**filters))

    def get(self, task: Any) -> Task:
        return self._t.call(calls.task_get(task))

    def history(self, task: Any) -> builtins.list[TaskEvent]:
        return self._t.call(calls.task_events(task))

    def retry(self, task: Any, *, reason: str = "") -> Task:
        return self._t.call(calls.task_retry(task, reason))

    def cancel(self, task: Any, *, reason: str = "", hard: bool = False) -> Task:
        return self._t.call(calls.task_cancel(task, reason, hard))

    def wait(self, task: Any, timeout: float | None = None) -> Task:
        """Block until the task is final and return it; WaitTimeout after `timeout` seconds."""
        for _event in self.events(task, timeout=timeout):
            pass
        return self.get(task)

    def events(self, task: Any, *, last_event_id: str | None = None, timeout: float | None = None) -> Iterator[Event]:
        """The task's events as they happen, until it is final: from the live stream, resumed with
        Last-Event-ID after a cut, or by polling when the server has no stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        task_id = task_id_of(task)
        failures = 0
        last_was_final = False
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            call = calls.Call("GET", stream_path(task_id), calls.nothing)
            left = remaining(deadline)
            try:
                with self._t.send(call, stream=True, headers=headers, timeout=stream_timeout(left)) as resp:
                    if not has_stream(resp):
                        break
                    for sse in EventSource(resp).iter_sse():
                        if sse.id:
                            last_event_id = sse.id
                        event = event_from_sse(task_id, sse.event, sse.data, sse.id or None)
                        if event is not None:
                            failures = 0
                            last_was_final = event.is_final
                            yield event
                        remaining(deadline)
                    # The server ends the stream once the task is final (a replay may show an
                    # earlier run's final event mid-stream); any other end is a cut: reconnect.
                    if last_was_final:
                        return
                    failures += 1
            except TaskFlowError as error:
                if error.status in NO_STREAM_STATUSES:
                    break
                if not isinstance(error, TransportError):
                    raise
                failures += 1
            except httpx.TransportError:
                failures += 1  # cut mid-stream: reconnect with Last-Event-ID
            if failures >= self._t.retry.max_attempts:
                raise TransportError("The event stream kept failing.", code="connection_error")
            remaining(deadline)
            time.sleep(self._t.retry.backoff(failures) if failures else 0)
        yield from self._poll(task_id, last_event_id, deadline)

    def _poll(self, task_id: str, last_event_id: str | None, deadline: float | None) -> Iterator[Event]:
        state = PollState.resume(task_id, last_event_id, min_interval=0.25, max_interval=2.0)
        while True:
            with self._t.send(calls.task_get(task_id), headers=state.headers()) as response:
                task = None if response.status_code == 304 else state.changed(response)
            if task is None:
                state.unchanged()
            else:
                yield from state.events(task, self._t.call(calls.task_events(task_id)))
                if task.is_final:
                    return
            left = remaining(deadline)
            time.sleep(state.interval if left is None else min(state.interval, left))


class Kinds(_Resource):
    def list(self) -> builtins.list[Kind]:
        return self._t.call(calls.kinds_list())


class Files(_Resource):
    def list(self, *, state: str | None = None, limit: int | None = None) -> Iterator[File]:
        return self._iterate(calls.files_list(state=state), limit)

    def get(self, file: Any) -> File:
        return self._t.call(calls.file_get(file))

    def delete(self, file: Any) -> None:
        self._t.call(calls.file_delete(file))

    def upload(self, source: str | os.PathLike[str] | IO[bytes], *, name: str | None = None,
               content_type: str | None = None, progress: Progress | None = None,
               presign_above: int = PRESIGN_ABOVE_BYTES) -> File:  # fmt: skip
        """Upload a path or binary file: multipart through TaskFlow, or presigned straight to the
        object store when larger than `presign_above` and the server offers it."""
        with Source(source, name, content_type) as src:
            if src.size > presign_above:
                try:
                    presigned = self._t.call(calls.file_presign(src.name, src.size, src.content_type))
                except NotSupported:
                    presigned = None
                if presigned is not None:
                    response = self._t.http.post(
                        presigned.upload.url,
                        data=presigned.upload.fields,
                        files={"file": (src.name, src.reader(progress), src.content_type)},
                        timeout=None,
                    )
                    if response.status_code >= 300:
                        raise TaskFlowError(f"The object store refused the upload: {response.text[:500]}",
                                            code="upload_failed", status=response.status_code)  # fmt: skip
                    return self._t.call(calls.Call("POST", presigned.complete_url, calls.one(File), json={},
                                                   idempotent=True))  # fmt: skip
            parts = {"file": (src.name, src.reader(progress), src.content_type)}
            return self._t.call(calls.Call("POST", "/api/files/", calls.one(File), files=parts))

    def download(self, file: Any, dest: str | os.PathLike[str] | IO[bytes] = ".", *,
                 progress: Progress | None = None) -> Path | None:  # fmt: skip
        """Stream a file into `dest`: a directory (the server's file name), a path, or a binary file.

        A path is written through `<path>.part` and renamed at the end: never a half file.
        """
        file_id = task_id_of(file)
        call = calls.Call("GET", calls.file_download_path(file), calls.nothing)
        with self._t.send(call, stream=True, timeout=DOWNLOAD_TIMEOUT) as response:
            if is_redirect(response.status_code):
                # The object store's presigned URL: TaskFlow's credentials must not go there.
                with self._t.http.stream("GET", response.headers["Location"], timeout=DOWNLOAD_TIMEOUT) as remote:
                    if remote.status_code >= 400:
                        remote.read()
                        raise TaskFlowError(f"The object store answered {remote.status_code}.",
                                            code="download_failed", status=remote.status_code)  # fmt: skip
                    return self._save(remote, dest, file_id, progress)
            return self._save(response, dest, file_id, progress)

    def read(self, file: Any) -> bytes:
        import io

        buffer = io.BytesIO()
        self.download(file, buffer)
        return buffer.getvalue()

    def _save(self, response: httpx.Response, dest: Any, file_id: str, progress: Progress | None) -> Path | None:
        total = int(response.headers.get("Content-Length") or 0)
        if not isinstance(dest, str | os.PathLike):
            self._copy(response, dest, total, progress)
            return None
        path = Path(dest)
        if path.is_dir():
            path = path / download_name(response.headers.get("Content-Disposition"), file_id)
        partial = path.with_name(path.name + ".part")
        try:
            with partial.open("wb") as out:
                self._copy(response, out, total, progress)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    @staticmethod
    def _copy(response: httpx.Response, out: IO[bytes], total: int, progress: Progress | None) -> None:
        for chunk in response.iter_bytes():
            out.write(chunk)
            if progress:
                progress(response.num_bytes_downloaded, total)


class Schedules(_Resource):
    def list(self, *, limit: int | None = None) -> Iterator[Schedule]:
        return self._iterate(calls.schedules_list(), limit)

    def create(self, name: str, kind: str, payload: Mapping[str, Any] | None = None, **fields: Any) -> Schedule:
        """fields: cron, interval_seconds, timezone, priority, enabled, overlap_policy."""
        return self._t.call(calls.schedule_create(name=name, kind=kind, payload=payload, **fields))

    def get(self, schedule: Any) -> Schedule:
        return self._t.call(calls.schedule_get(schedule))

    def replace(self, schedule: Any, **fields: Any) -> Schedule:
        return self._t.call(calls.schedule_replace(schedule, **fields))

    def update(self, schedule: Any, **fields: Any) -> Schedule:
        return self._t.call(calls.schedule_update(schedule, **fields))

    def delete(self, schedule: Any) -> None:
        self._t.call(calls.schedule_delete(schedule))

    def preview(self, schedule: Any, count: int = 5) -> builtins.list[SchedulePreview]:
        return list(self._iterate(calls.schedule_preview(schedule, count)))

    def run(self, schedule: Any, *, reason: str = "") -> Task:
        return self._t.call(calls.schedule_run(schedule, reason))


class Webhooks(_Resource):
    def list(self) -> Iterator[WebhookEndpoint]:
        return self._iterate(calls.webhooks_list())

    def create(self, url: str, **fields: Any) -> WebhookEndpoint:
        return self._t.call(calls.webhook_create(url, **fields))

    def get(self, endpoint: Any) -> WebhookEndpoint:
        return self._t.call(calls.webhook_get(endpoint))

    def update(self, endpoint: Any, **fields: Any) -> WebhookEndpoint:
        return self._t.call(calls.webhook_update(endpoint, **fields))

    def delete(self, endpoint: Any) -> None:
        self._t.call(calls.webhook_delete(endpoint))

    def rotate_secret(self, endpoint: Any) -> WebhookEndpoint:
        return self._t.call(calls.webhook_rotate_secret(endpoint))

    def deliveries(self, endpoint: Any | None = None, *, limit: int | None = None) -> Iterator[WebhookDelivery]:
        return self._iterate(calls.webhook_deliveries(endpoint), limit)

    def get_delivery(self, delivery: Any) -> WebhookDelivery:
        return self._t.call(calls.webhook_delivery_get(delivery))

    def redeliver(self, delivery: Any) -> WebhookDelivery:
        return self._t.call(calls.webhook_redeliver(delivery))

    def callback_secret(self, *, rotate: bool = False) -> CallbackSecret:
        return self._t.call(calls.callback_secret(rotate))


class TaskFlow:
    """The TaskFlow API, synchronously. Authenticate with `api_key=` or `email=` and `password=`.

    with TaskFlow("http://localhost:8000", api_key="...") as tf:
        task = tf.tasks.wait(tf.tasks.submit("demo.noop", {}), timeout=60)
    """

    def __init__(self, url: str | None = None, *, api_key: str | None = None, email: str | None = None,
                 password: str | None = None, timeout: float = 30.0, retry: RetryPolicy | None = None,
                 http: httpx.Client | None = None, **httpx_options: Any):  # fmt: skip
        base_url, api_key = resolve_settings(url, api_key, email)
        credentials = Credentials(api_key=api_key, email=email, password=password)
        self._transport = SyncTransport(base_url, credentials, timeout=timeout, retry=retry or RetryPolicy(),
                                        http=http, **httpx_options)  # fmt: skip
        self.base_url = base_url
        self.auth = Auth(self._transport)
        self.tasks = Tasks(self._transport)
        self.kinds = Kinds(self._transport)
        self.files = Files(self._transport)
        self.schedules = Schedules(self._transport)
        self.webhooks = Webhooks(self._transport)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> TaskFlow:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
