"""Why a queued task is not running: fairness.waiting_reason, on the admin's task page and in
the API's task detail (with an ETag that changes when the reason does), on the real database."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.tasks import fairness, services
from apps.tasks.models import ConcurrencyLimit, LimitScope, Task, TaskStatus

pytestmark = pytest.mark.django_db


def limit(**fields) -> ConcurrencyLimit:
    return ConcurrencyLimit.objects.create(**fields)


def task(owner, kind="demo.sleep", status=TaskStatus.QUEUED, **fields) -> Task:
    times = {"queued_at": timezone.now()} if status == TaskStatus.QUEUED else {}
    if status == TaskStatus.RUNNING:
        times = {"started_at": timezone.now()}
    return Task.objects.create(owner=owner, kind=kind, status=status, **(times | fields))


# --- fairness.waiting_reason --------------------------------------------------------------------


def test_a_queued_task_of_a_kind_at_its_limit_waits_for_a_slot_of_that_kind(owner, other_user):
    limit(scope=LimitScope.KIND, kind="demo.sleep", limit=2)
    task(other_user, status=TaskStatus.RUNNING)
    waiting = task(owner)
    assert fairness.waiting_reason(waiting) == ""  # one of two slots taken
    task(other_user, status=TaskStatus.RUNNING)
    assert fairness.waiting_reason(waiting) == "waiting for a slot: kind demo.sleep limit 2 reached"


def test_an_owner_at_the_default_limit_waits_and_an_owners_own_limit_overrides_it(owner, other_user):
    limit(scope=LimitScope.EVERY_OWNER, limit=1)
    task(owner, kind="demo.noop", status=TaskStatus.RUNNING)
    mine = task(owner)
    assert fairness.waiting_reason(mine) == "waiting for a slot: owner limit 1 reached"
    limit(scope=LimitScope.OWNER, owner=owner, limit=50)
    assert fairness.waiting_reason(mine) == ""
    theirs = task(other_user)
    assert fairness.waiting_reason(theirs) == ""  # nothing of theirs runs


def test_both_limits_at_once_are_both_named_the_kinds_first(owner):
    limit(scope=LimitScope.KIND, kind="demo.sleep", limit=0)
    limit(scope=LimitScope.OWNER, owner=owner, limit=0)
    assert fairness.waiting_reason(task(owner)) == (
        "waiting for a slot: kind demo.sleep limit 0 reached, owner limit 0 reached"
    )


@pytest.mark.parametrize(
    ("status", "run_at"),
    [
        (TaskStatus.RUNNING, None),
        (TaskStatus.SUCCEEDED, None),
        (TaskStatus.PENDING, None),
        (TaskStatus.RETRYING, timedelta(minutes=5)),  # its next attempt is not due yet
    ],
)
def test_a_task_that_is_not_claimable_and_due_waits_for_no_slot(owner, status, run_at):
    limit(scope=LimitScope.KIND, kind="demo.sleep", limit=0)
    held = task(owner, status=status, run_at=timezone.now() + run_at if run_at else None)
    assert fairness.waiting_reason(held) == ""


def test_a_due_retry_at_a_limit_waits_for_a_slot(owner):
    limit(scope=LimitScope.KIND, kind="demo.sleep", limit=0)
    retry = task(owner, status=TaskStatus.RETRYING, run_at=timezone.now() - timedelta(seconds=1))
    assert fairness.waiting_reason(retry) == "waiting for a slot: kind demo.sleep limit 0 reached"


def test_the_reason_is_what_the_claim_does(owner):
    """A task the reason says is held is not claimed; once it says nothing, the claim takes it."""
    kind_limit = limit(scope=LimitScope.KIND, kind="demo.sleep", limit=1)
    task(owner, status=TaskStatus.RUNNING)
    waiting = task(owner)
    assert fairness.waiting_reason(waiting)
    assert services.task_claim(task_id=waiting.pk, worker="w1", queue=waiting.queue) is None
    kind_limit.limit = 2
    kind_limit.save()
    assert fairness.waiting_reason(waiting) == ""
    assert services.task_claim(task_id=waiting.pk, worker="w1", queue=waiting.queue).pk == waiting.pk


# --- The admin's task page -------------------------------------------------------------------


def test_a_held_tasks_page_says_which_limit_it_waits_for(viewer_client, owner):
    limit(scope=LimitScope.KIND, kind="demo.sleep", limit=0, note="disk maintenance")
    held = task(owner)
    page = viewer_client.get(reverse("admin:tasks_task_change", args=[held.pk])).content.decode()
    assert "waiting for a slot: kind demo.sleep limit 0 reached" in page


def test_a_queued_task_no_limit_holds_says_so_and_a_running_one_shows_no_wait(viewer_client, owner):
    free = task(owner)
    page = viewer_client.get(reverse("admin:tasks_task_change", args=[free.pk])).content.decode()
    assert "No concurrency limit holds it" in page
    running = task(owner, status=TaskStatus.RUNNING)
    page = viewer_client.get(reverse("admin:tasks_task_change", args=[running.pk])).content.decode()
    assert "field-waiting_for" not in page


# --- The API's task detail -------------------------------------------------------------------


def test_the_api_detail_has_waiting_for_and_the_list_does_not(owner, owner_api):
    limit(scope=LimitScope.OWNER, owner=owner, limit=1)
    task(owner, kind="demo.noop", status=TaskStatus.RUNNING)
    held = task(owner)
    detail = owner_api.get(f"/api/tasks/{held.pk}/").json()
    assert detail["waiting_for"] == "waiting for a slot: owner limit 1 reached"
    rows = owner_api.get("/api/tasks/").json()["results"]
    assert rows and all("waiting_for" not in row for row in rows)


def test_a_task_no_limit_holds_has_an_empty_waiting_for(owner, owner_api):
    free = task(owner)
    assert owner_api.get(f"/api/tasks/{free.pk}/").json()["waiting_for"] == ""


def test_the_etag_changes_when_the_reason_does_so_a_poll_sees_the_slot_free_up(owner, other_user, owner_api):
    limit(scope=LimitScope.KIND, kind="demo.sleep", limit=1)
    other = task(other_user, status=TaskStatus.RUNNING)
    held = task(owner)
    first = owner_api.get(f"/api/tasks/{held.pk}/")
    assert first.json()["waiting_for"].startswith("waiting for a slot")
    assert owner_api.get(f"/api/tasks/{held.pk}/", HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304
    Task.objects.filter(pk=other.pk).update(status=TaskStatus.SUCCEEDED)  # the slot frees; the held task is untouched
    again = owner_api.get(f"/api/tasks/{held.pk}/", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 200 and again.json()["waiting_for"] == ""


def test_a_held_tasks_304_is_still_one_query(owner, owner_api, django_assert_num_queries):
    limit(scope=LimitScope.KIND, kind="demo.sleep", limit=0)
    held = task(owner)
    etag = owner_api.get(f"/api/tasks/{held.pk}/")["ETag"]
    with django_assert_num_queries(1):  # the tag's columns, the limits and the running counts together
        assert owner_api.get(f"/api/tasks/{held.pk}/", HTTP_IF_NONE_MATCH=etag).status_code == 304
