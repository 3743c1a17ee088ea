"""The task state machine, declared: every transition, the states it leaves from, the state it
reaches and what it writes. `transitions.apply` is the one place that carries them out.

Fields a transition writes: `sets` take the caller's values, `stamps` the transition's time,
`clears` their empty value (NULL when nullable, else the field's default), `increments` go up
by one, `fixed` take the value given here. `to_state=None` keeps the task in its state.
A transition with a `message` writes a TaskEvent (formatted with the call's details and
`attempt`); `fenced` ones need the caller's run to still own the task (its run_id); a
`guard` is a further condition on the row at the transition's time.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from django.conf import settings
from django.db.models import Q

from .models import CLAIMABLE_STATUSES, FINAL_STATUSES, RETRYABLE_STATUSES, WAITING_STATUSES, TaskStatus


@dataclass(frozen=True, eq=False)
class Transition:
    name: str
    from_states: tuple[str, ...]  # empty: the transition creates the task
    to_state: str | None
    sets: tuple[str, ...] = ()
    stamps: tuple[str, ...] = ()
    clears: tuple[str, ...] = ()
    increments: tuple[str, ...] = ()
    fixed: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    message: str | None = None
    message_limit: int | None = None
    guard: Callable[[datetime], Q] | None = None
    fenced: bool = False
    # The event names the run's worker (else it names none).
    names_worker: bool = False
    # Named statement (sql/queries.sql) that moves one task in one round trip on PostgreSQL.
    statement: str | None = None

    @property
    def is_final(self) -> bool:
        return self.to_state in FINAL_STATUSES

    @property
    def written_fields(self) -> tuple[str, ...]:
        status = ("status",) if self.to_state else ()
        return (*status, *self.sets, *self.stamps, *self.clears, *self.increments, *self.fixed)

    def __repr__(self) -> str:
        return f"<Transition {self.name}>"


# A wake-up may arrive a little early; later than that, the dispatcher publishes it again
# when it is due.
CLAIM_GRACE = timedelta(seconds=1)


def _due(now: datetime) -> Q:
    return Q(run_at__isnull=True) | Q(run_at__lte=now + CLAIM_GRACE)


def _due_within_lookahead(now: datetime) -> Q:
    return Q(queued_at__isnull=True, run_at__lte=now + timedelta(seconds=settings.TASK_DISPATCH_LOOKAHEAD))


def _lease_expired(now: datetime) -> Q:
    return Q(lease_expires_at__lt=now)


def _stale_wake_up(now: datetime) -> Q:
    cutoff = now - timedelta(seconds=settings.TASK_REDISPATCH_AFTER)
    return (Q(run_at__isnull=True) | Q(run_at__lt=cutoff)) & Q(queued_at__lt=cutoff)


def _cancel_not_requested(now: datetime) -> Q:
    return Q(cancel_requested=False)


RUNNING = (TaskStatus.RUNNING,)
_FAILURE_MESSAGE = "Attempt {attempt} failed: {error_line}"

# --- Created ----------------------------------------------------------------------------------
SUBMIT = Transition("submit", (), TaskStatus.QUEUED, stamps=("queued_at",), message="Submitted{how}")
SUBMIT_FOR_LATER = Transition("submit_for_later", (), TaskStatus.PENDING, message="Submitted{how}")

# --- Dispatcher and reaper --------------------------------------------------------------------
DISPATCH = Transition(
    "dispatch",
    (TaskStatus.PENDING,),
    TaskStatus.QUEUED,
    stamps=("queued_at", "updated_at"),
    message="Due: queued",
    guard=_due_within_lookahead,
)
# A retry's backoff is over: its wake-up is published; it stays claimable as retrying.
WAKE = Transition("wake", (TaskStatus.RETRYING,), None, stamps=("queued_at", "updated_at"), guard=_due_within_lookahead)
# Published again: a wake-up that no worker claimed in time was lost.
REDISPATCH = Transition(
    "redispatch", CLAIMABLE_STATUSES, None, stamps=("queued_at", "updated_at"), guard=_stale_wake_up
)
REAP_TO_RETRY = Transition(
    "reap_to_retry",
    RUNNING,
    TaskStatus.RETRYING,
    sets=("error", "run_at"),
    stamps=("updated_at",),
    clears=("traceback", "queued_at", "run_id", "lease_expires_at"),
    message="{error}",
    guard=_lease_expired,
)
REAP_TO_FAILED = Transition(
    "reap_to_failed",
    RUNNING,
    TaskStatus.FAILED,
    sets=("error",),
    stamps=("finished_at", "updated_at"),
    clears=("traceback", "lease_expires_at"),
    message="{error}",
    guard=_lease_expired,
)

# --- Worker -----------------------------------------------------------------------------------
CLAIM = Transition(
    "claim",
    CLAIMABLE_STATUSES,
    TaskStatus.RUNNING,
    sets=("run_id", "worker", "lease_expires_at"),
    stamps=("started_at", "updated_at"),
    clears=("progress", "progress_message"),
    increments=("attempts",),
    message="Attempt {attempt}",
    guard=_due,
    names_worker=True,
    statement="claim_task",
)
REPORT_PROGRESS = Transition(
    "report_progress",
    RUNNING,
    None,
    sets=("progress", "progress_message", "lease_expires_at"),
    stamps=("updated_at",),
    fenced=True,
)
RENEW_LEASE = Transition("renew_lease", RUNNING, None, sets=("lease_expires_at",), fenced=True)
SUCCEED = Transition(
    "succeed",
    RUNNING,
    TaskStatus.SUCCEEDED,
    sets=("result",),
    stamps=("finished_at", "updated_at"),
    clears=("error", "traceback", "lease_expires_at"),
    fixed=MappingProxyType({"progress": 100}),
    message="Succeeded",
    fenced=True,
    names_worker=True,
    statement="finish_run",
)
FAIL_TO_RETRY = Transition(
    "fail_to_retry",
    RUNNING,
    TaskStatus.RETRYING,
    sets=("error", "traceback", "run_at"),
    stamps=("updated_at",),
    clears=("queued_at", "run_id", "lease_expires_at"),
    message=_FAILURE_MESSAGE,
    message_limit=500,
    fenced=True,
    names_worker=True,
    statement="finish_run",
)
FAIL = Transition(
    "fail",
    RUNNING,
    TaskStatus.FAILED,
    sets=("error", "traceback"),
    stamps=("finished_at", "updated_at"),
    clears=("lease_expires_at",),
    message=_FAILURE_MESSAGE,
    message_limit=500,
    fenced=True,
    names_worker=True,
    statement="finish_run",
)
STOP_CANCELLED = Transition(
    "stop_cancelled",
    RUNNING,
    TaskStatus.CANCELLED,
    stamps=("finished_at", "updated_at"),
    clears=("lease_expires_at",),
    message="Stopped after a cancel request",
    fenced=True,
    names_worker=True,
    statement="finish_run",
)

# --- Staff and owners -------------------------------------------------------------------------
RETRY = Transition(
    "retry",
    RETRYABLE_STATUSES,
    TaskStatus.QUEUED,
    stamps=("queued_at", "updated_at"),
    clears=(
        "attempts",
        "progress",
        "progress_message",
        "result",
        "error",
        "traceback",
        "cancel_requested",
        "run_id",
        "run_at",
        "started_at",
        "finished_at",
        "lease_expires_at",
    ),
    message="Retried by hand{reason}",
)
# run_id cleared: fences out a run that is still going (hard revoke).
CANCEL = Transition(
    "cancel",
    WAITING_STATUSES,
    TaskStatus.CANCELLED,
    stamps=("finished_at", "updated_at"),
    clears=("lease_expires_at", "run_id"),
    message="Cancelled{reason}",
)
HARD_CANCEL = Transition(
    "hard_cancel",
    RUNNING,
    TaskStatus.CANCELLED,
    stamps=("finished_at", "updated_at"),
    clears=("lease_expires_at", "run_id"),
    message="Hard-revoked{reason}",
)
REQUEST_CANCEL = Transition(
    "request_cancel",
    RUNNING,
    None,
    stamps=("updated_at",),
    fixed=MappingProxyType({"cancel_requested": True}),
    message="Cancel requested{reason}",
    guard=_cancel_not_requested,
)

TRANSITIONS: tuple[Transition, ...] = (
    SUBMIT,
    SUBMIT_FOR_LATER,
    DISPATCH,
    WAKE,
    REDISPATCH,
    REAP_TO_RETRY,
    REAP_TO_FAILED,
    CLAIM,
    REPORT_PROGRESS,
    RENEW_LEASE,
    SUCCEED,
    FAIL_TO_RETRY,
    FAIL,
    STOP_CANCELLED,
    RETRY,
    CANCEL,
    HARD_CANCEL,
    REQUEST_CANCEL,
)
