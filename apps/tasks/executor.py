"""Runs one task inside a Celery worker process: claim, run the kind, record the outcome."""

import contextlib
import logging
import os
import signal
import threading
import time
import traceback as traceback_module
from typing import BinaryIO

import structlog
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from django.db import close_old_connections, connection, transaction
from django.db.utils import InterfaceError, OperationalError
from django.utils.functional import SimpleLazyObject, cached_property
from rest_framework import serializers

from apps.core.text import storable_json_problem, storable_text

from . import services
from .dispatch import HARD_LIMIT_GRACE
from .models import Task, TaskFile, TaskFileRole
from .registry import PermanentError, get_kind

logger = logging.getLogger(__name__)
run_log = structlog.get_logger(__name__)

PROGRESS_MIN_INTERVAL = 0.5  # seconds between two progress writes of one run
CANCEL_CHECK_INTERVAL = 0.5  # seconds between two cancel-flag reads of one run


class TaskCancelled(Exception):
    """Raised by TaskContext.check_cancelled(); ends the run as cancelled."""


class TaskContext:
    """What a kind function sees of its task."""

    def __init__(self, task: Task):
        self._task = task
        self._last_progress_write = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False
        self.outputs: list = []  # files this run saved: removed again unless it succeeds

    @property
    def task_id(self):
        return self._task.id

    @property
    def attempt(self) -> int:
        return self._task.attempts

    @cached_property
    def owner(self):
        return self._task.owner

    def progress(self, percent: float, message: str = "") -> None:
        """Report progress (0-100). Writes at most every half second, and always at 100."""
        now = time.monotonic()
        if percent < 100 and now - self._last_progress_write < PROGRESS_MIN_INTERVAL:
            return
        self._last_progress_write = now
        services.task_report_progress(task=self._task, progress=int(percent), message=message)

    def cancelled(self) -> bool:
        """True once someone asked this task to stop; the kind should wrap up and return."""
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= CANCEL_CHECK_INTERVAL:
            self._last_cancel_check = now
            self._cancelled = Task.objects.filter(pk=self._task.pk, cancel_requested=True).exists()
        return self._cancelled

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise TaskCancelled()

    def open_input(self, stored_file) -> BinaryIO:
        """A readable binary stream of an input file (streamed from the store); close it."""
        from apps.files.services import stored_file_open

        return stored_file_open(stored_file=stored_file)

    def save_output(self, name: str, content, content_type: str = "application/octet-stream"):
        """Store bytes or a stream as a file of the task's owner, linked to the task as an output."""
        from apps.files.services import stored_file_create

        stored_file = stored_file_create(owner=self.owner, name=name, content=content, content_type=content_type)
        self.outputs.append(stored_file)
        TaskFile.objects.create(task_id=self.task_id, file=stored_file, role=TaskFileRole.OUTPUT)
        return stored_file

    def discard_outputs(self) -> None:
        """Delete the files this run saved (rows and objects): the run did not succeed."""
        _discard_outputs(self.outputs)
        self.outputs = []


@contextlib.contextmanager
def soft_time_limit(seconds: int):
    """SoftTimeLimitExceeded in the run after `seconds`, as Celery's own soft limit raises it.

    A wake-up may claim another task than the one it names (fairness.py), so it cannot carry
    the run's limits: the run arms its own, on SIGALRM. Signals reach a process's main thread
    only: a thread pool's runs get the hard limit alone (as Celery's limits do there). A timer
    armed before (pytest-timeout's) gets its remaining time back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise SoftTimeLimitExceeded(f"soft time limit ({seconds}s) exceeded")

    previous_handler = signal.signal(signal.SIGALRM, expire)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            left = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


class LeaseKeeper:
    """One thread per worker process that renews the leases of the runs in progress.

    A run whose lease can no longer be renewed was fenced out (hard-revoked, or reaped
    after a stall): the keeper then ends the whole process, which Celery replaces, so the
    kind stops at once and nothing it does later can land. In a pool child it also ends the
    process of a run past its hard time limit (timeout + HARD_LIMIT_GRACE) that did not stop
    at the soft one, as Celery's pool would: the lease then expires and the reaper retries or
    fails the task.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._runs: dict = {}
        self._deadlines: dict = {}
        self._thread = None
        self._pid = None
        self.hard_limits = False  # set in a prefork pool child (worker_process_init)

    def add(self, task: Task) -> None:
        with self._lock:
            self._runs[task.pk] = task
            self._deadlines[task.pk] = time.monotonic() + task.timeout + HARD_LIMIT_GRACE
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="taskflow-lease", daemon=True)
                self._thread.start()

    def remove(self, task: Task) -> None:
        with self._lock:
            self._runs.pop(task.pk, None)
            self._deadlines.pop(task.pk, None)

    def _loop(self):
        from django.conf import settings

        interval = max(settings.TASK_LEASE_SECONDS / 3, 0.2)
        while True:
            time.sleep(interval)
            with self._lock:
                for task in list(self._runs.values()):
                    if self.hard_limits and time.monotonic() > self._deadlines[task.pk]:
                        logger.error("task %s ran past its hard time limit; ending the worker process", task.pk)
                        os.kill(os.getpid(), signal.SIGKILL)
                    try:
                        still_ours = services.task_renew_lease(task=task)
                    except Exception:
                        logger.exception("lease renewal failed for task %s", task.pk)
                        connection.close()
                        continue
                    if not still_ours:
                        logger.warning("task %s was taken from this run; ending the worker process", task.pk)
                        os.kill(os.getpid(), signal.SIGKILL)


lease_keeper = LeaseKeeper()


@worker_process_init.connect(weak=False)
def _in_a_pool_child(**_kwargs) -> None:
    lease_keeper.hard_limits = True


def _claim(task_id, worker: str, queue: str | None) -> Task | None:
    if not connection.in_atomic_block:  # (never inside a transaction: it would drop it)
        close_old_connections()
        # close_old_connections() also schedules Django's health check (CONN_HEALTH_CHECKS):
        # a SELECT 1 before the next query, one more round trip for every task. The claim
        # below reconnects once by itself when the kept connection turns out dead, so the
        # check would only repeat that; mark it done.
        connection.health_check_done = True
    try:
        return services.task_claim(task_id=task_id, worker=worker, queue=queue)
    except (OperationalError, InterfaceError):
        # The connection kept across tasks may have been cut (database restart,
        # pg_terminate_backend); one reconnect is enough to tell.
        connection.close()
        return services.task_claim(task_id=task_id, worker=worker, queue=queue)


def execute(task_id, *, worker: str, queue: str | None = None) -> str | None:
    """Run one task for a wake-up that names `task_id`: the one this worker claims, the fairest
    of its queue (fairness.py). Returns the final status of this run.

    Logs one line per run, its outcome: `task_run_finished` with the status the run left the
    task in (None if it had been taken from this run), the run's duration and, for a failure
    or a retry, the first line of the error."""
    task = _claim(task_id, worker, queue)
    if task is None:
        logger.info("no task to claim for the wake-up of %s; dropping the message", task_id)
        return None
    # On every log line of the run. The wake-up's header bound its own task's context; when
    # the claim took another task (the fairest of the queue), the lines name the one that runs,
    # its owner, and the wake-up it ran for; the submitting request was the other task's.
    if str(task.pk) != str(task_id):
        structlog.contextvars.unbind_contextvars("request_id", "parent_task_id")
        structlog.contextvars.bind_contextvars(task_id=str(task.pk), user_id=task.owner_id, wake_up_of=str(task_id))
    structlog.contextvars.bind_contextvars(task_kind=task.kind, attempt=task.attempts)
    started = time.monotonic()
    status, error = _run(task)
    outcome = {"status": status, "duration_ms": round((time.monotonic() - started) * 1000)}
    if error:
        outcome["error"] = storable_text(error.split("\n", 1)[0][:300])
    (run_log.info if status in ("succeeded", "cancelled") else run_log.warning)("task_run_finished", **outcome)
    return status


def _run(task: Task) -> tuple[str | None, str]:
    """The kind's run and its recording: (the status it left, the error if it failed).

    Files the kind saved stay only if the run is recorded as succeeded: a failed, retried or
    cancelled run, or one whose task was taken from it, leaves no outputs behind (the next
    attempt writes its own)."""
    kind = get_kind(task.kind)
    if kind is None:
        error = f"UnknownKind: {task.kind!r} is not registered"
        return services.task_fail(task=task, error=error, permanent=True), error

    context = TaskContext(task)
    status, error = _run_kind(task, kind, context)
    if context.outputs and status != "succeeded":  # the task was taken from this run
        context.discard_outputs()
    return status, error


def _fail(task: Task, context: TaskContext, **failure) -> str | None:
    """Record a failed attempt. Its outputs go first: whoever sees the task failed or retrying
    (a client, the next attempt) never sees the files of this run."""
    context.discard_outputs()
    return services.task_fail(task=task, **failure)


def _run_kind(task: Task, kind, context: TaskContext) -> tuple[str | None, str]:
    lease_keeper.add(task)
    try:
        try:
            # The owner is read only if the payload needs it (file fields check ownership).
            with soft_time_limit(task.timeout):
                payload = kind.load_payload(task.payload, owner=SimpleLazyObject(lambda: task.owner))
                result = kind.func(context, payload)
        finally:
            lease_keeper.remove(task)
    except TaskCancelled:
        context.discard_outputs()
        return ("cancelled" if services.task_mark_cancelled(task=task) else None), ""
    except serializers.ValidationError as exc:
        error = f"InvalidPayload: {exc.detail}"
        return _fail(task, context, error=error, permanent=True), error
    except SoftTimeLimitExceeded:
        error = f"TimeLimitExceeded: the run took longer than its timeout of {task.timeout}s"
        return _fail(task, context, error=error, traceback=traceback_module.format_exc()), error
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        status = _fail(
            task,
            context,
            error=error,
            traceback=traceback_module.format_exc(),
            permanent=isinstance(exc, PermanentError),
        )
        return status, error
    # A result PostgreSQL's jsonb refuses would fail the finish write on every attempt alike:
    # the run fails for good, with the place named. (One json.dumps and a scan when it is fine.)
    problem = storable_json_problem(result, root="result")
    if problem:
        error = f"ResultNotStorable: {problem}"
        return _fail(task, context, error=error, permanent=True), error
    return _record_success(task, result, context)


def _record_success(task: Task, result, context: TaskContext) -> tuple[str | None, str]:
    """The finish write; if it fails, the failure is recorded instead: never left `running`.

    A refused write (DataError, IntegrityError...) would be refused again, so the task fails
    for good; a lost connection is retried per the kind's policy, on a new connection."""
    try:
        if connection.in_atomic_block:  # (tests run the executor inside a transaction)
            with transaction.atomic():  # a savepoint, so the failure below can still be written
                done = services.task_succeed(task=task, result=result)
        else:
            done = services.task_succeed(task=task, result=result)
    except Exception as exc:
        logger.exception("task %s: recording its success failed; recording a failure instead", task.pk)
        transient = isinstance(exc, OperationalError | InterfaceError)
        if transient and not connection.in_atomic_block:
            connection.close()
        error = f"FinishNotRecorded: {type(exc).__name__}: {exc}"
        status = _fail(task, context, error=error, traceback=traceback_module.format_exc(), permanent=not transient)
        return status, error
    return ("succeeded" if done else None), ""


def _discard_outputs(outputs: list) -> None:
    from apps.files.services import stored_file_delete

    for stored_file in outputs:
        try:
            stored_file_delete(stored_file=stored_file)
        except Exception:
            logger.exception("output file %s of a run that did not succeed could not be deleted", stored_file.pk)
