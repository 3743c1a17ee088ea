"""The declared state machine (apps/tasks/state_machine.py), through the public services: each
transition moves a task from each of its from-states, and from any other state leaves the row
as it was, without an event."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.core.exceptions import Conflict
from apps.tasks import services, state_machine
from apps.tasks.models import Task, TaskEvent, TaskStatus
from apps.tasks.services import TaskSpec
from apps.tasks.state_machine import (
    CANCEL,
    CLAIM,
    DISPATCH,
    FAIL,
    FAIL_TO_RETRY,
    HARD_CANCEL,
    REAP_TO_FAILED,
    REAP_TO_RETRY,
    REDISPATCH,
    RENEW_LEASE,
    REPORT_PROGRESS,
    REQUEST_CANCEL,
    RETRY,
    STOP_CANCELLED,
    SUCCEED,
    WAKE,
)
from apps.tasks.transitions import cleared_value

pytestmark = pytest.mark.django_db


def _reap(task, actor):
    services.reap_stale_tasks()


# Each public service, the transitions it may take, the row it is given (beyond its state),
# and the fields another sweep of the same call may stamp again (not checked).
SCENARIOS = {
    "dispatch_due_tasks": (
        lambda task, actor: services.dispatch_due_tasks(now=timezone.now(), only=[task.pk]),
        (DISPATCH, WAKE),
        {"queued_at": None, "run_at": "now"},
        (),
    ),
    "reap_stale_tasks, a lost wake-up": (_reap, (REDISPATCH,), {"queued_at": "long ago"}, ()),
    "reap_stale_tasks, a lost run with attempts left": (
        _reap,
        (REAP_TO_RETRY,),
        {"lease_expires_at": "long ago"},
        ("queued_at", "updated_at"),
    ),
    "reap_stale_tasks, a lost run without": (
        _reap,
        (REAP_TO_FAILED,),
        {"lease_expires_at": "long ago", "attempts": 4},
        (),
    ),
    "task_claim": (lambda task, actor: services.task_claim(task_id=task.pk, worker="w2"), (CLAIM,), {}, ()),
    "task_report_progress": (
        lambda task, actor: services.task_report_progress(task=task, progress=40, message="Reading"),
        (REPORT_PROGRESS,),
        {},
        (),
    ),
    "task_renew_lease": (lambda task, actor: services.task_renew_lease(task=task), (RENEW_LEASE,), {}, ()),
    "task_succeed": (lambda task, actor: services.task_succeed(task=task, result={"ok": 1}), (SUCCEED,), {}, ()),
    "task_fail": (
        lambda task, actor: services.task_fail(task=task, error="Boom\nsecond line"),
        (FAIL_TO_RETRY,),
        {},
        ("queued_at", "updated_at"),
    ),
    "task_fail, permanent": (
        lambda task, actor: services.task_fail(task=task, error="Boom", permanent=True),
        (FAIL,),
        {},
        (),
    ),
    "task_mark_cancelled": (lambda task, actor: services.task_mark_cancelled(task=task), (STOP_CANCELLED,), {}, ()),
    "task_retry": (lambda task, actor: services.task_retry(task=task, actor=actor), (RETRY,), {}, ()),
    "task_cancel": (lambda task, actor: services.task_cancel(task=task, actor=actor), (CANCEL, REQUEST_CANCEL), {}, ()),
    "task_cancel, hard": (
        lambda task, actor: services.task_cancel(task=task, actor=actor, hard=True),
        (CANCEL, HARD_CANCEL),
        {},
        (),
    ),
}


def make_task(owner, status: str, **fields) -> Task:
    now = timezone.now()
    moments = {"now": now, "long ago": now - timedelta(hours=1)}
    row = {
        "attempts": 1,
        "run_id": uuid.uuid4(),
        "worker": "w1",
        "queued_at": now,
        "started_at": now,
        "lease_expires_at": now + timedelta(minutes=5),
        **{name: moments.get(value, value) for name, value in fields.items()},
    }
    # A queue of its own: the broker's depth of it is this task's alone.
    return Task.objects.create(
        owner=owner, kind="demo.fail", queue=f"sm-{uuid.uuid4().hex[:8]}", max_retries=3, status=status, **row
    )


def row_of(task: Task) -> dict:
    return Task.objects.filter(pk=task.pk).values().get()


@pytest.mark.parametrize("status", TaskStatus.values)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_transition_moves_a_task_from_its_from_states_and_from_no_other(scenario, status, owner, operator):
    call, transitions, fields, restamped = SCENARIOS[scenario]
    task = make_task(owner, status, **fields)
    before = row_of(task)
    transition = next((t for t in transitions if status in t.from_states), None)
    try:
        call(task, operator)
    except Conflict:
        assert transition is None
    after = row_of(task)
    events = list(TaskEvent.objects.filter(task=task).values_list("from_status", "to_status"))
    if transition is None:
        assert after == before
        assert events == []
        return
    assert after["status"] == (transition.to_state or status)
    assert events == ([(status, transition.to_state or status)] if transition.message else [])
    for name in transition.clears:
        if name not in restamped:
            assert after[Task._meta.get_field(name).attname] == cleared_value(name), name
    for name, value in transition.fixed.items():
        assert after[name] == value, name
    for name in transition.stamps:
        if name not in restamped:
            assert after[name] > before[name] if before[name] else after[name] is not None, name
    for name in transition.increments:
        assert after[name] == before[name] + 1, name


@pytest.mark.parametrize("scenario", [name for name, (_, ts, _, _) in SCENARIOS.items() if ts[0].fenced])
def test_a_run_that_no_longer_owns_the_task_moves_nothing(scenario, owner, operator):
    call, _, fields, _ = SCENARIOS[scenario]
    task = make_task(owner, TaskStatus.RUNNING, **fields)
    before = row_of(task)
    task.run_id = uuid.uuid4()  # the run of an earlier claim
    call(task, operator)
    assert row_of(task) == before
    assert not TaskEvent.objects.filter(task=task).exists()


def test_every_declared_transition_is_exercised_above():
    exercised = {transition for _, transitions, _, _ in SCENARIOS.values() for transition in transitions}
    creating = {state_machine.SUBMIT, state_machine.SUBMIT_FOR_LATER}
    assert set(state_machine.TRANSITIONS) - creating == exercised


@pytest.mark.parametrize(("run_in", "status"), [(None, TaskStatus.QUEUED), (3600, TaskStatus.PENDING)])
def test_a_submission_creates_the_task_in_its_first_state_with_its_event(owner, run_in, status):
    run_at = timezone.now() + timedelta(seconds=run_in) if run_in else None
    task, _ = services.task_submit(owner=owner, spec=TaskSpec(kind="demo.noop", payload={}, run_at=run_at))
    assert Task.objects.get(pk=task.pk).status == status
    event = TaskEvent.objects.get(task=task)
    assert (event.from_status, event.to_status, event.actor, event.message) == ("", status, owner, "Submitted")
