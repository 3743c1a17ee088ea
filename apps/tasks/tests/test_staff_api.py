"""Staff in the API as in the admin: others' tasks and schedules change only with the permission,
and every staff write is in the audit trail."""

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from apps.core.models import AuditEntry
from apps.tasks.models import Schedule, Task, TaskEvent, TaskStatus
from apps.tasks.schedule_services import ScheduleSpec, schedule_create
from conftest import client_for

pytestmark = pytest.mark.django_db

TASKS = "/api/tasks/"
SCHEDULES = "/api/schedules/"


def make_task(owner, status) -> Task:
    task = Task.objects.create(owner=owner, kind="demo.noop", title="demo.noop", status=status)
    if status == TaskStatus.FAILED:
        task.finished_at = timezone.now()
        task.save()
    return task


@pytest.fixture
def failed_task(owner):
    return make_task(owner, TaskStatus.FAILED)


@pytest.fixture
def queued_task(owner):
    return make_task(owner, TaskStatus.QUEUED)


@pytest.fixture
def schedule(owner):
    spec = ScheduleSpec(name="nightly", kind="demo.noop", payload={}, interval_seconds=3600)
    return schedule_create(owner=owner, spec=spec)


@pytest.mark.parametrize(
    ("action", "task_fixture"),
    [("retry", "failed_task"), ("cancel", "queued_task")],
)
def test_a_viewer_cannot_retry_or_cancel_another_users_task_and_nothing_is_written(
    request, viewer, action, task_fixture
):
    task = request.getfixturevalue(task_fixture)
    before = model_to_dict(task)
    response = client_for(viewer).post(f"{TASKS}{task.pk}/{action}/", {"reason": "why not"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    task.refresh_from_db()
    assert model_to_dict(task) == before
    assert not TaskEvent.objects.filter(task=task).exists()
    assert not AuditEntry.objects.exists()


def test_a_viewer_can_still_read_another_users_task_and_its_events(viewer, failed_task):
    client = client_for(viewer)
    assert client.get(f"{TASKS}{failed_task.pk}/").status_code == 200
    assert client.get(f"{TASKS}{failed_task.pk}/events/").status_code == 200


@pytest.mark.parametrize(
    ("action", "task_fixture", "status"),
    [("retry", "failed_task", TaskStatus.QUEUED), ("cancel", "queued_task", TaskStatus.CANCELLED)],
)
def test_an_operator_retries_or_cancels_another_users_task_with_one_audit_entry(
    request, operator, owner, action, task_fixture, status
):
    task = request.getfixturevalue(task_fixture)
    response = client_for(operator).post(f"{TASKS}{task.pk}/{action}/", {"reason": "ticket 42"}, format="json")
    assert response.status_code == 200
    task.refresh_from_db()
    assert task.status == status
    event = TaskEvent.objects.get(task=task)
    assert event.actor == operator and "ticket 42" in event.message
    entry = AuditEntry.objects.get()
    assert (entry.user, entry.action, entry.reason) == (operator, f"task.{action}", "ticket 42")
    assert (entry.object_type, entry.object_ids, entry.object_count) == ("tasks.task", [str(task.pk)], 1)
    assert entry.details == {"via": "api", "owner": owner.pk}


def test_an_operators_hard_revoke_of_another_users_running_task_is_audited_as_in_the_admin(operator, owner):
    task = make_task(owner, TaskStatus.RUNNING)
    response = client_for(operator).post(f"{TASKS}{task.pk}/cancel/", {"hard": True}, format="json")
    assert response.status_code == 200
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED
    assert AuditEntry.objects.get().action == "task.hard_revoke"


def test_a_staff_write_the_service_refuses_leaves_no_audit_entry(operator, queued_task):
    response = client_for(operator).post(f"{TASKS}{queued_task.pk}/retry/", {"reason": "x"}, format="json")
    assert response.status_code == 409
    assert not AuditEntry.objects.exists()


def test_owners_retry_their_own_tasks_without_an_audit_entry(owner_api, owner, failed_task):
    response = owner_api.post(f"{TASKS}{failed_task.pk}/retry/", {"reason": "mine"}, format="json")
    assert response.status_code == 200
    assert TaskEvent.objects.get(task=failed_task).actor == owner
    assert not AuditEntry.objects.exists()


def test_another_user_still_gets_a_404_not_a_403(other_api, failed_task):
    assert other_api.post(f"{TASKS}{failed_task.pk}/retry/", {}, format="json").status_code == 404


@pytest.mark.parametrize("role", ["viewer", "operator"])
@pytest.mark.parametrize(
    ("method", "body"),
    [("put", {"name": "mine now", "kind": "demo.noop", "interval_seconds": 60}), ("patch", {"enabled": False})],
)
def test_viewers_and_operators_cannot_edit_another_users_schedule(request, schedule, role, method, body):
    before = model_to_dict(schedule)
    response = getattr(client_for(request.getfixturevalue(role)), method)(
        f"{SCHEDULES}{schedule.pk}/", body, format="json"
    )
    assert response.status_code == 403
    schedule.refresh_from_db()
    assert model_to_dict(schedule) == before
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_viewers_and_operators_cannot_delete_another_users_schedule(request, schedule, role):
    response = client_for(request.getfixturevalue(role)).delete(f"{SCHEDULES}{schedule.pk}/")
    assert response.status_code == 403
    assert Schedule.objects.filter(pk=schedule.pk).exists()
    assert not AuditEntry.objects.exists()


def test_a_viewer_cannot_run_another_users_schedule(viewer, schedule):
    response = client_for(viewer).post(f"{SCHEDULES}{schedule.pk}/run/", {"reason": "now"}, format="json")
    assert response.status_code == 403
    assert not Task.objects.exists()
    assert not AuditEntry.objects.exists()


def test_an_operator_runs_another_users_schedule_and_it_is_audited_with_the_reason(operator, owner, schedule):
    response = client_for(operator).post(f"{SCHEDULES}{schedule.pk}/run/", {"reason": "customer asked"}, format="json")
    assert response.status_code == 201
    task = Task.objects.get()
    assert (task.owner, task.schedule) == (owner, schedule)
    entry = AuditEntry.objects.get()
    assert (entry.user, entry.action, entry.reason) == (operator, "schedule.run_now", "customer asked")
    assert (entry.object_type, entry.object_ids) == ("tasks.schedule", [str(schedule.pk)])


def test_a_superuser_edits_and_deletes_another_users_schedule_and_both_are_audited(superuser, owner, schedule):
    client = client_for(superuser)
    assert client.patch(f"{SCHEDULES}{schedule.pk}/", {"enabled": False}, format="json").status_code == 200
    schedule.refresh_from_db()
    assert schedule.enabled is False
    assert client.delete(f"{SCHEDULES}{schedule.pk}/").status_code == 204
    assert not Schedule.objects.filter(pk=schedule.pk).exists()
    entries = AuditEntry.objects.order_by("pk")
    assert [(e.user, e.action, e.reason, e.object_ids) for e in entries] == [
        (superuser, "schedule.change", "", [str(schedule.pk)]),
        (superuser, "schedule.delete", "", [str(schedule.pk)]),
    ]
    assert {e.details["owner"] for e in entries} == {owner.pk}


def test_owners_edit_and_run_their_own_schedules_without_an_audit_entry(owner_api, schedule):
    assert owner_api.patch(f"{SCHEDULES}{schedule.pk}/", {"enabled": False}, format="json").status_code == 200
    assert owner_api.post(f"{SCHEDULES}{schedule.pk}/run/").status_code == 201
    assert not AuditEntry.objects.exists()


def test_a_reason_longer_than_500_characters_is_a_400(operator, schedule):
    response = client_for(operator).post(f"{SCHEDULES}{schedule.pk}/run/", {"reason": "x" * 501}, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()["error"]["fields"]
    assert not Task.objects.exists()


def test_a_staff_members_write_on_their_own_task_is_audited_as_in_the_admin(viewer):
    """The admin audits every staff action, whoever owns the object; the API does the same."""
    task = make_task(viewer, TaskStatus.FAILED)
    response = client_for(viewer).post(f"{TASKS}{task.pk}/retry/", {"reason": "mine"}, format="json")
    assert response.status_code == 200
    entry = AuditEntry.objects.get()
    assert (entry.user, entry.action, entry.details) == (viewer, "task.retry", {"via": "api", "owner": viewer.pk})
